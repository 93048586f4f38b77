"""TURN with real coturn (Debian's package, started here on loopback ports, tests/support/coturn.py).

- The credentials StudyRooms hands out are accepted by coturn (allocation over UDP and TCP, and
  data relayed to a peer), an expired one and one made with the wrong secret are refused (401).
- A pymediasoup/aiortc client whose transports may only use relayed candidates joins through the
  whole stack (Socket.IO, rooms, a media worker) with the join ack's iceServers and decodes the
  other participant's video; the server sees both transports from coturn's relay addresses.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest
import socketio
from aioice import stun, turn

from studyrooms.config import Settings, TurnSettings
from studyrooms.rooms.turn import ice_servers, turn_credential, turn_username
from studyrooms.standalone import start_standalone
from support.coturn import start_coturn
from support.peer import Peer, SocketIOSignal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

SECRET = "coturn-test-static-auth-secret"


@pytest.fixture(scope="module")
def coturn(tmp_path_factory):
    server = start_coturn(tmp_path_factory.mktemp("coturn"), SECRET)
    yield server
    server.stop()


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(b"echo:" + data, addr)


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))


async def _allocate(coturn, username: str, password: str, transport: str):
    return await asyncio.wait_for(turn.create_turn_endpoint(
        _Inbox, server_addr=("127.0.0.1", coturn.port), username=username, password=password,
        lifetime=120, transport=transport), timeout=10)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_handed_out_credentials_allocate_and_relay(coturn, transport):
    settings = TurnSettings(urls=tuple(coturn.urls()), secret=SECRET, ttl_s=600)
    [server] = ice_servers(settings, "participant-1", time.time())
    loop = asyncio.get_running_loop()
    peer, echo = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    relay, inbox = await _allocate(coturn, server["username"], server["credential"], transport)
    try:
        relayed = relay.get_extra_info("sockname")
        assert relayed[0] == "127.0.0.1" and coturn.is_relay_port(relayed[1]), relayed
        relay.sendto(b"hello", peer.get_extra_info("sockname"))
        data, addr = await asyncio.wait_for(inbox.queue.get(), timeout=5)
        assert data == b"echo:hello" and addr == peer.get_extra_info("sockname")
    finally:
        relay.close()
        peer.close()


async def test_expired_credential_is_refused(coturn):
    username = turn_username("participant-1", int(time.time()) - 5)  # expired 5 s ago
    with pytest.raises(stun.TransactionFailed) as info:
        await _allocate(coturn, username, turn_credential(SECRET, username), "udp")
    assert info.value.response.attributes["ERROR-CODE"][0] == 401
    # the same participant a minute later than now is fine: only the expiry differed
    username = turn_username("participant-1", int(time.time()) + 60)
    relay, _ = await _allocate(coturn, username, turn_credential(SECRET, username), "udp")
    relay.close()


async def test_credential_made_with_another_secret_is_refused(coturn):
    username = turn_username("participant-1", int(time.time()) + 600)
    with pytest.raises(stun.TransactionFailed) as info:
        await _allocate(coturn, username, turn_credential("not-the-static-auth-secret", username), "tcp")
    assert info.value.response.attributes["ERROR-CODE"][0] == 401


async def _join(app, room: str, name: str):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{app.url}/api/token", json={"roomId": room, "displayName": name}) as resp:
            token = (await resp.json())["token"]
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(app.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    signal = SocketIOSignal(sio)
    return sio, signal, await signal.call("join-room", {"roomId": room, "displayName": name})


async def test_relay_only_pymediasoup_clients_decode_each_other_through_coturn(coturn, caplog):
    caplog.set_level(logging.DEBUG)  # signaling, rooms and the media worker, all in this process
    settings = Settings(turn=TurnSettings(urls=tuple(coturn.urls()), secret=SECRET))
    app = await start_standalone(settings, num_workers=1, port=0)
    sios, peers = [], []
    try:
        sio_a, sig_a, joined_a = await _join(app, "library", "Ada")
        sio_b, sig_b, joined_b = await _join(app, "library", "Bob")
        sios += [sio_a, sio_b]
        for joined in (joined_a, joined_b):
            [server] = joined["iceServers"]
            assert server["urls"] == coturn.urls()
            assert server["username"].endswith(":" + joined["participantId"])
        peer_a = Peer(sig_a, video=True, ice_servers=joined_a["iceServers"], relay_only=True)
        peer_b = Peer(sig_b, video=True, ice_servers=joined_b["iceServers"], relay_only=True)
        peers += [peer_a, peer_b]
        await peer_a.load(joined_a["rtpCapabilities"])
        await peer_b.load(joined_b["rtpCapabilities"])
        ids_a = await peer_a.produce(video=True)
        ids_b = await peer_b.produce(video=True)
        b_sees_a = await peer_b.consume(ids_a["video"])
        a_sees_b = await peer_a.consume(ids_b["video"])
        assert await b_sees_a.wait_frames(10, timeout=30) >= 10
        assert await a_sees_b.wait_frames(10, timeout=30) >= 10
        # what the media worker sees: every transport's selected tuple is one of coturn's relays
        [worker] = app.workers
        tuples = [t.get_stats()["iceSelectedTuple"] for t in worker.transports.values()]
        assert len(tuples) == 4 and all(t is not None for t in tuples), tuples
        assert all(t["remoteIp"] == "127.0.0.1" and coturn.is_relay_port(t["remotePort"]) for t in tuples), (
            tuples, (coturn.relay_min, coturn.relay_max))
        logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
        assert "studyrooms.room" in logged  # the room's own log lines were captured, and none has:
        for secret in (SECRET, joined_a["iceServers"][0]["credential"], joined_b["iceServers"][0]["credential"]):
            assert secret not in logged
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        for sio in sios:
            if sio.connected:
                await sio.disconnect()
        await app.stop()
