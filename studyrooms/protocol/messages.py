"""Response data (ack ``data``) and server -> client notifications of protocol.md.

These are built by the server, so they validate by field name (snake_case) and serialise to the
wire in camelCase with :meth:`wire`. Worker-produced mediasoup objects (transport parameters,
rtpCapabilities, consumer rtpParameters) pass through as plain dicts.
"""

from __future__ import annotations

from typing import Any, Literal

from .common import OutModel

# --- ack data ---------------------------------------------------------------------------------


class ParticipantInfo(OutModel):
    participant_id: str
    display_name: str


class ProducerInfo(OutModel):
    producer_id: str
    participant_id: str
    kind: Literal["audio", "video"]
    source: Literal["mic", "camera", "screen"]


class IceServer(OutModel):
    """An RTCIceServer with TURN REST credentials (studyrooms/rooms/turn.py)."""

    urls: list[str]
    username: str
    credential: str


class JoinRoomResponse(OutModel):
    """With TURN configured the ack also has ``iceServers: [IceServer]`` (and ``iceTransportPolicy:
    "relay"`` when the operator forces relaying); see studyrooms/rooms/turn.py."""

    participant_id: str
    room_id: str
    participants: list[ParticipantInfo]
    producers: list[ProducerInfo]
    rtp_capabilities: dict[str, Any]
    recommend_audio_only: bool


class TransportCreatedResponse(OutModel):
    id: str
    ice_parameters: dict[str, Any]
    ice_candidates: list[dict[str, Any]]
    dtls_parameters: dict[str, Any]
    direction: Literal["send", "recv"]


class TransportConnectedResponse(OutModel):
    transport_id: str


class ProducedResponse(OutModel):
    producer_id: str


class ConsumedResponse(OutModel):
    id: str
    producer_id: str
    kind: Literal["audio", "video"]
    rtp_parameters: dict[str, Any]
    type: str
    producer_paused: bool


class RestartIceResponse(OutModel):
    ice_parameters: dict[str, Any]


class RoomStats(OutModel):
    room_id: str
    participant_count: int
    transport_count: int
    producer_count: int
    consumer_count: int
    workers: list[dict[str, Any]]


class ProducerBandwidth(OutModel):
    producer_id: str
    kind: Literal["audio", "video"]
    source: Literal["mic", "camera", "screen"]
    bitrate: int  # bps received from the client, last second (the producer's streams)
    over_budget: bool  # bitrate above the send transport's cap (+ tolerance)


class ConsumerAllocation(OutModel):
    """What the receiver's bandwidth allocator chose for one video consumer, and why."""

    consumer_id: str
    spatial_layer: int | None
    temporal_layer: int | None
    paused: bool  # paused for bandwidth (or by the client / producer: see reason)
    reason: str  # best-layer, bandwidth, paused-bandwidth, preferred-layers, max-height, upgrade-hold, ...
    priority: int
    group: str  # screen, on-stage, speaker, other
    bitrate: int  # bps of the chosen layer


class ParticipantBandwidth(OutModel):
    """One participant's traffic, from the media worker's transport stats."""

    participant_id: str
    display_name: str
    bytes_in: int  # received from the client (all its transports, RTP+RTCP, after SRTP)
    bytes_out: int  # sent to the client (all its transports, protected bytes)
    bitrate_in: int  # bps since the previous get-stats of the room (or since the transport opened)
    bitrate_out: int
    max_incoming_bitrate: int | None  # the per-send-transport cap (REMB), None when uncapped
    over_budget: bool  # a send transport or a producer above the cap (+ tolerance)
    producers: list[ProducerBandwidth]
    # downlink: the recv transport's estimate (transport-cc, else REMB), probing, per-video decisions
    available_outgoing_bitrate: int | None = None
    probing: bool = False
    video_allocation: list[ConsumerAllocation] = []


class RoomStatsReply(RoomStats):
    """``get-stats`` ack: room stats plus per-participant bandwidth."""

    participants: list[ParticipantBandwidth]


class EmptyResponse(OutModel):
    pass


# --- notifications ----------------------------------------------------------------------------


class ParticipantJoined(ParticipantInfo):
    pass


class ParticipantLeft(ParticipantInfo):
    pass


class NewProducer(ProducerInfo):
    pass


class ProducerClosed(OutModel):
    producer_id: str
    participant_id: str


class ConsumerClosed(OutModel):
    consumer_id: str
    producer_id: str


class ConsumerPaused(OutModel):
    consumer_id: str


class ConsumerResumed(OutModel):
    consumer_id: str


class RecommendAudioOnly(OutModel):
    participant_count: int
    threshold: int


class ActiveSpeaker(OutModel):
    participant_id: str | None
    volume: float | int | None = None


class ConsumerLayersChanged(OutModel):
    consumer_id: str
    spatial_layer: int | None
    temporal_layer: int | None


class ForwardingChanged(OutModel):
    """To one receiver: the participants whose video it is forwarded now (best first), and who is
    on its stage. The others' videos are paused at the server: show avatars."""

    video: list[str]
    on_stage: list[str]
class MediaReset(OutModel):
    """This participant's transports, producers and consumers on the server are gone (e.g. their
    media worker died); membership stays. ``producers``: what to consume on the new transports."""

    reason: str
    producers: list[ProducerInfo]


class RoomReset(OutModel):
    """The room's state was lost (e.g. its room host restarted): join again with ``join-room``."""

    reason: str


class ErrorEvent(OutModel):
    """The guide-style ``error`` event sent when a request fails."""

    event: str
    code: str
    message: str


NOTIFICATIONS: dict[str, type[OutModel]] = {
    "participant-joined": ParticipantJoined,
    "participant-left": ParticipantLeft,
    "new-producer": NewProducer,
    "producer-closed": ProducerClosed,
    "consumer-closed": ConsumerClosed,
    "consumer-paused": ConsumerPaused,
    "consumer-resumed": ConsumerResumed,
    "recommend-audio-only": RecommendAudioOnly,
    "active-speaker": ActiveSpeaker,
    "consumer-layers-changed": ConsumerLayersChanged,
    "forwarding-changed": ForwardingChanged,
    "media-reset": MediaReset,
    "room-reset": RoomReset,
}
