"""Helpers of the signaling tests: a recording python-socketio client and a local stack
(SignalingServer + LocalRoomsPort + RoomService with the in-test worker ports)."""

from __future__ import annotations

import asyncio

import aiohttp
import socketio

from roomfakes import FakeDirectory
from studyrooms.clock import SystemClock
from studyrooms.config import LimitSettings, RoomSettings, ServerSettings, Settings
from studyrooms.rooms import LocalNotifier, LocalRoomsPort, RoomService
from studyrooms.signaling import SignalingServer


class Client:
    """A real python-socketio AsyncClient that records every event it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, object]] = []
        self.connect_errors: list[object] = []
        self.sio.on("*", self._any)
        self.sio.on("connect_error", self._connect_error)

    async def _any(self, event, *args):
        self.events.append((event, args[0] if args else None))

    async def _connect_error(self, data=None):
        self.connect_errors.append(data)

    async def connect(self, url: str, token: str | None) -> None:
        auth = {"token": token} if token is not None else None
        await self.sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=5)

    async def call(self, event: str, payload=..., timeout: float = 5) -> dict:
        if payload is ...:
            return await self.sio.call(event, timeout=timeout)
        return await self.sio.call(event, payload, timeout=timeout)

    def got(self, event: str) -> list:
        return [d for e, d in self.events if e == event]

    async def wait_for(self, event: str, count: int = 1, timeout: float = 5) -> list:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.got(event)) < count:
            if loop.time() > deadline:
                raise AssertionError(f"no {event} (got {[e for e, _ in self.events]})")
            await asyncio.sleep(0.01)
        return self.got(event)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


def make_settings(secret: str | None = None, **limits) -> Settings:
    return Settings(
        server=ServerSettings(auth_secret=secret),
        rooms=RoomSettings(capacity=10, max_rooms=3, empty_room_timeout_s=0.2),
        limits=LimitSettings(**limits),
    )


class Stack:
    def __init__(self, settings: Settings, **server_kw) -> None:
        self.settings = settings
        self.directory = FakeDirectory(2)
        self.notifier = LocalNotifier()
        self.service = RoomService(settings, self.directory, self.notifier, SystemClock(), "host-1")
        self.rooms = LocalRoomsPort(self.service)
        self.server = SignalingServer(settings, self.rooms, "sig-1", **server_kw)
        self.notifier.register("sig-1", self.server.deliver)
        self.url = ""
        self.clients: list[Client] = []

    async def start(self) -> "Stack":
        port = await self.server.start("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def token(self, user: str = "u1", name: str = "User", rooms=("*",)) -> str:
        return self.server.issue_token(user, name, list(rooms))

    async def client(self, token: str | None = "auto") -> Client:
        c = Client()
        self.clients.append(c)
        await c.connect(self.url, self.token() if token == "auto" else token)
        return c

    async def http(self, method: str, path: str, **kw) -> tuple[int, object]:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.url + path, **kw) as resp:
                ctype = resp.headers.get("Content-Type", "")
                body = await resp.json() if "json" in ctype else await resp.text()
                return resp.status, body

    async def stop(self) -> None:
        for c in self.clients:
            await c.close()
        await self.server.stop()
        await self.service.close()
