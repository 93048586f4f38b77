"""Identifiers. Injected where tests need determinism (see IdFactory)."""

from __future__ import annotations

import itertools
import secrets
import string
import uuid

_ICE_CHARS = string.ascii_lowercase + string.digits


def new_id() -> str:
    """A fresh entity id (router, transport, producer, consumer, participant)."""
    return str(uuid.uuid4())


def random_ice_string(length: int) -> str:
    """ICE ufrag/password characters (RFC 8445 ice-char subset)."""
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(length))


def random_ssrc() -> int:
    """A random 32-bit SSRC, never 0."""
    while True:
        ssrc = secrets.randbits(32)
        if ssrc:
            return ssrc


class IdFactory:
    """Callable id source; tests pass ``IdFactory(prefix="t")`` for readable, deterministic ids."""

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        if self._prefix is None:
            return new_id()
        return f"{self._prefix}-{next(self._counter)}"
