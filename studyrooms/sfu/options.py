"""Plain option values handed from the control plane to media entities (no pydantic here:
built once from studyrooms.config by the Worker, then read by transports as attributes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    listen_ip: str = "127.0.0.1"
    announced_ip: str | None = None
    port_mode: Literal["shared", "per-transport"] = "shared"
    rtc_min_port: int = 40000
    rtc_max_port: int = 49999
    consent_timeout_s: float = 30.0
    dtls_timeout_s: float = 30.0
    socket_buffer_bytes: int = 4 * 1024 * 1024
    nack_buffer_packets: int = 256
    keyframe_request_interval_s: float = 1.0
    memory_trim_delay_s: float = 2.0
    max_incoming_bitrate_bps: int | None = None
    certificate_validity_days: int = 365
    enable_udp: bool = True  # offer the UDP host candidate
    enable_tcp: bool = False  # also offer a passive ICE-TCP candidate (RFC 6544)
    # "auto" | "on" | "off": (re)configure studyrooms.media.fastpath for this process when the worker
    # starts; None keeps what the process has (STUDYROOMS_MEDIA_FAST_PATH, or a test's choice)
    fast_path: str | None = None
    # downlink bandwidth estimation (transport-cc) and allocation per recv transport
    initial_outgoing_bitrate_bps: int = 600_000
    max_outgoing_bitrate_bps: int = 10_000_000

    @classmethod
    def from_settings(cls, media: Any) -> "WorkerOptions":
        """Build from a studyrooms.config.MediaSettings (duck-typed to keep sfu free of pydantic)."""
        return cls(**{name: getattr(media, name) for name in cls.__dataclass_fields__})


@dataclass(slots=True)
class WebRtcTransportOptions:
    direction: Literal["send", "recv"] | None = None
    max_incoming_bitrate_bps: int | None = None
    app_data: dict = field(default_factory=dict)


@dataclass(slots=True)
class PlainTransportOptions:
    listen_ip: str = "127.0.0.1"
    announced_ip: str | None = None
    port: int | None = None  # None: take one from the worker's range
    rtcp_mux: bool = True
    comedia: bool = False
    # SRTP with keys given out of band: {"cryptoSuite": "AES_CM_128_HMAC_SHA1_80", "keyBase64": "..."}
    enable_srtp: bool = False
    srtp_crypto_suite: str = "AES_CM_128_HMAC_SHA1_80"
    app_data: dict = field(default_factory=dict)
