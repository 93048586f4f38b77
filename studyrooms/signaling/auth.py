"""HS256 JWT tokens: who the user is and which room(s) they may join, with an expiry.

Claims: ``sub`` (user id), ``name`` (display name), ``rooms`` (list of room ids, ``["*"]`` for any),
``iat``, ``exp``. The ``name`` claim, when present, is the display name others see in the room (a
join-room's ``displayName`` cannot change it). Every failure (missing, malformed, bad signature,
expired, wrong claims) is an :class:`~studyrooms.errors.UnauthorizedError` whose message says what
is wrong in words (never the JWT library's text). In development mode (no configured secret, loopback
listening) the server uses :func:`dev_secret` and issues tokens itself; the check always runs.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

from ..errors import UnauthorizedError

ALGORITHM = "HS256"


@dataclass(frozen=True)
class Identity:
    user_id: str
    display_name: str
    rooms: tuple[str, ...]
    expires_at: int

    def may_join(self, room_id: str) -> bool:
        return "*" in self.rooms or room_id in self.rooms


def dev_secret() -> str:
    """A random per-process secret for development mode."""
    return secrets.token_urlsafe(32)


def issue_token(
    secret: str, user_id: str, display_name: str, rooms: list[str], ttl_s: int, *, now: float | None = None
) -> str:
    if not secret:
        raise ValueError("a secret is required")
    iat = int(time.time() if now is None else now)
    claims = {"sub": user_id, "name": display_name, "rooms": list(rooms), "iat": iat, "exp": iat + int(ttl_s)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: object) -> Identity:
    if not isinstance(token, str) or not token:
        raise UnauthorizedError("missing token")
    if len(token) > 4096:
        raise UnauthorizedError("token too large")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}, leeway=0
        )
    except jwt.ExpiredSignatureError:
        raise UnauthorizedError("token expired") from None
    except jwt.InvalidSignatureError:
        raise UnauthorizedError("bad token signature") from None
    except jwt.ImmatureSignatureError:
        raise UnauthorizedError("token not valid yet (is the server's clock right?)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise UnauthorizedError(f"invalid token: it has no {exc.claim!r} claim") from None
    except jwt.InvalidAlgorithmError:
        raise UnauthorizedError(f"invalid token: not signed with {ALGORITHM}") from None
    except jwt.DecodeError:
        raise UnauthorizedError("invalid token: not a well-formed signed token") from None
    except jwt.PyJWTError:  # never the library's own wording on the wire
        raise UnauthorizedError("invalid token") from None
    sub, name, rooms = claims.get("sub"), claims.get("name", ""), claims.get("rooms", [])
    if not isinstance(sub, str) or not sub or len(sub) > 128:
        raise UnauthorizedError("invalid token: bad sub")
    if not isinstance(name, str) or len(name) > 64:
        raise UnauthorizedError("invalid token: bad name")
    if not isinstance(rooms, list) or len(rooms) > 1000 or not all(isinstance(r, str) for r in rooms):
        raise UnauthorizedError("invalid token: bad rooms")
    return Identity(user_id=sub, display_name=name, rooms=tuple(rooms), expires_at=int(claims["exp"]))
