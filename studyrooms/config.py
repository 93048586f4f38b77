"""One typed config tree; defaults live here and only here; units are in the names.

Environment variables (``STUDYROOMS_*``) are read at the edge with :meth:`Settings.from_env`; the
media plane receives plain values computed from these models, never the models themselves.
"""

from __future__ import annotations

import os
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InvalidRequestError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MediaSettings(_Model):
    """A media worker: sockets, ICE/DTLS timing, buffers."""

    listen_ip: str = "127.0.0.1"
    announced_ip: str | None = None  # address put in ICE candidates (public IP behind NAT)
    port_mode: Literal["shared", "per-transport"] = "shared"
    # Shared mode: one UDP port per worker, taken from the range (worker i tries rtc_min_port + i first).
    # Per-transport mode: each WebRtcTransport binds its own port in the range.
    rtc_min_port: int = Field(40000, ge=1024, le=65535)
    rtc_max_port: int = Field(49999, ge=1024, le=65535)
    consent_timeout_s: float = Field(30.0, gt=0)
    dtls_timeout_s: float = Field(30.0, gt=0)
    socket_buffer_bytes: int = Field(4 * 1024 * 1024, ge=65536)
    # retransmission history per video consumer: ~1-2 s of a camera stream; the main memory cost of a consumer
    nack_buffer_packets: int = Field(256, ge=16, le=4096)
    keyframe_request_interval_s: float = Field(1.0, ge=0)
    max_incoming_bitrate_bps: int | None = Field(None, ge=10_000)
    certificate_validity_days: int = Field(365, ge=1)

    @model_validator(mode="after")
    def _check_range(self) -> "MediaSettings":
        if self.rtc_min_port > self.rtc_max_port:
            raise ValueError("rtc_min_port must not exceed rtc_max_port")
        return self


class RoomSettings(_Model):
    capacity: int = Field(50, ge=1, le=1000)
    max_rooms: int = Field(10, ge=1, le=100_000)
    audio_only_threshold: int = Field(40, ge=1)
    empty_room_timeout_s: float = Field(30.0, ge=0)
    max_consumers_per_worker: int = Field(500, ge=1)  # beyond this a room spreads to another worker


class LimitSettings(_Model):
    """Per-participant limits (rate-limited when exceeded)."""

    max_send_transports: int = Field(2, ge=0)
    max_recv_transports: int = Field(2, ge=0)
    max_producers: int = Field(3, ge=0)  # mic, camera, screen
    max_consumers: int = Field(200, ge=0)
    requests_per_second: float = Field(50.0, gt=0)
    request_burst: int = Field(100, ge=1)
    max_payload_bytes: int = Field(64 * 1024, ge=1024)


class ServerSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    auth_secret: str | None = None
    token_ttl_s: int = Field(6 * 3600, ge=60)
    num_workers: int | None = Field(None, ge=1)  # default: one per CPU core
    room_hosts: int = Field(1, ge=1)
    #: Ray restarts a dead media worker this many times, then gives up on it (crash loop; its rooms move)
    worker_max_restarts: int = Field(3, ge=0)
    #: restarts of the room hosts, the directory and the signaling actor (-1: no limit)
    actor_max_restarts: int = Field(-1, ge=-1)
    ray_address: str | None = None
    web_root: str | None = None


class Settings(_Model):
    server: ServerSettings = ServerSettings()
    media: MediaSettings = MediaSettings()
    rooms: RoomSettings = RoomSettings()
    limits: LimitSettings = LimitSettings()

    @property
    def dev_mode(self) -> bool:
        """Open development mode: no secret and loopback-only listening."""
        return self.server.auth_secret is None and is_loopback(self.server.host)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: dict) -> "Settings":
        """Build settings from ``STUDYROOMS_<SECTION>_<FIELD>`` plus the documented short names.

        Short names: STUDYROOMS_ANNOUNCED_IP, STUDYROOMS_LISTEN_IP, STUDYROOMS_RTC_MIN_PORT,
        STUDYROOMS_RTC_MAX_PORT, STUDYROOMS_PORT_MODE, STUDYROOMS_AUTH_SECRET, STUDYROOMS_HOST,
        STUDYROOMS_PORT, STUDYROOMS_WORKERS. Invalid values raise InvalidRequestError with one clear line.
        """
        env = os.environ if env is None else env
        sections: dict[str, dict] = {name: dict(overrides.get(name, {})) for name in _SECTIONS}
        for short, (section, field) in _SHORT_NAMES.items():
            value = env.get(short)
            if value not in (None, "") and field not in sections[section]:
                sections[section][field] = value
        for key, value in env.items():
            if not key.startswith("STUDYROOMS_") or key in _SHORT_NAMES or value == "":
                continue
            rest = key[len("STUDYROOMS_") :].lower()
            for section in _SECTIONS:
                prefix = section + "_"
                if rest.startswith(prefix):
                    field = rest[len(prefix) :]
                    model = _SECTIONS[section]
                    if field in model.model_fields and field not in sections[section]:
                        sections[section][field] = value
        try:
            return cls(**{name: _SECTIONS[name](**values) for name, values in sections.items()})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ()))
            raise InvalidRequestError(f"invalid setting {where}: {err.get('msg')}") from None


_SECTIONS: dict[str, type[_Model]] = {
    "server": ServerSettings,
    "media": MediaSettings,
    "rooms": RoomSettings,
    "limits": LimitSettings,
}

_SHORT_NAMES: dict[str, tuple[str, str]] = {
    "STUDYROOMS_ANNOUNCED_IP": ("media", "announced_ip"),
    "STUDYROOMS_LISTEN_IP": ("media", "listen_ip"),
    "STUDYROOMS_RTC_MIN_PORT": ("media", "rtc_min_port"),
    "STUDYROOMS_RTC_MAX_PORT": ("media", "rtc_max_port"),
    "STUDYROOMS_PORT_MODE": ("media", "port_mode"),
    "STUDYROOMS_AUTH_SECRET": ("server", "auth_secret"),
    "STUDYROOMS_HOST": ("server", "host"),
    "STUDYROOMS_PORT": ("server", "port"),
    "STUDYROOMS_WORKERS": ("server", "num_workers"),
}


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
