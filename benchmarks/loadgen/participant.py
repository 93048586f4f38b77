"""One synthetic participant: Socket.IO join, a send and a recv WebRtcTransport (controlling ICE,
DTLS client, SRTP via aiortc), producers of pre-encoded RTP, consumers of every other producer.

Receive path (per packet, kept lean): SRTP unprotect, SSRC lookup, counters, RFC 3550 jitter, and
one-way latency from the payload's send stamp (wall clock: exact on one machine, NTP-bounded
across a cluster).
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from array import array
from dataclasses import dataclass, field

import aiohttp
import socketio

from studyrooms.net.loopback_peer import LoopbackPeer

from .media import AudioSource, Source, camera, read_stamp, screen

logger = logging.getLogger("benchmarks.loadgen")

RTP_HDR = struct.Struct("!BBHII")
#: ICE consent freshness (RFC 7675) as browsers do it: a binding request on each transport every
#: ~5 s (randomised 0.8-1.2x); the server drops a transport after ``consent_timeout_s`` (30 s) without.
CONSENT_INTERVAL_S = 5.0


@dataclass
class Profile:
    """What a participant sends."""

    audio: bool = True
    video: bool = True
    simulcast: bool = False
    screen: bool = False
    consume: bool = True
    max_consumed: int | None = None  # consume at most this many remote producers (None: all of them)
    consume_in_parallel: bool = True  # every announced producer at once, as the page does
    audio_levels: bool = False  # mic packets carry ssrc-audio-level (silent until set_talking)
    media_scale: float = 1.0  # multiplies audio and camera packet rates (reduced-rate big rooms)
    talking: bool = False  # with audio_levels: the mic carries a speaking level from the start


@dataclass
class RecvStats:
    """One consumer's incoming stream."""

    consumer_id: str
    producer_id: str
    kind: str
    source: str
    from_participant: str
    clock_rate: int
    packets: int = 0
    bytes: int = 0
    first_ext: int = -1
    max_ext: int = -1
    jitter: float = 0.0  # RFC 3550, in timestamp units
    _transit: float | None = None
    first_at: float = 0.0

    def row(self) -> dict:
        expected = self.max_ext - self.first_ext + 1 if self.first_ext >= 0 else 0
        lost = max(0, expected - self.packets)
        return {
            "consumer_id": self.consumer_id, "producer_id": self.producer_id, "kind": self.kind,
            "source": self.source, "from_participant": self.from_participant, "packets": self.packets,
            "bytes": self.bytes, "expected": expected, "lost": lost,
            "loss_pct": round(100.0 * lost / expected, 4) if expected else 0.0,
            "jitter_ms": round(1000.0 * self.jitter / self.clock_rate, 4),
        }


class LoadPeer(LoopbackPeer):
    """LoopbackPeer with the received RTP/RTCP handled inline (no queues)."""

    def __init__(self, sock, certificate=None) -> None:
        super().__init__(sock, certificate)
        self.on_rtp = None
        self.on_rtcp = None

    def _on_datagram(self, data: bytes, addr) -> None:
        b0 = data[0] if data else 255
        if 127 < b0 < 192:
            rx = self.dtls._rx_srtp
            if rx is None:
                return
            try:
                if 191 < data[1] < 224:
                    if self.on_rtcp is not None:
                        self.on_rtcp(rx.unprotect_rtcp(data))
                elif self.on_rtp is not None:
                    self.on_rtp(rx.unprotect(data))
            except Exception:  # noqa: BLE001 - replay / auth failure
                self.srtp_errors += 1
        else:
            super()._on_datagram(data, addr)


@dataclass
class ParticipantResult:
    room: str
    name: str
    participant_id: str = ""
    ok: bool = False
    error: str = ""
    connect_at: float = 0.0  # wall clock (time.time)
    joined_s: float = 0.0  # connect -> join-room ack
    media_ready_s: float = 0.0  # connect -> transports connected and producing
    join_s: float | None = None  # connect -> first remote RTP packet
    first_video_s: float | None = None  # connect -> first remote video packet
    remote_at_join: int = 0  # producers present when the join ack came
    sent: dict = field(default_factory=dict)
    streams: list = field(default_factory=list)
    latencies_ms: list = field(default_factory=list)
    srtp_errors: int = 0
    consent_checks: int = 0  # consent refreshes answered by the server
    consume_errors: list = field(default_factory=list)  # failed consume / resume-consumer requests
    last_consume_s: float | None = None  # connect -> the last consumer so far resumed


class Participant:
    def __init__(self, url: str, room: str, name: str, profile: Profile, *, token: str | None = None,
                 max_latency_samples: int = 20000, timeout_s: float = 20.0,
                 consent_interval_s: float = CONSENT_INTERVAL_S) -> None:
        self.url = url.rstrip("/")
        self.room = room
        self.name = name
        self.profile = profile
        self.token = token
        self.timeout_s = timeout_s
        self.result = ParticipantResult(room, name)
        self.sio: socketio.AsyncClient | None = None
        self.send_peer: LoadPeer | None = None
        self.recv_peer: LoadPeer | None = None
        self.recv_transport_id = ""
        self.rtp_capabilities: dict = {}
        self.sources: list[Source] = []
        self.by_ssrc_out: dict[int, Source] = {}
        self.streams: dict[int, RecvStats] = {}
        self.consumed: set[str] = set()
        self._t0 = 0.0
        self._lat = array("f")
        self._lat_seen = 0
        self._max_lat = max_latency_samples
        self._pending: asyncio.Queue = asyncio.Queue()
        self._consume_task: asyncio.Task | None = None
        self._send_task: asyncio.Task | None = None
        self._consent_task: asyncio.Task | None = None
        self.consent_interval_s = consent_interval_s
        self._ice: list[tuple[LoadPeer, dict]] = []  # (peer, the server's iceParameters) per transport
        self._measuring = True
        self.forwarding: dict | None = None  # the last forwarding-changed {video, onStage}
        self.on_consumed = None  # called after each consumer is resumed (progress of a load run)
        host = self.url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        self.bind_ip = "127.0.0.1" if host in ("127.0.0.1", "localhost", "::1") else "0.0.0.0"

    # ------------------------------------------------------------------ signaling
    async def call(self, event: str, payload: dict | None = None) -> dict:
        reply = await self.sio.call(event, payload if payload is not None else {}, timeout=self.timeout_s)
        if not reply or not reply.get("ok"):
            error = (reply or {}).get("error") or {}
            raise RuntimeError(f"{event}: {error.get('code', '?')}: {error.get('message', '')}")
        return reply.get("data") or {}

    async def _token(self) -> str:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.url}/api/token", json={"roomId": self.room, "displayName": self.name}) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"token: {body}")
                return body["token"]

    # ------------------------------------------------------------------ join
    async def join(self) -> None:
        """Connect, join, open both transports, produce; consumption runs in the background."""
        token = self.token or await self._token()
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("new-producer", self._on_new_producer)
        self.sio.on("forwarding-changed", self._on_forwarding_changed)
        self._t0 = time.monotonic()
        self.result.connect_at = time.time()
        await self.sio.connect(self.url, auth={"token": token}, transports=["websocket"], wait_timeout=self.timeout_s)
        joined = await self.call("join-room", {"roomId": self.room, "displayName": self.name})
        self.result.joined_s = time.monotonic() - self._t0
        self.result.participant_id = joined["participantId"]
        self.rtp_capabilities = joined["rtpCapabilities"]
        self.result.remote_at_join = len(joined.get("producers", []))
        for info in joined.get("producers", []):
            self._pending.put_nowait(info)
        if self.profile.consume:
            self.recv_peer, self.recv_transport_id = await self._transport("recv")
            self.recv_peer.on_rtp = self._on_rtp
            self._consume_task = asyncio.ensure_future(self._consume_loop())
        if self.profile.audio or self.profile.video or self.profile.screen:
            self.send_peer, send_id = await self._transport("send")
            self.send_peer.on_rtcp = self._on_rtcp
            await self._produce(send_id)
        self.result.media_ready_s = time.monotonic() - self._t0
        self._send_task = asyncio.ensure_future(self._send_loop())

    async def _transport(self, direction: str) -> tuple[LoadPeer, str]:
        info = await self.call("create-transport", {"direction": direction})
        peer = LoadPeer(await _bind(self.bind_ip))
        cand = info["iceCandidates"][0]
        cand = {**cand, "ip": cand.get("ip") or cand.get("address")}
        peer.ice_parameters = info["iceParameters"]
        for _ in range(10):
            resp = await peer.ice_connect(info["iceParameters"], cand, timeout_s=0.5)
            if resp is not None:
                break
        else:
            raise RuntimeError("ICE checks timed out")
        await self.call("connect-transport", {"transportId": info["id"],
                                              "dtlsParameters": {"role": "client", "fingerprints": peer.fingerprints()}})
        state = await peer.dtls_connect(info["dtlsParameters"]["fingerprints"], "client", timeout_s=self.timeout_s)
        if state != "connected":
            raise RuntimeError(f"DTLS {state}")
        self._ice.append((peer, info["iceParameters"]))
        if self._consent_task is None:  # like a browser: consent from the first connected transport on,
            # not only once the whole join is over (a join slower than the server's consent timeout
            # would otherwise lose its first transport)
            self._consent_task = asyncio.ensure_future(self._consent_loop())
        return peer, info["id"]

    async def _consent_loop(self) -> None:
        """Refresh ICE consent on every transport (a binding request each ~interval, like a browser)."""
        while True:
            await asyncio.sleep(self.consent_interval_s * random.uniform(0.8, 1.2))
            checks = [peer.request(peer.build_check(params, use_candidate=False), peer.remote,
                                   timeout_s=min(2.0, self.consent_interval_s))
                      for peer, params in self._ice if peer.remote is not None]
            for reply in await asyncio.gather(*checks, return_exceptions=True):
                if reply is not None and not isinstance(reply, BaseException):
                    self.result.consent_checks += 1

    async def _produce(self, transport_id: str) -> None:
        ssrc = random.randrange(1 << 20, 1 << 31)
        scale = self.profile.media_scale
        if self.profile.audio:
            self.sources.append(AudioSource("0", ssrc, scale=scale, levels=self.profile.audio_levels))
        if self.profile.video:
            self.sources.append(camera("1", [ssrc + 1, ssrc + 2, ssrc + 3], simulcast=self.profile.simulcast,
                                       scale=scale))
        if self.profile.screen:
            self.sources.append(screen("2", ssrc + 4))
        for src in self.sources:
            await self.call("produce", {"transportId": transport_id, "kind": src.kind,
                                        "rtpParameters": src.rtp_parameters(), "appData": {"source": src.source}})
            for enc in src.encodings:
                self.by_ssrc_out[enc.ssrc] = src
        if self.profile.audio_levels and self.profile.talking:
            self.set_talking(True)

    # ------------------------------------------------------------------ large rooms
    def set_talking(self, talking: bool, level: int = 20) -> None:
        """Mic packets now carry ``level`` (talking) or silence."""
        for src in self.sources:
            if isinstance(src, AudioSource):
                src.set_level(level if talking else 127)

    def _on_forwarding_changed(self, data: dict) -> None:
        self.forwarding = data

    def packet_counts(self) -> dict[int, tuple[str, str, int]]:
        """SSRC -> (kind, from participant, packets so far): windows of what carries packets."""
        return {ssrc: (st.kind, st.from_participant, st.packets) for ssrc, st in self.streams.items()}

    # ------------------------------------------------------------------ consuming
    def _on_new_producer(self, data: dict) -> None:
        self._pending.put_nowait(data)

    async def _consume_loop(self) -> None:
        """Consume every announced producer. Like the page (web/src/roomClient.js ``_consume``), each
        one at once, without waiting for the others (``consume_in_parallel``); else one at a time."""
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                info = await self._pending.get()
                if info is None:
                    return
                pid = info.get("producerId")
                if not pid or pid in self.consumed or info.get("participantId") == self.result.participant_id:
                    continue
                if self.profile.max_consumed is not None and len(self.consumed) >= self.profile.max_consumed:
                    continue
                self.consumed.add(pid)
                if not self.profile.consume_in_parallel:
                    await self._consume(pid, info)
                    continue
                task = asyncio.ensure_future(self._consume(pid, info))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()

    async def _consume(self, pid: str, info: dict) -> None:
        try:
            c = await self.call("consume", {"transportId": self.recv_transport_id, "producerId": pid,
                                            "rtpCapabilities": self.rtp_capabilities})
            codec = c["rtpParameters"]["codecs"][0]
            for enc in c["rtpParameters"]["encodings"]:
                self.streams[enc["ssrc"]] = RecvStats(c["id"], pid, c["kind"], info.get("source", ""),
                                                     info.get("participantId", ""), codec["clockRate"])
            await self.call("resume-consumer", {"consumerId": c["id"]})
            self.result.last_consume_s = time.monotonic() - self._t0
            if self.on_consumed is not None:
                self.on_consumed()
        except Exception as exc:  # noqa: BLE001 - the producer may be gone already
            logger.debug("%s: consume %s failed: %s", self.name, pid, exc)
            if len(self.result.consume_errors) < 20:
                self.result.consume_errors.append(f"{type(exc).__name__}: {exc}"[:200])

    def _on_rtp(self, pkt: bytes) -> None:
        if len(pkt) < 12:
            return
        now = time.monotonic()
        b0, b1, seq, ts, ssrc = RTP_HDR.unpack_from(pkt, 0)
        st = self.streams.get(ssrc)
        if st is None:
            return
        r = self.result
        if r.join_s is None:
            r.join_s = now - self._t0
        if st.packets == 0:
            st.first_at = now
            if st.kind == "video" and r.first_video_s is None:
                r.first_video_s = now - self._t0
        if not self._measuring:
            return
        st.packets += 1
        st.bytes += len(pkt)
        # extended sequence number
        if st.first_ext < 0:
            st.first_ext = st.max_ext = seq
        else:
            delta = (seq - (st.max_ext & 0xFFFF)) & 0xFFFF
            if delta < 0x8000:
                st.max_ext += delta
        transit = now * st.clock_rate - ts
        if st._transit is not None:
            d = abs(transit - st._transit)
            if d < st.clock_rate * 10:  # ignore timestamp wrap
                st.jitter += (d - st.jitter) / 16.0
        st._transit = transit
        stamp = read_stamp(pkt)
        if stamp is not None:
            lat = (time.time_ns() - stamp[0]) / 1e6
            self._lat_seen += 1
            if len(self._lat) < self._max_lat:
                self._lat.append(lat)
            else:  # reservoir sampling keeps the distribution
                j = random.randrange(self._lat_seen)
                if j < self._max_lat:
                    self._lat[j] = lat

    def _on_rtcp(self, data: bytes) -> None:
        """PLI / FIR from the SFU: send a keyframe on that source next."""
        pos = 0
        while pos + 12 <= len(data):
            b0, pt, length = data[pos], data[pos + 1], struct.unpack_from("!H", data, pos + 2)[0]
            if pt == 206 and (b0 & 0x1F) in (1, 4):
                media_ssrc = struct.unpack_from("!I", data, pos + 8)[0]
                if (b0 & 0x1F) == 4 and pos + 16 <= len(data):
                    media_ssrc = struct.unpack_from("!I", data, pos + 12)[0]
                src = self.by_ssrc_out.get(media_ssrc)
                if src is not None:
                    src.request_keyframe()
            pos += (length + 1) * 4

    # ------------------------------------------------------------------ sending
    async def _send_loop(self, tick_s: float = 0.01) -> None:
        peer = self.send_peer
        if peer is None:
            return
        nxt = time.monotonic()
        while True:
            now = time.monotonic()
            for src in self.sources:
                for pkt in src.due(now):
                    try:
                        peer.send_rtp(pkt)
                    except Exception:  # noqa: BLE001
                        pass
            nxt += tick_s
            delay = nxt - time.monotonic()
            if delay < -0.2:
                nxt = time.monotonic()
                delay = 0
            await asyncio.sleep(max(0.0, delay))

    # ------------------------------------------------------------------ end
    def stop_measuring(self) -> None:
        self._measuring = False

    def finish(self) -> ParticipantResult:
        r = self.result
        r.ok = True
        r.sent = {src.source: {"packets": src.packets_sent, "bytes": src.bytes_sent} for src in self.sources}
        r.streams = [st.row() for st in self.streams.values()]
        r.latencies_ms = [round(x, 4) for x in self._lat]
        r.srtp_errors = (self.recv_peer.srtp_errors if self.recv_peer else 0)
        return r

    async def close(self) -> None:
        for task in (self._send_task, self._consume_task, self._consent_task):
            if task is not None:
                task.cancel()
        self._pending.put_nowait(None)
        if self.sio is not None and self.sio.connected:
            try:
                await asyncio.wait_for(self.call("leave-room"), 5)
            except Exception:  # noqa: BLE001
                pass
            try:
                await self.sio.disconnect()
            except Exception:  # noqa: BLE001
                pass
        for peer in (self.send_peer, self.recv_peer):
            if peer is not None:
                try:
                    await asyncio.wait_for(peer.close(), 2)
                except Exception:  # noqa: BLE001
                    pass


async def _bind(ip: str):
    from studyrooms.net.udp import bind_udp

    return await bind_udp(ip)
