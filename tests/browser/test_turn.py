"""TURN end to end: `studyrooms serve` (plain environment + STUDYROOMS_TURN_*), real coturn (Debian's
package, on loopback ports, tests/support/coturn.py) and real Chromium with the page's ?relay=1.

1. The served join-room ack carries working credentials: coturn allocates with them and relays
   data; a rejoin gets new ones; they appear nowhere in the server's (debug) log nor in the Ray
   session's log files.
2. Two pages with iceTransportPolicy "relay" decode each other's video over TURN/UDP; getStats
   shows a selected candidate pair whose local candidate is a relay one, relayed over UDP.
3. coturn comes back without its UDP listener (as seen from a network that lets only TCP through):
   two new pages decode each other over TURN/TCP (relayProtocol "tcp").
"""

from __future__ import annotations

import asyncio
import json
import time

from pathlib import Path

import aiohttp
import psutil
import pytest
import socketio
from aioice import turn
from playwright.async_api import async_playwright

from browser.test_study_room import JOIN_TIMEOUT_S, VIEWPORT, Person, run_with_diagnostics, wait_receiving
from support.coturn import free_tcp_udp_port, start_coturn
from support.peer import SocketIOSignal

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SECRET = "browser-turn-static-auth-secret"
TTL_S = 6 * 3600  # the default


class CoturnBox:
    """One coturn at a fixed port, restartable with other listeners (UDP only / TCP only)."""

    def __init__(self, workdir, port: int) -> None:
        self.workdir, self.port, self.current, self.runs = workdir, port, None, 0

    def ensure(self, *, udp: bool, tcp: bool):
        cur = self.current
        if cur is not None and cur.proc.poll() is None and (cur.udp, cur.tcp) == (udp, tcp):
            return cur
        self.stop()
        self.runs += 1
        self.current = start_coturn(self.workdir / f"run{self.runs}", SECRET, udp=udp, tcp=tcp, port=self.port)
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None


@pytest.fixture(scope="module")
def turn_port() -> int:
    return free_tcp_udp_port()


@pytest.fixture(scope="module")
def coturn(tmp_path_factory, turn_port):
    box = CoturnBox(tmp_path_factory.mktemp("coturn"), turn_port)
    yield box
    box.stop()


@pytest.fixture(scope="module")
def server_env(turn_port) -> dict[str, str]:
    urls = f"turn:127.0.0.1:{turn_port}?transport=udp,turn:127.0.0.1:{turn_port}?transport=tcp"
    return {"STUDYROOMS_TURN_URLS": urls, "STUDYROOMS_TURN_SECRET": SECRET, "STUDYROOMS_LOG_LEVEL": "DEBUG"}


async def _join(base_url: str, room: str, name: str):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/api/token", json={"roomId": room, "displayName": name}) as resp:
            token = (await resp.json())["token"]
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(base_url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    signal = SocketIOSignal(sio)
    return sio, signal, await signal.call("join-room", {"roomId": room, "displayName": name})


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))


async def _relays(port: int, server: dict) -> bool:
    """Allocates on coturn with the ack's credentials and relays one datagram to a local peer."""
    loop = asyncio.get_running_loop()
    peer, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
    relay, _ = await asyncio.wait_for(turn.create_turn_endpoint(
        asyncio.DatagramProtocol, server_addr=("127.0.0.1", port), username=server["username"],
        password=server["credential"], transport="udp"), timeout=10)
    try:
        relay.sendto(b"through coturn", peer.get_extra_info("sockname"))
        data, addr = await asyncio.wait_for(inbox.queue.get(), timeout=5)
        return data == b"through coturn" and addr == relay.get_extra_info("sockname")
    finally:
        relay.close()
        peer.close()


@pytest.mark.timeout(240)
async def test_served_join_ack_carries_working_turn_credentials(server, coturn, turn_port):
    coturn.ensure(udp=True, tcp=False)
    sio, signal, joined = await _join(server.base_url, "turn-ack", "Ada")
    try:
        [ice] = joined["iceServers"]
        assert ice["urls"] == [f"turn:127.0.0.1:{turn_port}?transport=udp",
                               f"turn:127.0.0.1:{turn_port}?transport=tcp"]
        expiry, participant = ice["username"].split(":", 1)
        assert participant == joined["participantId"]
        assert abs(int(expiry) - (time.time() + TTL_S)) < 120, ice["username"]
        assert "iceTransportPolicy" not in joined  # the operator did not force relaying
        assert await _relays(turn_port, ice)
        await signal.call("leave-room", {})
        rejoined = await signal.call("join-room", {"roomId": "turn-ack", "displayName": "Ada"})
        [again] = rejoined["iceServers"]
        assert rejoined["participantId"] != joined["participantId"]
        assert again["username"].endswith(":" + rejoined["participantId"]) and again["credential"] != ice["credential"]
        assert await _relays(turn_port, again)
    finally:
        await sio.disconnect()
    log = server.log_path.read_text(errors="replace")
    assert f"TURN: turn:127.0.0.1:{turn_port}?transport=udp, turn:127.0.0.1:{turn_port}?transport=tcp; " \
           f"credentials valid {TTL_S} s" in log
    assert "DEBUG" in log  # the most verbose level, and still:
    actors = _ray_session_logs(server)  # the actors' stdout/stderr and Ray's own logs
    for secret in (SECRET, ice["credential"], again["credential"]):
        assert secret not in log and secret not in actors
    # (the actors' debug-level logging is checked in one process: tests/integration/test_turn_coturn.py)


def _ray_session_logs(server) -> str:
    """Every log file of the server's Ray session (its RAY_TMPDIR, private to this server)."""
    ray_tmp = Path(psutil.Process(server.proc.pid).environ()["RAY_TMPDIR"])
    files = [f for f in ray_tmp.glob("**/logs/*") if f.is_file() and f.suffix in (".out", ".err", ".log")]
    assert any(f.name.startswith("worker-") for f in files), files  # the actors' output files
    return "\n".join(f.read_text(errors="replace") for f in files)


async def _open(browser, base_url: str, name: str) -> Person:
    context = await browser.new_context(viewport=VIEWPORT)
    person = Person(name, await context.new_page())
    await person.page.goto(base_url + "/?relay=1")
    await person.page.wait_for_function("() => !!window.studyrooms", timeout=15000)
    return person


async def _pair_decodes_over_relay(browser, base_url: str, room: str, names: tuple[str, str], relay_protocol: str,
                                   people: list[Person]) -> None:
    a, b = [await _open(browser, base_url, n) for n in names]
    people += [a, b]
    for p in (a, b):
        await p.join(room=room)
        await p.wait_joined_and_publishing()
    await wait_receiving(a, [(b.participant_id, "camera")], JOIN_TIMEOUT_S)
    await wait_receiving(b, [(a.participant_id, "camera")], JOIN_TIMEOUT_S)
    for p in (a, b):
        state = await p.state()
        assert state["transports"]["iceTransportPolicy"] == "relay" and state["transports"]["turn"], state["transports"]
        paths = await p.page.evaluate("() => window.studyrooms.icePaths()")
        print(f"{p.name}: {json.dumps(paths)}")
        for direction in ("send", "recv"):
            path = paths[direction]
            assert path["selected"] and path["localType"] == "relay", (p.name, direction, path)
            assert path["relayProtocol"] == relay_protocol, (p.name, direction, path)
            assert path["remoteType"] == "host" and path["bytesReceived"] > 0, (p.name, direction, path)
    for p in (a, b):
        await p.page.context.close()
        people.remove(p)


@pytest.mark.timeout(300)
async def test_relay_only_pages_decode_each_other_over_turn_udp_and_tcp(server, coturn, chromium_path, chromium_args):
    people: list[Person] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, headless=True, args=chromium_args)
        try:
            async def scenario():
                coturn.ensure(udp=True, tcp=False)
                await _pair_decodes_over_relay(browser, server.base_url, "turn-udp", ("Uma", "Ulf"), "udp", people)
                coturn.ensure(udp=False, tcp=True)  # the TURN server is reachable over TCP only now
                await _pair_decodes_over_relay(browser, server.base_url, "turn-tcp", ("Tia", "Tom"), "tcp", people)

            await run_with_diagnostics(people, server, scenario)
        finally:
            if coturn.current is not None:
                print(f"===== coturn log (tail) =====\n{coturn.current.log(40)}")
            await browser.close()
