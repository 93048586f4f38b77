"""mediasoup parameter objects as they arrive from clients, checked structurally.

Known fields are typed and bounded; unknown fields are kept (bounded) because mediasoup formats grow.
Deep validation against the router capabilities (codec matching, payload type mapping) is the SFU's.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from .common import MAX_LIST, MAX_STR, BoundedDict, BoundedStr, OpenWireModel

MimeType = Annotated[str, StringConstraints(strict=True, min_length=3, max_length=64)]
PayloadType = Annotated[int, Field(strict=True, ge=0, le=127)]
ClockRate = Annotated[int, Field(strict=True, gt=0, le=1_000_000)]
Channels = Annotated[int, Field(strict=True, ge=1, le=16)]
Ssrc = Annotated[int, Field(strict=True, ge=0, le=0xFFFFFFFF)]
ExtensionId = Annotated[int, Field(strict=True, ge=1, le=255)]


class RtcpFeedback(OpenWireModel):
    type: BoundedStr
    parameter: BoundedStr | None = None


class RtpCodecParameters(OpenWireModel):
    mime_type: MimeType
    payload_type: PayloadType
    clock_rate: ClockRate
    channels: Channels | None = None
    parameters: BoundedDict | None = None
    rtcp_feedback: Annotated[list[RtcpFeedback], Field(max_length=MAX_LIST)] | None = None


class RtpHeaderExtensionParameters(OpenWireModel):
    uri: BoundedStr
    id: ExtensionId
    encrypt: bool | None = None
    parameters: BoundedDict | None = None


class RtxParameters(OpenWireModel):
    ssrc: Ssrc


class RtpEncodingParameters(OpenWireModel):
    ssrc: Ssrc | None = None
    rid: Annotated[str, StringConstraints(strict=True, max_length=32)] | None = None
    codec_payload_type: PayloadType | None = None
    rtx: RtxParameters | None = None
    dtx: bool | None = None
    scalability_mode: Annotated[str, StringConstraints(strict=True, max_length=16)] | None = None
    max_bitrate: Annotated[int, Field(strict=True, ge=0)] | None = None
    active: bool | None = None


class RtcpParameters(OpenWireModel):
    cname: BoundedStr | None = None
    reduced_size: bool | None = None
    mux: bool | None = None


class RtpParameters(OpenWireModel):
    """A producer's rtpParameters (client payload types and extension ids)."""

    mid: Annotated[str, StringConstraints(strict=True, max_length=32)] | None = None
    codecs: Annotated[list[RtpCodecParameters], Field(min_length=1, max_length=MAX_LIST)]
    header_extensions: Annotated[list[RtpHeaderExtensionParameters], Field(max_length=MAX_LIST)] | None = None
    encodings: Annotated[list[RtpEncodingParameters], Field(max_length=MAX_LIST)] | None = None
    rtcp: RtcpParameters | None = None


class RtpCodecCapability(OpenWireModel):
    kind: Literal["audio", "video"]
    mime_type: MimeType
    clock_rate: ClockRate
    preferred_payload_type: PayloadType | None = None
    channels: Channels | None = None
    parameters: BoundedDict | None = None
    rtcp_feedback: Annotated[list[RtcpFeedback], Field(max_length=MAX_LIST)] | None = None


class RtpHeaderExtensionCapability(OpenWireModel):
    kind: Literal["audio", "video"] | None = None
    uri: BoundedStr
    preferred_id: ExtensionId
    preferred_encrypt: bool | None = None
    direction: Literal["sendrecv", "sendonly", "recvonly", "inactive"] | None = None


class RtpCapabilities(OpenWireModel):
    """A device's (client's) rtpCapabilities, as sent with ``consume``."""

    codecs: Annotated[list[RtpCodecCapability], Field(max_length=MAX_LIST)] | None = None
    header_extensions: Annotated[list[RtpHeaderExtensionCapability], Field(max_length=MAX_LIST)] | None = None


class DtlsFingerprint(OpenWireModel):
    algorithm: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=32)]
    value: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_STR)]


class DtlsParameters(OpenWireModel):
    role: Literal["auto", "client", "server"] | None = None
    fingerprints: Annotated[list[DtlsFingerprint], Field(min_length=1, max_length=MAX_LIST)]
