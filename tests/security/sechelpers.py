"""Shared helpers of the security suite: a standalone server with a known auth secret, Socket.IO
clients with tokens of our own making, and worker-side probes (what the media workers hold)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import socketio

from studyrooms.config import LimitSettings, MediaSettings, RoomSettings, ServerSettings, Settings
from studyrooms.errors import WIRE_CODES
from studyrooms.signaling.auth import issue_token
from support.peer import SocketIOSignal

SECRET = "test-secret"
STABLE_CODES = WIRE_CODES  # invalid-request, unauthorized, forbidden, not-found, ... (protocol.md)


def settings(**sections) -> Settings:
    """Test settings: signed tokens with SECRET, a short empty-room timeout."""
    base = {
        "server": ServerSettings(auth_secret=SECRET),
        "rooms": RoomSettings(empty_room_timeout_s=0.2),
        "media": MediaSettings(),
        "limits": LimitSettings(),
    }
    base.update(sections)
    return Settings(**base)


def token(rooms: list[str], *, user: str = "u1", name: str = "User", ttl_s: int = 600, secret: str = SECRET,
          now: float | None = None) -> str:
    return issue_token(secret, user, name, rooms, ttl_s, now=now)


@dataclass
class Client:
    sio: socketio.AsyncClient
    signal: SocketIOSignal
    events: list[tuple[str, dict]] = field(default_factory=list)
    joined: dict | None = None

    async def raw(self, event: str, payload=None, *, timeout: float = 10.0):
        """Emit with an ack and return the raw ack (no interpretation)."""
        if payload is None:
            return await self.sio.call(event, timeout=timeout)
        return await self.sio.call(event, payload, timeout=timeout)

    async def error(self, event: str, payload=None) -> dict:
        reply = await self.raw(event, payload)
        assert isinstance(reply, dict) and reply.get("ok") is False, reply
        return reply["error"]

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


NOTIFICATIONS = ("participant-joined", "participant-left", "new-producer", "producer-closed", "consumer-closed",
                 "consumer-paused", "consumer-resumed", "error")


async def connect(app, rooms: list[str] | None = None, *, tok: str | None = None, name: str = "User") -> Client:
    sio = socketio.AsyncClient(reconnection=False)
    client = Client(sio, SocketIOSignal(sio))
    for ev in NOTIFICATIONS:
        sio.on(ev, lambda data, n=ev: client.events.append((n, data)))
    auth = {"token": tok if tok is not None else token(rooms or ["*"], user=name, name=name)}
    await sio.connect(app.url, auth=auth, transports=["websocket"], wait_timeout=10)
    return client


async def join(app, room: str, name: str) -> Client:
    client = await connect(app, [room], name=name)
    client.joined = await client.signal.call("join-room", {"roomId": room, "displayName": name})
    return client


def worker_counts(app) -> dict[str, int]:
    return {
        "routers": sum(len(w.routers) for w in app.workers),
        "transports": sum(len(w.transports) for w in app.workers),
        "producers": sum(len(w.producers) for w in app.workers),
        "consumers": sum(len(w.consumers) for w in app.workers),
    }


def find(app, kind: str, object_id: str):
    """The worker-side object (transport, producer, consumer) with this id, or None."""
    for w in app.workers:
        obj = getattr(w, kind + "s").get(object_id)
        if obj is not None:
            return obj
    return None


async def eventually(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


class LoopErrors:
    """Collects exceptions reaching the loop's exception handler and ERROR log records."""

    def __init__(self) -> None:
        self.loop_errors: list[dict] = []
        self._prev = None

    def install(self) -> "LoopErrors":
        loop = asyncio.get_running_loop()
        self._prev = loop.get_exception_handler()
        loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(ctx))
        return self

    def uninstall(self) -> None:
        asyncio.get_running_loop().set_exception_handler(self._prev)
