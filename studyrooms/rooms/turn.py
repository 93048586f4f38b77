"""TURN REST credentials for clients behind strict networks (coturn's ``use-auth-secret`` form).

Every ``join-room`` ack carries fresh credentials for that participant when TURN is configured
(``Settings.turn``): username ``<expiry unix time>:<participantId>``, credential
``base64(HMAC-SHA1(static-auth-secret, username))``. coturn recomputes the HMAC with the same secret
and refuses the username once its expiry has passed, so a credential is worth nothing after
``ttl_s`` and nothing without the secret, which never leaves the server. A rejoin is a new
participant and so gets new credentials. Credentials are never logged: only the caller's ack sees
them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from ..config import TurnSettings
from ..protocol import messages as m


def turn_username(participant_id: str, expires_at_s: int) -> str:
    return f"{expires_at_s}:{participant_id}"


def turn_credential(secret: str, username: str) -> str:
    """coturn's TURN REST credential: base64 of HMAC-SHA1(secret, username)."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def ice_servers(turn: TurnSettings, participant_id: str, now_s: float) -> list[dict]:
    """The ``iceServers`` of protocol.md (RTCIceServer shape) for one participant; ``[]`` when off."""
    if not turn.enabled or turn.secret is None:
        return []
    username = turn_username(participant_id, int(now_s) + turn.ttl_s)
    credential = turn_credential(turn.secret.get_secret_value(), username)
    return [m.IceServer(urls=list(turn.urls), username=username, credential=credential).wire()]


def join_extras(turn: TurnSettings, participant_id: str, now_s: float) -> dict:
    """The keys TURN adds to a ``join-room`` ack: ``iceServers`` (and ``iceTransportPolicy: "relay"``
    when the operator forces relaying); nothing at all when TURN is not configured."""
    servers = ice_servers(turn, participant_id, now_s)
    if not servers:
        return {}
    extras: dict = {"iceServers": servers}
    if turn.relay_only:
        extras["iceTransportPolicy"] = "relay"
    return extras
