"""Helpers of the scale-out tests on a simulated cluster (tests/ray/test_scaleout.py,
tests/ray/test_spread_placement.py): a Socket.IO + pymediasoup participant on one front, the room's
dump from its host, and the wait until the cluster holds nothing."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
import socketio

from actors.hop import call

peer_mod = pytest.importorskip("support.peer")


async def http(url, method, path, body=None):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.request(method, url + path, json=body) as resp:
            return resp.status, await resp.json()


class Client:
    """A participant: a Socket.IO connection to one front and a pymediasoup device."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list = []
        self.sio = None
        self.peer = None

    async def join(self, url: str, room: str, *, media: bool = True) -> dict:
        status, body = await http(url, "POST", "api/token", {"roomId": room, "displayName": self.name})
        assert status == 200, body
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("*", lambda event, data=None: self.events.append((event, data)))
        await self.sio.connect(url, auth={"token": body["token"]}, transports=["websocket"], wait_timeout=20)
        reply = await self.sio.call("join-room", {"roomId": room, "displayName": self.name}, timeout=30)
        if reply["ok"] and media:
            self.peer = peer_mod.Peer(peer_mod.SocketIOSignal(self.sio, timeout=30), video=True)
            await self.peer.load(reply["data"]["rtpCapabilities"])
        return reply

    async def close(self) -> None:
        if self.peer is not None:
            await self.peer.close()
        if self.sio is not None and self.sio.connected:
            await self.sio.disconnect()


async def room_dump(app, room: str) -> dict:
    directory = await call(app.directory.dump.remote())
    host = await call(app.hosts[directory["rooms"][room]].dump.remote())
    return next(r for r in host["rooms"] if r["roomId"] == room)


async def wait_all_gone(app, timeout: float = 20.0) -> dict:
    """Workers hold no router/transport/producer/consumer, no room is listed or reserved."""
    deadline = time.monotonic() + timeout
    while True:
        loads = [await call(w.load.remote()) for w in app.workers.values()]
        totals = {k: sum(load[k] for load in loads)
                  for k in ("routerCount", "transportCount", "producerCount", "consumerCount")}
        _, rooms = await http(app.url, "GET", "api/rooms")
        directory = await call(app.directory.dump.remote())
        state = {**totals, "rooms": len(rooms["rooms"]), "reserved": len(directory["reserved"])}
        if not any(state.values()) or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.1)
