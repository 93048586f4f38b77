"""What the StudyRooms SFU can route: mediasoup's ``supportedRtpCapabilities`` for our codec set.

Plain dicts in mediasoup's camelCase JSON shape. Header extension ids are mediasoup's (the ids a
router advertises; clients map theirs onto them). Bandwidth estimation: ``transport-cc`` feedback
and the transport-wide-cc extension (id 5, audio and video, as mediasoup) for endpoints that speak
it (browsers: send-side estimation per transport, ``media/bwe.py``); ``goog-remb`` + abs-send-time
kept for those that do not (aiortc/pymediasoup). Deliberately absent until implemented:

- multiopus, G.711, AV1, H265 (not forwarded/parsed by the media plane).

Never mutate these constants: :func:`studyrooms.sfu.ortc.generate_router_rtp_capabilities` copies.
"""

from __future__ import annotations

from typing import Any, Final

MID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
RRID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
ABS_SEND_TIME_URI: Final = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
TRANSPORT_CC_URI: Final = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
AUDIO_LEVEL_URI: Final = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
VIDEO_ORIENTATION_URI: Final = "urn:3gpp:video-orientation"
TOFFSET_URI: Final = "urn:ietf:params:rtp-hdrext:toffset"

# mediasoup's preferred ids (supportedRtpCapabilities.ts). 5 (transport-wide-cc) is reserved.
MID_ID: Final = 1
RID_ID: Final = 2
RRID_ID: Final = 3
ABS_SEND_TIME_ID: Final = 4
TRANSPORT_CC_ID: Final = 5
AUDIO_LEVEL_ID: Final = 10
VIDEO_ORIENTATION_ID: Final = 11
TOFFSET_ID: Final = 12


def _video_feedback() -> list[dict[str, str]]:
    return [
        {"type": "nack", "parameter": ""},
        {"type": "nack", "parameter": "pli"},
        {"type": "ccm", "parameter": "fir"},
        {"type": "goog-remb", "parameter": ""},
        {"type": "transport-cc", "parameter": ""},
    ]


def _ext(kind: str, uri: str, preferred_id: int, direction: str = "sendrecv") -> dict[str, Any]:
    return {
        "kind": kind,
        "uri": uri,
        "preferredId": preferred_id,
        "preferredEncrypt": False,
        "direction": direction,
    }


SUPPORTED_RTP_CAPABILITIES: Final[dict[str, Any]] = {
    "codecs": [
        {
            "kind": "audio",
            "mimeType": "audio/opus",
            "clockRate": 48000,
            "channels": 2,
            "parameters": {},
            "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}],
        },
        {
            "kind": "video",
            "mimeType": "video/VP8",
            "clockRate": 90000,
            "parameters": {},
            "rtcpFeedback": _video_feedback(),
        },
        {
            "kind": "video",
            "mimeType": "video/VP9",
            "clockRate": 90000,
            "parameters": {},
            "rtcpFeedback": _video_feedback(),
        },
        {
            "kind": "video",
            "mimeType": "video/H264",
            "clockRate": 90000,
            "parameters": {
                "packetization-mode": 1,
                "profile-level-id": "42e01f",
                "level-asymmetry-allowed": 1,
            },
            "rtcpFeedback": _video_feedback(),
        },
        {
            "kind": "video",
            "mimeType": "video/H264",
            "clockRate": 90000,
            "parameters": {
                "packetization-mode": 1,
                "profile-level-id": "4d0032",
                "level-asymmetry-allowed": 1,
            },
            "rtcpFeedback": _video_feedback(),
        },
    ],
    # Same order as mediasoup.
    "headerExtensions": [
        _ext("audio", MID_URI, MID_ID),
        _ext("video", MID_URI, MID_ID),
        _ext("video", RID_URI, RID_ID, "recvonly"),
        _ext("video", RRID_URI, RRID_ID, "recvonly"),
        _ext("audio", ABS_SEND_TIME_URI, ABS_SEND_TIME_ID),
        _ext("video", ABS_SEND_TIME_URI, ABS_SEND_TIME_ID),
        _ext("audio", TRANSPORT_CC_URI, TRANSPORT_CC_ID),
        _ext("video", TRANSPORT_CC_URI, TRANSPORT_CC_ID),
        _ext("audio", AUDIO_LEVEL_URI, AUDIO_LEVEL_ID),
        _ext("video", VIDEO_ORIENTATION_URI, VIDEO_ORIENTATION_ID),
        _ext("video", TOFFSET_URI, TOFFSET_ID),
    ],
}

# What a StudyRooms router offers unless configured otherwise (mediasoup's RouterOptions.mediaCodecs).
# Resulting payload types: opus 100, VP8 101 (rtx 102), H264 103 (rtx 104).
DEFAULT_MEDIA_CODECS: Final[list[dict[str, Any]]] = [
    {
        "kind": "audio",
        "mimeType": "audio/opus",
        "clockRate": 48000,
        "channels": 2,
        "parameters": {"useinbandfec": 1},
    },
    {
        "kind": "video",
        "mimeType": "video/VP8",
        "clockRate": 90000,
    },
    {
        "kind": "video",
        "mimeType": "video/H264",
        "clockRate": 90000,
        "parameters": {
            "packetization-mode": 1,
            "profile-level-id": "42e01f",
            "level-asymmetry-allowed": 1,
        },
    },
]
