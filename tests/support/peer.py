"""A real mediasoup client for tests: pymediasoup (mediasoup-client's port on aiortc) producing a
moving VP8 test pattern and Opus, consuming and DECODING what the SFU sends.

The peer is signaling-agnostic: it talks through a ``Signal`` with mediasoup-style methods, so the
same client drives a Worker directly (``ChannelSignal``, the media-plane tests) and the product over
Socket.IO (``SocketIOSignal``, the end-to-end tests).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aioice.ice
import numpy as np
from aiortc import AudioStreamTrack, RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame
from pymediasoup import AiortcHandler, Device
from pymediasoup.handlers import aiortc_handler
from pymediasoup.rtp_parameters import RtpCapabilities

# aioice leaves 127.0.0.1 out of host candidates; tests stay on loopback.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def dump(model: Any) -> dict:
    return model.model_dump(exclude_none=True) if hasattr(model, "model_dump") else dict(model)


class PatternTrack(VideoStreamTrack):
    """A moving colour gradient (so VP8 has real content), 320x240 at 30 fps by default."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        x = np.arange(width, dtype=np.uint16)[None, :]
        y = np.arange(height, dtype=np.uint16)[:, None]
        g = ((x + y) % 256).astype(np.uint8)
        self._base = np.dstack([g, 255 - g, ((x * 3 + y) % 256).astype(np.uint8)])
        self._n = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        img = np.roll(self._base, self._n * 4, axis=1)
        self._n += 1
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


class Signal(Protocol):
    async def rtp_capabilities(self) -> dict: ...
    async def create_transport(self, direction: str) -> dict: ...
    async def connect_transport(self, transport_id: str, dtls_parameters: dict) -> None: ...
    async def produce(self, transport_id: str, kind: str, rtp_parameters: dict, app_data: dict) -> str: ...
    async def consume(self, transport_id: str, producer_id: str, rtp_capabilities: dict) -> dict: ...
    async def resume_consumer(self, consumer_id: str) -> None: ...


class ChannelSignal:
    """Signaling straight into a media worker's control API (no rooms, no Socket.IO)."""

    def __init__(self, channel: Any, router_id: str) -> None:
        self.channel = channel
        self.router_id = router_id

    async def rtp_capabilities(self) -> dict:
        return (await self.channel.request("router_rtp_capabilities", {"routerId": self.router_id}))[
            "rtpCapabilities"
        ]

    async def create_transport(self, direction: str) -> dict:
        return await self.channel.request(
            "create_webrtc_transport", {"routerId": self.router_id, "direction": direction}
        )

    async def connect_transport(self, transport_id: str, dtls_parameters: dict) -> None:
        await self.channel.request(
            "connect_webrtc_transport", {"transportId": transport_id, "dtlsParameters": dtls_parameters}
        )

    async def produce(self, transport_id: str, kind: str, rtp_parameters: dict, app_data: dict) -> str:
        reply = await self.channel.request(
            "produce",
            {"transportId": transport_id, "kind": kind, "rtpParameters": rtp_parameters, "appData": app_data},
        )
        return reply["id"]

    async def consume(self, transport_id: str, producer_id: str, rtp_capabilities: dict) -> dict:
        return await self.channel.request(
            "consume",
            {"transportId": transport_id, "producerId": producer_id, "rtpCapabilities": rtp_capabilities},
        )

    async def resume_consumer(self, consumer_id: str) -> None:
        await self.channel.request("resume_consumer", {"consumerId": consumer_id})


class SocketIOSignal:
    """The product's Socket.IO protocol (protocol.md) through a connected socketio.AsyncClient."""

    def __init__(self, sio: Any, timeout: float = 15.0) -> None:
        self.sio = sio
        self.timeout = timeout

    async def call(self, event: str, payload: dict | None = None) -> dict:
        reply = await self.sio.call(event, payload if payload is not None else {}, timeout=self.timeout)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise SignalError(error.get("code", "?"), error.get("message", ""))
        return reply.get("data") or {}

    async def rtp_capabilities(self) -> dict:
        return await self.call("get-rtp-capabilities")

    async def create_transport(self, direction: str) -> dict:
        return await self.call("create-transport", {"direction": direction})

    async def connect_transport(self, transport_id: str, dtls_parameters: dict) -> None:
        await self.call("connect-transport", {"transportId": transport_id, "dtlsParameters": dtls_parameters})

    async def produce(self, transport_id: str, kind: str, rtp_parameters: dict, app_data: dict) -> str:
        data = await self.call(
            "produce", {"transportId": transport_id, "kind": kind, "rtpParameters": rtp_parameters,
                        "appData": app_data},
        )
        return data["producerId"]

    async def consume(self, transport_id: str, producer_id: str, rtp_capabilities: dict) -> dict:
        return await self.call(
            "consume",
            {"transportId": transport_id, "producerId": producer_id, "rtpCapabilities": rtp_capabilities},
        )

    async def resume_consumer(self, consumer_id: str) -> None:
        await self.call("resume-consumer", {"consumerId": consumer_id})


class SignalError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class FrameCounter:
    """Pulls decoded frames from a consumer's track and counts them (with arrival times)."""

    track: Any
    kind: str
    frames: int = 0
    times: list[float] = field(default_factory=list)
    sizes: set = field(default_factory=set)
    ended: bool = False
    _task: asyncio.Task | None = None

    def start(self) -> "FrameCounter":
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                self.frames += 1
                self.times.append(time.monotonic())
                if self.kind == "video":
                    self.sizes.add((frame.width, frame.height))
        except (MediaStreamError, asyncio.CancelledError):
            self.ended = True

    async def wait_frames(self, count: int, timeout: float) -> int:
        """Wait until ``count`` more frames than now have been decoded; returns the new total."""
        target = self.frames + count
        deadline = time.monotonic() + timeout
        while self.frames < target and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.frames

    def frames_since(self, t: float) -> int:
        return sum(1 for x in self.times if x >= t)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:  # noqa: BLE001
                pass


class PolicyAiortcHandler(AiortcHandler):
    """pymediasoup's AiortcHandler builds its RTCConfiguration from iceServers only and drops
    iceTransportPolicy; aiortc (aioice) supports relay-only, so pass it on."""

    def run(self, **kwargs: Any) -> None:
        if kwargs.get("iceTransportPolicy") != "relay":
            return super().run(**kwargs)
        original = aiortc_handler.RTCConfiguration
        aiortc_handler.RTCConfiguration = lambda iceServers=None: RTCConfiguration(  # type: ignore[misc]
            iceServers=iceServers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        try:
            return super().run(**kwargs)
        finally:
            aiortc_handler.RTCConfiguration = original


class Peer:
    """One participant: a pymediasoup Device with a send and a recv transport.

    ``ice_servers``: the join-room ack's ``iceServers`` (TURN); ``relay_only``: relayed candidates only."""

    def __init__(self, signal: Signal, *, video: bool = False, audio: bool = False,
                 ice_servers: list[dict] | None = None, relay_only: bool = False) -> None:
        self.signal = signal
        self.video_track = PatternTrack() if video else None
        self.audio_track = AudioStreamTrack() if audio else None
        tracks = [t for t in (self.video_track, self.audio_track) if t is not None]
        self.device = Device(handlerFactory=PolicyAiortcHandler.createFactory(tracks=tracks))
        self.ice_servers = [RTCIceServer(**server) for server in ice_servers or []]
        self.ice_transport_policy = "relay" if relay_only else None
        self.send_transport = None
        self.recv_transport = None
        self.producers: dict[str, Any] = {}
        self.consumers: dict[str, Any] = {}
        self.counters: dict[str, FrameCounter] = {}

    async def load(self, rtp_capabilities: dict | None = None) -> None:
        caps = rtp_capabilities or await self.signal.rtp_capabilities()
        await self.device.load(RtpCapabilities(**caps))

    async def _transport(self, direction: str):
        info = await self.signal.create_transport(direction)
        kwargs = dict(
            id=info["id"], iceParameters=info["iceParameters"], iceCandidates=info["iceCandidates"],
            dtlsParameters=info["dtlsParameters"], sctpParameters=None, iceServers=list(self.ice_servers),
            iceTransportPolicy=self.ice_transport_policy,
        )
        if direction == "send":
            transport = self.device.createSendTransport(**kwargs)
        else:
            transport = self.device.createRecvTransport(**kwargs)
        signal = self.signal

        @transport.on("connect")
        async def on_connect(dtlsParameters):
            await signal.connect_transport(transport.id, dump(dtlsParameters))

        if direction == "send":

            @transport.on("produce")
            async def on_produce(kind, rtpParameters, appData):
                return await signal.produce(transport.id, kind, dump(rtpParameters), appData or {})

        return transport

    async def produce(self, *, video: bool = True, audio: bool = False) -> dict[str, str]:
        if self.send_transport is None:
            self.send_transport = await self._transport("send")
        out = {}
        if video and self.video_track is not None:
            producer = await self.send_transport.produce(
                track=self.video_track, stopTracks=False, appData={"source": "camera"}
            )
            self.producers[producer.id] = producer
            out["video"] = producer.id
        if audio and self.audio_track is not None:
            producer = await self.send_transport.produce(
                track=self.audio_track, stopTracks=False, appData={"source": "mic"}
            )
            self.producers[producer.id] = producer
            out["audio"] = producer.id
        return out

    async def consume(self, producer_id: str, *, resume: bool = True) -> FrameCounter:
        if self.recv_transport is None:
            self.recv_transport = await self._transport("recv")
        info = await self.signal.consume(self.recv_transport.id, producer_id, dump(self.device.rtpCapabilities))
        consumer = await self.recv_transport.consume(
            id=info["id"], producerId=info["producerId"], kind=info["kind"], rtpParameters=info["rtpParameters"]
        )
        self.consumers[consumer.id] = consumer
        counter = FrameCounter(consumer.track, info["kind"]).start()
        self.counters[consumer.id] = counter
        if resume:
            await self.signal.resume_consumer(consumer.id)
        return counter

    async def close(self) -> None:
        for counter in self.counters.values():
            await counter.stop()
        for consumer in list(self.consumers.values()):
            try:
                await consumer.close()
            except Exception:  # noqa: BLE001
                pass
        for transport in (self.send_transport, self.recv_transport):
            if transport is not None:
                try:
                    await transport.close()
                except Exception:  # noqa: BLE001
                    pass
        for track in (self.video_track, self.audio_track):
            if track is not None:
                track.stop()


class GuideSignal(SocketIOSignal):
    """A client written from the original integration guide: it emits the request WITHOUT an ack and
    waits for the guide's reply event (rtp-capabilities, transport-created, transport-connected,
    produced, consumed), or the ``error`` event. Requests go one at a time, as such clients do."""

    REPLIES = {
        "get-rtp-capabilities": "rtp-capabilities",
        "create-transport": "transport-created",
        "connect-transport": "transport-connected",
        "produce": "produced",
        "consume": "consumed",
    }

    def __init__(self, sio: Any, timeout: float = 15.0) -> None:
        super().__init__(sio, timeout)
        self._waiting: asyncio.Future | None = None
        self._expect: str | None = None
        self._lock = asyncio.Lock()
        for reply in self.REPLIES.values():
            sio.on(reply, lambda data, r=reply: self._on_reply(r, data))
        sio.on("error", lambda data: self._on_error(data))

    def _on_reply(self, event: str, data: Any) -> None:
        if self._waiting is not None and not self._waiting.done() and event == self._expect:
            self._waiting.set_result(data)

    def _on_error(self, data: Any) -> None:
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_exception(SignalError(data.get("code", "?"), data.get("message", "")))

    async def call(self, event: str, payload: dict | None = None) -> dict:
        reply = self.REPLIES.get(event)
        if reply is None:  # events without a guide reply: acks (as the guide's clients do for them)
            return await super().call(event, payload)
        async with self._lock:
            self._expect = reply
            self._waiting = asyncio.get_running_loop().create_future()
            await self.sio.emit(event, payload if payload is not None else {})
            try:
                return await asyncio.wait_for(self._waiting, self.timeout)
            finally:
                self._waiting = None
