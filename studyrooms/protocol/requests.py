"""One model per client request of protocol.md (payloads in camelCase, unknown keys rejected)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from .common import Id, RoomId, WireModel
from .parameters import DtlsParameters, RtpCapabilities, RtpParameters

DisplayName = Annotated[
    str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=64)
]
Direction = Literal["send", "recv"]
Kind = Literal["audio", "video"]
Source = Literal["mic", "camera", "screen"]
Layer = Annotated[int, Field(strict=True, ge=0, le=15)]
MAX_ON_STAGE = 8  # participants a receiver may put on stage at once


class EmptyRequest(WireModel):
    """``{}`` (an omitted payload is accepted too)."""


class JoinRoomRequest(WireModel):
    room_id: RoomId
    display_name: DisplayName

    @field_validator("display_name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise ValueError("control characters are not allowed")
        return value


class GetRtpCapabilitiesRequest(EmptyRequest):
    pass


class CreateTransportRequest(WireModel):
    direction: Direction


class ConnectTransportRequest(WireModel):
    transport_id: Id
    dtls_parameters: DtlsParameters


class ProduceAppData(WireModel):
    source: Source | None = None


class ProduceRequest(WireModel):
    transport_id: Id
    kind: Kind
    rtp_parameters: RtpParameters
    app_data: ProduceAppData | None = None

    def source(self) -> str:
        """The declared source, or the default for the kind (audio -> mic, video -> camera)."""
        if self.app_data is not None and self.app_data.source is not None:
            return self.app_data.source
        return "mic" if self.kind == "audio" else "camera"


class ConsumeRequest(WireModel):
    transport_id: Id
    producer_id: Id
    rtp_capabilities: RtpCapabilities


class ConsumerRequest(WireModel):
    consumer_id: Id


class ResumeConsumerRequest(ConsumerRequest):
    pass


class PauseConsumerRequest(ConsumerRequest):
    pass


class ProducerRequest(WireModel):
    producer_id: Id


class PauseProducerRequest(ProducerRequest):
    pass


class ResumeProducerRequest(ProducerRequest):
    pass


class CloseProducerRequest(ProducerRequest):
    pass


class SetPreferredLayersRequest(WireModel):
    consumer_id: Id
    spatial_layer: Layer
    temporal_layer: Layer | None = None


class SetReceiveConstraintsRequest(WireModel):
    """``{lastN?, onStage?, maxHeight?}``: what this receiver wants forwarded (JVB's
    ReceiverVideoConstraints, simplified). Omitted fields keep their previous value; ``null``
    resets a field to the server default."""

    last_n: Annotated[int, Field(strict=True, ge=0, le=1000)] | None = None
    on_stage: Annotated[list[Id], Field(max_length=MAX_ON_STAGE)] | None = None
    max_height: Annotated[int, Field(strict=True, ge=0, le=4320)] | None = None
class SetConsumerPriorityRequest(WireModel):
    """mediasoup's consumer.setPriority: a higher priority gets downlink bandwidth first."""

    consumer_id: Id
    priority: Annotated[int, Field(strict=True, ge=1, le=255)]


class RestartIceRequest(WireModel):
    transport_id: Id


class GetStatsRequest(EmptyRequest):
    pass


class LeaveRoomRequest(EmptyRequest):
    pass


class TokenRequest(JoinRoomRequest):
    """``POST /api/token`` body (development mode): ``{roomId, displayName}``."""
