"""One typed config tree; defaults live here and only here; units are in the names.

Environment variables (``STUDYROOMS_*``) are read at the edge with :meth:`Settings.from_env`; the
media plane receives plain values computed from these models, never the models themselves.
"""

from __future__ import annotations

import os
import re
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

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
    # after closes (worker) or leaves (room host) settle for this long, the process collects cycles and
    # gives freed heap pages back (gc.collect + malloc_trim); 0: never
    memory_trim_delay_s: float = Field(2.0, ge=0)
    max_incoming_bitrate_bps: int | None = Field(None, ge=10_000)
    certificate_validity_days: int = Field(365, ge=1)
    # ICE candidates offered (mediasoup's enableUdp / enableTcp): TCP for networks that block UDP
    enable_udp: bool = True
    enable_tcp: bool = False
    # per-copy forwarding work in the compiled fan-out core (studyrooms/media/fanout.c, built by
    # `make setup`): auto = use it if it loads, else pure Python with one warning; on = refuse to
    # start without it; off = pure Python (STUDYROOMS_MEDIA_FAST_PATH)
    fast_path: Literal["auto", "on", "off"] = "auto"
    # pipes between a room's routers on different workers: SRTP (AEAD_AES_256_GCM, mediasoup's
    # enableSrtp) between workers on different nodes, plain RTP inside one node; "always": SRTP on every pipe
    pipe_srtp: Literal["inter-node", "always"] = "inter-node"
    # Downlink: a recv transport's estimate starts here (mediasoup's initialAvailableOutgoingBitrate)
    # and never exceeds the max; transport-cc feedback and probing move it in between.
    initial_outgoing_bitrate_bps: int = Field(600_000, ge=30_000)
    max_outgoing_bitrate_bps: int = Field(10_000_000, ge=100_000)

    @model_validator(mode="after")
    def _check_range(self) -> "MediaSettings":
        if self.rtc_min_port > self.rtc_max_port:
            raise ValueError("rtc_min_port must not exceed rtc_max_port")
        if not (self.enable_udp or self.enable_tcp):
            raise ValueError("enable_udp and enable_tcp are both off: no ICE candidate to offer")
        return self


class RoomSettings(_Model):
    capacity: int = Field(50, ge=1, le=1000)
    max_rooms: int = Field(10, ge=1, le=100_000)
    audio_only_threshold: int = Field(40, ge=1)
    empty_room_timeout_s: float = Field(30.0, ge=0)
    max_consumers_per_worker: int = Field(500, ge=1)  # beyond this a room spreads to another worker
    # Last-N video: at most this many participants' videos are forwarded to each receiver (screen
    # shares and on-stage first, then by speaker recency); -1 forwards every video (off).
    last_n: int = Field(9, ge=-1)
    # Speaker-selected audio: at most this many audio streams (the loudest) are forwarded per room
    # at once; rooms with no more audio producers forward everyone; -1 forwards every audio (off).
    max_audio_streams: int = Field(3, ge=-1)
    # A selected audio stream stays forwarded this long after it was last loud (words are not clipped).
    audio_hangover_s: float = Field(1.0, ge=0)
    # A new speaker moves to the front of the speaker history (last-N order) only after being the
    # dominant speaker this long, so short interjections do not shuffle the forwarded videos.
    speaker_dwell_s: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _check_audio(self) -> "RoomSettings":
        if self.max_audio_streams == 0:
            raise ValueError("max_audio_streams must be >= 1 (or -1 to forward every audio)")
        return self
    # admission control: a worker whose event loop uses more than this fraction of a core (measured,
    # smoothed over ~1 s) takes no new router or participant; a join no worker can take is refused
    # with resource-exhausted, so those already in keep their quality
    worker_cpu_limit: float = Field(0.8, gt=0, le=1.0)
    # session resume: a participant whose socket goes without leave-room (signaling restart, network
    # blip) keeps its media for this long when its client asked to resume; a join-room with its
    # resume key within it gets the same participant back (docs/protocol.md). 0: a disconnect leaves.
    resume_grace_s: float = Field(15.0, ge=0, le=600)


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
    # signaling fronts (HTTP + Socket.IO, each on `port` of its node): default one per node advertising
    # the `signaling` Ray resource (the head when none does); more than nodes: the k-th on a node binds port + k
    signaling_fronts: int | None = Field(None, ge=1, le=64)
    #: Ray restarts a dead media worker this many times, then gives up on it (crash loop; its rooms move)
    worker_max_restarts: int = Field(3, ge=0)
    #: restarts of the room hosts, the directory and the signaling actor (-1: no limit)
    actor_max_restarts: int = Field(-1, ge=-1)
    ray_address: str | None = None
    web_root: str | None = None
    # engine.io heartbeat: a client that misses a pong for ping_timeout_s after a ping (sent every
    # ping_interval_s) is disconnected (and leaves its room); socket.io's defaults are 25 / 20 s
    ping_interval_s: float = Field(25.0, gt=0)
    ping_timeout_s: float = Field(20.0, gt=0)


#: turn:/turns: URL of RFC 7065 as browsers accept it: host or [IPv6], optional port and transport
_TURN_URL = re.compile(
    r"^(?P<scheme>turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?$"
)


class TurnSettings(_Model):
    """TURN relay for clients behind strict networks (coturn with ``use-auth-secret``).

    Off while ``urls`` is empty. When on, every join gets TURN REST credentials valid ``ttl_s``
    (studyrooms/rooms/turn.py); ``relay_only`` asks clients to use relayed candidates only."""

    urls: tuple[str, ...] = ()
    secret: SecretStr | None = None  # coturn's static-auth-secret; never logged or sent to clients
    ttl_s: int = Field(6 * 3600, ge=60, le=7 * 24 * 3600)
    relay_only: bool = False

    @field_validator("urls", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):  # the environment's comma-separated list
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        if len(urls) > 8:
            raise ValueError("at most 8 TURN URLs")
        for url in urls:
            match = _TURN_URL.match(url)
            if match is None:
                raise ValueError(f"{url!r} is not a turn:/turns: URL (turn:host:3478?transport=udp)")
            if match["port"] is not None and not 0 < int(match["port"]) < 65536:
                raise ValueError(f"{url!r}: port out of range")
            if match["scheme"] == "turns" and match["transport"] == "udp":
                raise ValueError(f"{url!r}: turns: runs over TLS, i.e. transport=tcp")
        return urls

    @model_validator(mode="after")
    def _check_pairing(self) -> "TurnSettings":
        secret = self.secret.get_secret_value() if self.secret is not None else ""
        if self.urls and not secret:
            raise ValueError(
                "STUDYROOMS_TURN_URLS needs STUDYROOMS_TURN_SECRET (coturn's static-auth-secret)")
        if secret and not self.urls:
            raise ValueError("STUDYROOMS_TURN_SECRET is set but STUDYROOMS_TURN_URLS is empty")
        if secret and len(secret) < 16:
            raise ValueError("STUDYROOMS_TURN_SECRET must be at least 16 characters")
        if self.relay_only and not self.urls:
            raise ValueError("STUDYROOMS_TURN_RELAY_ONLY needs STUDYROOMS_TURN_URLS")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    def summary(self) -> str:
        """One line for the start-up log (never the secret)."""
        if not self.enabled:
            return "off"
        return (f"{', '.join(self.urls)}; credentials valid {self.ttl_s} s"
                + ("; relay-only" if self.relay_only else ""))


class Settings(_Model):
    server: ServerSettings = ServerSettings()
    media: MediaSettings = MediaSettings()
    rooms: RoomSettings = RoomSettings()
    limits: LimitSettings = LimitSettings()
    turn: TurnSettings = TurnSettings()

    @property
    def dev_mode(self) -> bool:
        """Open development mode: no secret and loopback-only listening."""
        return self.server.auth_secret is None and is_loopback(self.server.host)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: dict) -> "Settings":
        """Build settings from ``STUDYROOMS_<SECTION>_<FIELD>`` plus the documented short names.

        Short names: STUDYROOMS_ANNOUNCED_IP, STUDYROOMS_LISTEN_IP, STUDYROOMS_RTC_MIN_PORT,
        STUDYROOMS_RTC_MAX_PORT, STUDYROOMS_PORT_MODE, STUDYROOMS_AUTH_SECRET, STUDYROOMS_HOST,
        STUDYROOMS_PORT, STUDYROOMS_WORKERS. The TURN section's names are already short:
        STUDYROOMS_TURN_URLS, STUDYROOMS_TURN_SECRET, STUDYROOMS_TURN_TTL_S, STUDYROOMS_TURN_RELAY_ONLY.
        Invalid values raise InvalidRequestError with one clear line.
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
        built = {}
        for name, values in sections.items():
            try:
                built[name] = _SECTIONS[name](**values)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join([name, *(str(p) for p in err.get("loc", ()))])  # e.g. turn.urls
                msg = str(err.get("msg")).removeprefix("Value error, ")
                raise InvalidRequestError(f"invalid setting {where}: {msg}") from None
        return cls(**built)


_SECTIONS: dict[str, type[_Model]] = {
    "server": ServerSettings,
    "media": MediaSettings,
    "rooms": RoomSettings,
    "limits": LimitSettings,
    "turn": TurnSettings,
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
