"""Wire protocol: pydantic v2 models for every Socket.IO request, response and notification.

Error codes on the wire (``{"ok": false, "error": {"code", "message"}}``) are the stable codes of
:mod:`studyrooms.errors`; :data:`ERROR_CODES` documents when each is used. Codes are never renamed.
"""

from __future__ import annotations

from . import messages, parameters, requests
from .common import Id, WireModel, check_json
from .messages import NOTIFICATIONS, ErrorEvent
from .registry import EVENTS, NO_ROOM_EVENTS, RESPONSES, EventSpec, parse_request

#: Every wire error code and what it means (protocol.md plus the codes this server added).
ERROR_CODES: dict[str, str] = {
    "invalid-request": "the payload failed validation (the message names the field) or unknown event",
    "unauthorized": "bad, expired or missing token (also the connect_error data code)",
    "forbidden": "not yours (transport/producer/consumer of another participant) or not your room",
    "not-found": "no such transport/producer/consumer in your room (never reveals other rooms)",
    "invalid-state": "request before join-room, join twice, connect a transport twice, wrong direction",
    "room-full": "the room has reached its capacity (RoomSettings.capacity)",
    "rate-limited": "too many requests per second, or a per-participant limit (transports per "
    "direction, producers, consumers) is reached",
    "unsupported": "codec/parameters not supported by the router",
    # Added by this server (stable):
    "resource-exhausted": "no capacity left on the server: the room host already hosts "
    "RoomSettings.max_rooms rooms (a join that would open one more room), or no media worker",
    "internal": "unexpected server error; the message carries a trace id that is logged",
}

__all__ = [
    "ERROR_CODES",
    "EVENTS",
    "NOTIFICATIONS",
    "NO_ROOM_EVENTS",
    "RESPONSES",
    "ErrorEvent",
    "EventSpec",
    "Id",
    "WireModel",
    "check_json",
    "messages",
    "parameters",
    "parse_request",
    "requests",
]
