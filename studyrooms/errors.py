"""One error tree with stable wire codes.

Every error raised on purpose by the library is a :class:`StudyRoomsError`. The edge (signaling)
maps it to ``{"code", "message"}``; across a Ray hop it travels as ``(code, message)`` and is rebuilt
with :func:`from_wire`, so a ``NotFoundError`` in a media worker is ``not-found`` on the wire.
Codes are part of the protocol: extend, never rename.
"""

from __future__ import annotations


class StudyRoomsError(Exception):
    code: str = "internal"

    def __init__(self, message: str = "", *, trace_id: str | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__
        self.trace_id = trace_id

    def to_wire(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.trace_id:
            out["traceId"] = self.trace_id
        return out

    def __reduce__(self):  # survive pickling (Ray) with kind and message intact
        return (from_wire, (self.code, self.message, self.trace_id))


class InvalidRequestError(StudyRoomsError):
    code = "invalid-request"


class UnauthorizedError(StudyRoomsError):
    code = "unauthorized"


class ForbiddenError(StudyRoomsError):
    code = "forbidden"


class NotFoundError(StudyRoomsError):
    code = "not-found"


class InvalidStateError(StudyRoomsError):
    code = "invalid-state"


class RoomFullError(StudyRoomsError):
    code = "room-full"


class RateLimitedError(StudyRoomsError):
    code = "rate-limited"


class UnsupportedError(StudyRoomsError):
    code = "unsupported"


class ResourceExhaustedError(StudyRoomsError):
    """No capacity left (rooms limit, no free UDP port, no worker)."""

    code = "resource-exhausted"


class InternalError(StudyRoomsError):
    code = "internal"


_BY_CODE: dict[str, type[StudyRoomsError]] = {
    cls.code: cls
    for cls in (
        InvalidRequestError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        InvalidStateError,
        RoomFullError,
        RateLimitedError,
        UnsupportedError,
        ResourceExhaustedError,
        InternalError,
    )
}

WIRE_CODES = frozenset(_BY_CODE)


def from_wire(code: str, message: str = "", trace_id: str | None = None) -> StudyRoomsError:
    """Rebuild an error from its wire code (unknown codes become InternalError)."""
    cls = _BY_CODE.get(code, InternalError)
    return cls(message, trace_id=trace_id)
