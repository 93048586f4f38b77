"""The event registry and :func:`parse_request`, the single entry point for client payloads."""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import ValidationError

from ..errors import InvalidRequestError
from . import messages as m
from . import requests as r
from .common import OutModel, WireModel
from .describe import describe


class EventSpec(NamedTuple):
    request: type[WireModel]
    reply_event: str | None  # the original guide's reply event, emitted besides the ack


#: event name -> (request model, guide reply event or None)
EVENTS: dict[str, EventSpec] = {
    "join-room": EventSpec(r.JoinRoomRequest, None),
    "get-rtp-capabilities": EventSpec(r.GetRtpCapabilitiesRequest, "rtp-capabilities"),
    "create-transport": EventSpec(r.CreateTransportRequest, "transport-created"),
    "connect-transport": EventSpec(r.ConnectTransportRequest, "transport-connected"),
    "produce": EventSpec(r.ProduceRequest, "produced"),
    "consume": EventSpec(r.ConsumeRequest, "consumed"),
    "resume-consumer": EventSpec(r.ResumeConsumerRequest, None),
    "pause-consumer": EventSpec(r.PauseConsumerRequest, None),
    "pause-producer": EventSpec(r.PauseProducerRequest, None),
    "resume-producer": EventSpec(r.ResumeProducerRequest, None),
    "close-producer": EventSpec(r.CloseProducerRequest, None),
    "set-preferred-layers": EventSpec(r.SetPreferredLayersRequest, None),
    "set-receive-constraints": EventSpec(r.SetReceiveConstraintsRequest, None),
    "set-consumer-priority": EventSpec(r.SetConsumerPriorityRequest, None),
    "restart-ice": EventSpec(r.RestartIceRequest, None),
    "get-stats": EventSpec(r.GetStatsRequest, None),
    "leave-room": EventSpec(r.LeaveRoomRequest, None),
}

#: event name -> model of the ack ``data`` (get-rtp-capabilities answers the router's
#: RtpCapabilities as a plain dict, so it has no model).
RESPONSES: dict[str, type[OutModel] | None] = {
    "join-room": m.JoinRoomResponse,
    "get-rtp-capabilities": None,
    "create-transport": m.TransportCreatedResponse,
    "connect-transport": m.TransportConnectedResponse,
    "produce": m.ProducedResponse,
    "consume": m.ConsumedResponse,
    "resume-consumer": m.EmptyResponse,
    "pause-consumer": m.EmptyResponse,
    "pause-producer": m.EmptyResponse,
    "resume-producer": m.EmptyResponse,
    "close-producer": m.EmptyResponse,
    "set-preferred-layers": m.EmptyResponse,
    "set-receive-constraints": m.EmptyResponse,
    "set-consumer-priority": m.EmptyResponse,
    "restart-ice": m.RestartIceResponse,
    "get-stats": m.RoomStatsReply,
    "leave-room": m.EmptyResponse,
}

#: Events that may be sent before joining a room; every other one needs a joined room.
NO_ROOM_EVENTS = frozenset({"join-room", "leave-room"})


def parse_request(event: str, payload: Any) -> WireModel:
    """Validate a client payload for ``event``; raise InvalidRequestError naming the field.

    ``None`` (an omitted payload) is accepted for events whose payload is ``{}``.
    """
    spec = EVENTS.get(event) if isinstance(event, str) else None
    if spec is None:
        raise InvalidRequestError(f"unknown event {str(event)[:64]!r}")
    model = spec.request
    if payload is None:
        if model.model_fields:
            raise InvalidRequestError(f"{event}: payload: an object is required")
        payload = {}
    if not isinstance(payload, dict):
        raise InvalidRequestError(f"{event}: payload: must be an object, not {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        raise InvalidRequestError(f"{event}: {describe(err)}") from None
    except (TypeError, ValueError, RecursionError) as exc:  # defensive: never leak another kind
        raise InvalidRequestError(f"{event}: payload: {exc}") from None
