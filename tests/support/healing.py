"""A pymediasoup client that does what docs/protocol.md ("Healing") asks of every client, with no
user action: on ``media-reset`` it drops its transports and makes new ones, produces again and
consumes the listed producers; on ``room-reset`` and after a reconnection of its socket (Socket.IO
reconnection, same token) it joins again. It asks for session resume (``resume: true`` in the
Socket.IO auth, then the join ack's ``resumeKey``): when the join after a reconnection says
``resumed: true`` it keeps its transports, producers and consumers and only consumes producers it
missed; otherwise it rebuilds. It records when each remote person's video decodes, so tests can
measure kill -> first decoded frame.

Given ``failover`` URLs (other signaling fronts, what a load balancer would pick), it does not
reconnect to a front that went away: it connects to the next URL in turn (bounded tries), with the
same auth (token and resume key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import socketio

from .peer import FrameCounter, Peer, SocketIOSignal

logger = logging.getLogger("tests.healing")


@dataclass
class Received:
    """One consumer of a remote person's video."""

    name: str  # the remote person's display name (participant ids change on a re-join)
    counter: FrameCounter
    created: float = field(default_factory=time.monotonic)


class HealingClient:
    def __init__(self, url: str, token: str, room: str, name: str, *, resume: bool = True,
                 failover: tuple[str, ...] = ()) -> None:
        self.url, self.token, self.room, self.name = url, token, room, name
        self.urls = [url, *failover]
        #: the Socket.IO auth payload, sent again on every reconnection (python-socketio keeps it)
        self.auth: dict = {"token": token, **({"resume": True} if resume else {})}
        self.resumes = 0  # joins the server answered with resumed: true
        self.sio = socketio.AsyncClient(reconnection=not failover, reconnection_delay=0.3,
                                        reconnection_delay_max=1.0, randomization_factor=0.2)
        self.signal = SocketIOSignal(self.sio, timeout=20)
        self.peer: Peer | None = None
        self.caps: dict | None = None
        self.names: dict[str, str] = {}  # participantId -> displayName
        self.received: list[Received] = []
        self.events: list[tuple[float, str]] = []
        self.consumed: set[str] = set()  # producer ids consumed by the current peer
        self.participant_id: str | None = None
        self.joins = 0
        self.errors: list[str] = []
        self._queue: asyncio.Queue = asyncio.Queue()
        self._runner: asyncio.Task | None = None
        self._closing = False
        sio = self.sio
        sio.on("connect", lambda: self._put(("join", None)))
        sio.on("media-reset", lambda data: self._put(("media-reset", data)))
        sio.on("room-reset", lambda data: self._put(("join", data)))
        sio.on("new-producer", lambda data: self._put(("consume", data)))
        sio.on("participant-joined", self._on_joined)
        sio.on("disconnect", self._on_disconnect)
        self._failover: asyncio.Task | None = None

    # ------------------------------------------------------------------ public
    async def start(self) -> None:
        self._runner = asyncio.ensure_future(self._run())
        await self.sio.connect(self.url, auth=self.auth, transports=["websocket"], wait_timeout=10)

    async def wait_joined(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (self.peer is None or self.peer.send_transport is None) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert self.peer is not None and self.peer.send_transport is not None, (
            f"{self.name} did not join: {self.errors} {self.events}")

    def remote_names(self) -> set[str]:
        return {r.name for r in self.received}

    def first_frame_after(self, t: float, name: str, *, new_only: bool) -> float | None:
        """When ``name``'s video first decoded after ``t`` (consumers created after ``t`` only when
        ``new_only``: frames of a stream that stopped must not count)."""
        times = [x for r in self.received if r.name == name and (not new_only or r.created >= t)
                 for x in r.counter.times if x >= t]
        return min(times) if times else None

    def frame_times(self, name: str) -> list[float]:
        return sorted(x for r in self.received if r.name == name for x in r.counter.times)

    def consumers_created_after(self, t: float) -> int:
        return sum(1 for r in self.received if r.created >= t)

    async def close(self) -> None:
        self._closing = True
        for task in (self._runner, self._failover):
            if task is not None:
                task.cancel()
        if self.sio.connected:
            try:
                await self.sio.call("leave-room", {}, timeout=5)
            except Exception:  # noqa: BLE001
                pass
        await self.sio.disconnect()
        if self.peer is not None:
            await self.peer.close()
        for r in self.received:
            await r.counter.stop()

    # ------------------------------------------------------------------ events (one at a time, in order)
    def _note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    def _put(self, item: tuple[str, Any]) -> None:
        self._note(item[0])
        self._queue.put_nowait(item)

    def _on_disconnect(self, *args: Any) -> None:
        self._note("disconnect")
        if len(self.urls) > 1 and not self._closing and (self._failover is None or self._failover.done()):
            self._failover = asyncio.ensure_future(self._connect_elsewhere())

    async def _connect_elsewhere(self, tries: int = 30) -> None:
        """The front went away: the next URL in turn (the dead one comes last), bounded tries."""
        i = self.urls.index(self.url)
        for attempt in range(tries):
            url = self.urls[(i + 1 + attempt) % len(self.urls)]
            try:
                await self.sio.connect(url, auth=self.auth, transports=["websocket"], wait_timeout=3)
            except Exception as exc:  # noqa: BLE001 - try the next one
                self._note(f"connect {url} failed: {exc!r}")
                await asyncio.sleep(0.3)
                continue
            self.url = url
            self._note(f"failover to {url}")
            return
        self.errors.append(f"no front answered after {tries} tries")

    def _on_joined(self, data: dict) -> None:
        if isinstance(data, dict) and data.get("participantId"):
            self.names[data["participantId"]] = data.get("displayName", "?")

    async def _run(self) -> None:
        while not self._closing:
            kind, data = await self._queue.get()
            try:
                if kind == "join":
                    await self._join()
                elif kind == "media-reset":
                    await self._fresh_peer(data.get("producers") or [])
                elif kind == "consume" and self.peer is not None:
                    await self._consume(data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded; the next reset/reconnect heals
                self.errors.append(f"{kind}: {exc!r}")
                logger.warning("%s: %s failed: %r", self.name, kind, exc)

    async def _join(self) -> None:
        for _ in range(100):  # the connect handler may run before the client counts as connected
            if self.sio.connected:
                break
            await asyncio.sleep(0.02)
        self._note("join-room sent")
        ack = await self.signal.call("join-room", {"roomId": self.room, "displayName": self.name})
        self._note("join-room acked")
        self.joins += 1
        if ack.get("resumeKey"):
            self.auth["resumeKey"] = ack["resumeKey"]  # presented on the next reconnection
        for p in ack.get("participants") or []:
            self.names[p["participantId"]] = p["displayName"]
        if ack.get("resumed") and self.peer is not None and ack["participantId"] == self.participant_id:
            self.resumes += 1
            self._note("resumed")
            for info in ack.get("producers") or []:  # what was published while the socket was away
                await self._consume(info)
            return
        self.participant_id = ack["participantId"]
        self.caps = ack["rtpCapabilities"]
        await self._fresh_peer(ack.get("producers") or [])

    async def _fresh_peer(self, producers: list[dict]) -> None:
        old, self.peer = self.peer, None
        if old is not None:
            await old.close()
        self.consumed = set()
        peer = Peer(self.signal, video=True)
        await peer.load(self.caps)
        self.peer = peer
        self._note("producing")
        await peer.produce(video=True)
        self._note("produced")
        for info in producers:
            await self._consume(info)

    async def _consume(self, info: dict) -> None:
        if info.get("kind") != "video" or info["producerId"] in self.consumed or self.peer is None:
            return
        self.consumed.add(info["producerId"])
        counter = await self.peer.consume(info["producerId"])
        self.received.append(Received(self.names.get(info["participantId"], info["participantId"]), counter))
