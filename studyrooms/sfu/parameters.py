"""Value types the per-packet layer consumes, computed ONCE per producer/consumer.

The negotiation dicts (:mod:`studyrooms.sfu.ortc`) are turned into small frozen dataclasses of
plain ints and strings here, so the media plane never looks at JSON. (mediasoup: Node validates,
the C++ worker builds its own tables.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studyrooms.errors import InvalidRequestError
from studyrooms.sfu.ortc import is_rtx_codec, parse_scalability_mode
from studyrooms.sfu.supported_capabilities import (
    ABS_SEND_TIME_URI,
    AUDIO_LEVEL_URI,
    MID_URI,
    RID_URI,
    RRID_URI,
    TOFFSET_URI,
    TRANSPORT_CC_URI,
    VIDEO_ORIENTATION_URI,
)

_EXTENSION_NAMES = {
    MID_URI: "mid",
    RID_URI: "rid",
    RRID_URI: "rrid",
    ABS_SEND_TIME_URI: "abs_send_time",
    TRANSPORT_CC_URI: "transport_cc",
    AUDIO_LEVEL_URI: "audio_level",
    VIDEO_ORIENTATION_URI: "video_orientation",
    TOFFSET_URI: "toffset",
}


def codec_name(mime_type: str) -> str:
    """``"video/VP8"`` -> ``"vp8"``, ``"audio/opus"`` -> ``"opus"`` (the lower-cased subtype)."""
    return mime_type.split("/", 1)[-1].lower()


@dataclass(frozen=True, slots=True)
class ProducerStreamParams:
    """One ingress RTP stream (one encoding) of a producer, in client and router terms."""

    ssrc: int | None  # None when learnt from the RID/MID extension on the first packet
    rid: str | None
    rtx_ssrc: int | None
    payload_type_map: dict[int, int]  # client PT -> router PT (media and RTX)
    rtx_payload_type: int | None  # client RTX PT of the media codec, None without RTX
    codec: str  # 'opus' | 'vp8' | 'vp9' | 'h264'
    clock_rate: int
    kind: str  # 'audio' | 'video'
    payload_type: int = 0  # client media PT
    mapped_payload_type: int = 0  # router media PT
    mapped_rtx_payload_type: int | None = None  # router RTX PT
    mapped_ssrc: int = 0  # SSRC of this stream inside the router (consumable encodings)
    spatial_layer: int = 0  # index of the encoding, lowest first
    temporal_layers: int = 1  # from the encoding's scalabilityMode ("L1T3" -> 3)
    scalability_mode: str | None = None
    header_extension_ids: dict[str, int] = field(default_factory=dict)  # name -> client id


@dataclass(frozen=True, slots=True)
class ConsumerStreamParams:
    """The one egress RTP stream of a (non-pipe) consumer."""

    ssrc: int
    payload_type: int
    rtx_ssrc: int | None
    rtx_payload_type: int | None
    clock_rate: int
    codec: str
    mid: str | None
    kind: str = "video"
    spatial_layers: int = 1
    temporal_layers: int = 1
    nack: bool = False
    pli: bool = False
    fir: bool = False
    remb: bool = False
    header_extension_ids: dict[str, int] = field(default_factory=dict)  # name -> router id


def _extension_ids(rtp_parameters: dict) -> dict[str, int]:
    return {
        _EXTENSION_NAMES[ext["uri"]]: ext["id"]
        for ext in rtp_parameters.get("headerExtensions") or []
        if ext.get("uri") in _EXTENSION_NAMES
    }


def _media_codec(rtp_parameters: dict) -> dict:
    codec = next((c for c in rtp_parameters.get("codecs") or [] if not is_rtx_codec(c)), None)
    if codec is None:
        raise InvalidRequestError("rtpParameters has no media codec")
    return codec


def producer_stream_params(rtp_parameters: dict, mapping: dict) -> list[ProducerStreamParams]:
    """One :class:`ProducerStreamParams` per encoding, in the producer's order (lowest first).

    ``rtp_parameters`` are the producer's validated parameters and ``mapping`` the result of
    :func:`studyrooms.sfu.ortc.get_producer_rtp_parameters_mapping` for them.
    """
    media = _media_codec(rtp_parameters)
    pt_map = {c["payloadType"]: c["mappedPayloadType"] for c in mapping["codecs"]}
    rtx = next(
        (
            c
            for c in rtp_parameters["codecs"]
            if is_rtx_codec(c) and (c.get("parameters") or {}).get("apt") == media["payloadType"]
        ),
        None,
    )
    kind = media["mimeType"].split("/", 1)[0].lower()
    ext_ids = _extension_ids(rtp_parameters)
    out = []
    for index, enc in enumerate(mapping["encodings"]):
        _, temporal, _ = parse_scalability_mode(enc.get("scalabilityMode"))
        out.append(
            ProducerStreamParams(
                ssrc=enc.get("ssrc"),
                rid=enc.get("rid"),
                rtx_ssrc=enc.get("rtxSsrc"),
                payload_type_map=dict(pt_map),
                rtx_payload_type=rtx["payloadType"] if rtx else None,
                codec=codec_name(media["mimeType"]),
                clock_rate=media["clockRate"],
                kind=kind,
                payload_type=media["payloadType"],
                mapped_payload_type=pt_map[media["payloadType"]],
                mapped_rtx_payload_type=pt_map.get(rtx["payloadType"]) if rtx else None,
                mapped_ssrc=enc["mappedSsrc"],
                spatial_layer=index,
                temporal_layers=temporal,
                scalability_mode=enc.get("scalabilityMode"),
                header_extension_ids=dict(ext_ids),
            )
        )
    return out


def consumer_stream_params(consumer_rtp_parameters: dict) -> ConsumerStreamParams:
    """The egress stream of a consumer from the rtpParameters it was given (mid included)."""
    media = _media_codec(consumer_rtp_parameters)
    rtx = next(
        (
            c
            for c in consumer_rtp_parameters["codecs"]
            if is_rtx_codec(c) and (c.get("parameters") or {}).get("apt") == media["payloadType"]
        ),
        None,
    )
    encodings = consumer_rtp_parameters.get("encodings") or []
    if not encodings or not encodings[0].get("ssrc"):
        raise InvalidRequestError("consumer rtpParameters need one encoding with an ssrc")
    encoding = encodings[0]
    spatial, temporal, _ = parse_scalability_mode(encoding.get("scalabilityMode"))
    feedback = {(fb.get("type"), fb.get("parameter") or "") for fb in media.get("rtcpFeedback") or []}
    return ConsumerStreamParams(
        ssrc=encoding["ssrc"],
        payload_type=media["payloadType"],
        rtx_ssrc=(encoding.get("rtx") or {}).get("ssrc") if rtx else None,
        rtx_payload_type=rtx["payloadType"] if rtx else None,
        clock_rate=media["clockRate"],
        codec=codec_name(media["mimeType"]),
        mid=consumer_rtp_parameters.get("mid"),
        kind=media["mimeType"].split("/", 1)[0].lower(),
        spatial_layers=spatial,
        temporal_layers=temporal,
        nack=("nack", "") in feedback,
        pli=("nack", "pli") in feedback,
        fir=("ccm", "fir") in feedback,
        remb=("goog-remb", "") in feedback,
        header_extension_ids=_extension_ids(consumer_rtp_parameters),
    )
