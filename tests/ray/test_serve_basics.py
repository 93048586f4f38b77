"""What a newcomer and an operator hit first, through ``make serve`` / ``studyrooms serve`` as a user
runs it: a subprocess with a clean environment (no RAY_* variables at all), JSON logs.

* every listening socket of the server's whole process tree (driver, GCS, raylet, agents, actors)
  is on loopback;
* a two-person call with no scrape while it runs, then one scrape: ``/metrics`` counts at least
  the packets the clients themselves sent and received, and the signaling counter includes a
  validation failure and a refused connection;
* the server's own output has the actors' INFO lines (a join, a leave, a refusal) as JSON with the
  room and participant ids;
* the token's name is what the others see; errors read as words (no pydantic or JWT text);
* start-up prints one progress line per phase, then the URL.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import pathlib
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import aiohttp
import psutil
import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families

peer_mod = pytest.importorskip("support.peer")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BIN = pathlib.Path(sys.executable).with_name("studyrooms")
REPO = pathlib.Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


class Server:
    """A running ``studyrooms serve``; its stderr is collected by a reader thread."""

    def __init__(self, proc: subprocess.Popen, url: str, tmp: str) -> None:
        self.proc, self.url, self.tmp = proc, url, tmp
        self.stdout_first = ""
        self.err_lines: list[str] = []
        # a reader thread: select() on the pipe cannot see lines already in Python's read buffer
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.err_lines.append(line.rstrip("\n"))

    def read_err(self, until: float = 0.0) -> list[str]:
        """The stderr lines so far, after waiting until ``until`` (monotonic) for more."""
        delay = until - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return self.err_lines

    def json_logs(self) -> list[dict]:
        out = []
        for line in self.err_lines:
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out


def _clean_env(tmp: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "STUDYROOMS_")) and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    # Ray's session dir under this test's temp dir (TMPDIR, not a RAY_* variable)
    env.update(TMPDIR=tmp, PYTHONUNBUFFERED="1", STUDYROOMS_LOG_FORMAT="json")
    return env


@pytest.fixture(scope="module")
def server():
    tmp = tempfile.mkdtemp(prefix="sr-b-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _clean_env(tmp)
    assert not any(k.startswith("RAY_") for k in env)
    args = ["--port", str(port), "--workers", "1"]
    if _make_serve_usable(env):  # the user's command, with its phase lines (installed: no reinstall)
        cmd = ["make", "-s", "--no-print-directory", "serve", "ARGS=" + " ".join(args)]
    else:
        cmd = [str(BIN), "serve", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    srv = Server(proc, f"http://127.0.0.1:{port}/", tmp)
    srv.via_make = cmd[0] == "make"
    print("server command:", " ".join(cmd))
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not srv.stdout_first:
            if sel.select(timeout=0.5):
                srv.stdout_first = proc.stdout.readline()
            if proc.poll() is not None:
                break
        if not srv.stdout_first:
            srv.read_err(time.monotonic() + 1)
            pytest.fail("no URL line; stderr:\n" + "\n".join(srv.err_lines[-40:]))
        srv.read_err(time.monotonic() + 0.5)
        yield srv
    finally:
        if proc.poll() is None:
            target = _server_process(proc) if srv.via_make else proc
            (target or proc).send_signal(signal.SIGTERM)  # make waits for the server and exits with it
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def _make_serve_usable(env: dict) -> bool:
    """``make serve`` runs this interpreter's venv and would not reinstall anything."""
    if shutil.which("make") is None or pathlib.Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        return False
    up_to_date = subprocess.run(["make", "-q", "setup"], cwd=REPO, env=env, capture_output=True, timeout=30)
    return up_to_date.returncode == 0


def _server_process(proc: subprocess.Popen) -> psutil.Process | None:
    """The `studyrooms serve` process make started."""
    for child in psutil.Process(proc.pid).children():
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "serve" in cmd and any(part.endswith("/studyrooms") for part in cmd[:2]):
            return child
    return None


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def test_start_up_prints_its_phases_then_the_url(server):
    assert server.stdout_first.startswith("StudyRooms serving on " + server.url), server.stdout_first
    ours = [line for line in server.err_lines if line.startswith("studyrooms: ")]
    if server.via_make:  # make serve: the web page is built first (packages were installed already)
        assert ours[0] == "studyrooms: building the web page (log: web/build.log)...", ours
        ours = ours[1:]
    assert ours[:3] == ["studyrooms: starting a local Ray (loopback only)...",
                        "studyrooms: starting the actors (1 media workers, room hosts, signaling)...",
                        f"studyrooms: ready: open {server.url} in a browser (Ctrl-C stops the server)"], ours


def test_every_listening_socket_of_the_process_tree_is_on_loopback(server):
    procs = _tree(server.proc.pid)
    names = " ".join(p.name() for p in procs)
    assert "gcs_server" in names and "raylet" in names, names  # the whole local Ray is in the tree
    listening = []
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in conns:
            tcp_listen = c.type == socket.SOCK_STREAM and c.status == psutil.CONN_LISTEN
            udp_bound = c.type == socket.SOCK_DGRAM and not c.raddr
            if tcp_listen or udp_bound:
                listening.append((proc.name(), c.laddr.ip, c.laddr.port))
    assert len(listening) >= 6, listening  # GCS, raylet, agents, actors, the HTTP port, media UDP
    exposed = [entry for entry in listening if entry[1] not in LOOPBACK]
    assert exposed == [], f"listening beyond loopback: {exposed}"
    assert any(port == int(server.url.rsplit(":", 1)[1].strip("/")) for _, _, port in listening)


async def _http(server, method: str, path: str, body=None) -> tuple[int, object]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        async with session.request(method, server.url + path, json=body) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text


async def _connect(server, token: str) -> socketio.AsyncClient:
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(server.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    return sio


def _samples(text: str) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_")))
            out[(s.name, labels)] = out.get((s.name, labels), 0) + s.value
    return out


async def _client_counts(peer) -> tuple[int, int]:
    """(RTP packets sent, RTP packets received) by this client, from its own WebRTC stats."""
    sent = received = 0
    for transport in (peer.send_transport, peer.recv_transport):
        if transport is None:
            continue
        report = await transport.getStats()  # pymediasoup hands back the RTCPeerConnection.getStats() coroutine
        if asyncio.iscoroutine(report):
            report = await report
        for stats in report.values():
            if stats.type == "outbound-rtp":
                sent += stats.packetsSent
            elif stats.type == "inbound-rtp":
                received += stats.packetsReceived
    return sent, received


@pytest.mark.timeout(240)
async def test_a_call_without_scrapes_is_counted_logged_and_named_by_tokens(server, aioice_loopback):
    room = f"basics-{uuid.uuid4().hex[:6]}"
    # words, not library text: a room id with a dot (the lobby once allowed it), a garbage token
    status, body = await _http(server, "POST", "api/token", {"roomId": "maths.101", "displayName": "Ada"})
    assert status == 400 and body["error"]["message"].startswith("roomId: use 1-64 letters"), body
    refused = socketio.AsyncClient(reconnection=False)
    errors: list = []
    refused.on("connect_error", lambda data: errors.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(server.url, auth={"token": "not.a.token"}, transports=["websocket"], wait_timeout=10)
    assert errors and errors[0]["code"] == "unauthorized"
    assert errors[0]["message"] == "invalid token: not a well-formed signed token", errors

    # Amy's token says "Amy" (the lobby's name): she cannot appear as someone else
    _, amy_token = await _http(server, "POST", "api/token", {"roomId": room, "displayName": "Amy"})
    _, bob_token = await _http(server, "POST", "api/token", {"roomId": room, "displayName": "Bob"})
    amy_sio = await _connect(server, amy_token["token"])
    bob_sio = await _connect(server, bob_token["token"])
    amy = bob = None
    try:
        amy_sig = peer_mod.SocketIOSignal(amy_sio, timeout=30)
        bob_sig = peer_mod.SocketIOSignal(bob_sio, timeout=30)
        bad = await amy_sio.call("join-room", {"roomId": "maths.101", "displayName": "Amy"}, timeout=20)
        assert bad["ok"] is False and bad["error"]["code"] == "invalid-request"
        assert "String should" not in bad["error"]["message"] and "letters, digits" in bad["error"]["message"]
        amy_ack = await amy_sig.call("join-room", {"roomId": room, "displayName": "Teacher (official)"})
        bob_ack = await bob_sig.call("join-room", {"roomId": room, "displayName": "Bob"})
        assert bob_ack["participants"] == [{"participantId": amy_ack["participantId"], "displayName": "Amy"}]

        amy = peer_mod.Peer(amy_sig, video=True, audio=True)
        bob = peer_mod.Peer(bob_sig, video=True, audio=True)
        await amy.load(amy_ack["rtpCapabilities"])
        await bob.load(bob_ack["rtpCapabilities"])
        amy_ids = await asyncio.wait_for(amy.produce(video=True, audio=True), 30)
        bob_ids = await asyncio.wait_for(bob.produce(video=True, audio=True), 30)
        counters = [await asyncio.wait_for(bob.consume(amy_ids["video"]), 30),
                    await asyncio.wait_for(bob.consume(amy_ids["audio"]), 30),
                    await asyncio.wait_for(amy.consume(bob_ids["video"]), 30),
                    await asyncio.wait_for(amy.consume(bob_ids["audio"]), 30)]
        for counter in counters:
            assert await counter.wait_frames(10, timeout=45) >= 10
        await asyncio.sleep(1.0)
        # what the clients say they sent and received, just before they leave (no scrape so far)
        sent = received = 0
        for peer in (amy, bob):
            s, r = await _client_counts(peer)
            sent, received = sent + s, received + r
        assert sent > 100 and received > 100
    finally:
        for peer in (amy, bob):
            if peer is not None:
                await peer.close()
        for sio in (amy_sio, bob_sio):
            if sio.connected:
                await sio.disconnect()

    # the transports are closed; wait until the room is gone, then the first and only scrape
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, rooms = await _http(server, "GET", "api/rooms")
        if not any(r["roomId"] == room for r in rooms["rooms"]):
            break
        await asyncio.sleep(0.2)
    status, text = await _http(server, "GET", "metrics")
    assert status == 200
    m = _samples(text)
    w = ("worker", "worker-0")
    packets_in = m[("studyrooms_rtp_packets_total", (("direction", "in"), w))]
    packets_out = m[("studyrooms_rtp_packets_total", (("direction", "out"), w))]
    print(f"clients sent {sent} / received {received} RTP packets; /metrics: in {packets_in:.0f}, out {packets_out:.0f}")
    assert packets_out >= received  # every packet a client received, the server sent
    assert packets_in >= sent  # loopback: every packet a client sent reached the server
    assert m[("studyrooms_transports", (w,))] == 0
    requests = {labels: v for (name, labels), v in m.items() if name == "studyrooms_signaling_requests_total"}
    assert requests.get((("event", "join-room"), ("outcome", "invalid-request")), 0) >= 1, requests
    assert requests.get((("event", "connect"), ("outcome", "unauthorized")), 0) >= 1, requests
    assert requests.get((("event", "connect"), ("outcome", "ok")), 0) >= 2, requests

    # the server's own output: the actors' INFO lines, JSON, with the room and participant ids
    deadline = time.monotonic() + 15
    amy_id = amy_ack["participantId"]
    while time.monotonic() < deadline:
        logs = server.json_logs()
        joined = [r for r in logs if r.get("room_id") == room and f"{amy_id} joined" in r["msg"]]
        left = [r for r in logs if r.get("room_id") == room and r.get("participant_id") == amy_id and "left" in r["msg"]]
        refusals = [r for r in logs if "refused" in r["msg"] and r["logger"] == "studyrooms.signaling"]
        if joined and left and refusals:
            break
        server.read_err(time.monotonic() + 0.5)
    assert joined and left and refusals, "\n".join(server.err_lines[-30:])
    assert joined[0]["level"] == "INFO" and joined[0]["pid"] != server.proc.pid  # from the room host actor
    # ours are JSON or the CLI's own lines; Ray's own (its Python warnings name Ray, its C++ core log
    # lines read "[<date> <level> <pid> <tid>] file.cc:<line>: ...") are not ours to format
    ray_core = re.compile(r"^\[\d{4}-\d\d-\d\d [^\]]*\] \S+\.(cc|h):\d+")
    assert all(line.startswith(("{", "studyrooms: ", "StudyRooms ")) or "Ray" in line or ray_core.match(line)
               for line in server.err_lines), [ln for ln in server.err_lines if not ln.startswith("{")]


async def test_api_stats_cpu_is_a_fraction_of_one_core_like_prometheus(server):
    status, stats = await _http(server, "GET", "api/stats")
    assert status == 200 and stats["workers"], stats
    status, text = await _http(server, "GET", "metrics")
    prom = _samples(text)[("studyrooms_worker_cpu_utilization", (("worker", "worker-0"),))]
    for worker in stats["workers"]:
        assert isinstance(worker["cpu"], float), worker  # one number, not a dict nor a percentage
        assert 0.0 <= worker["cpu"] <= (os.cpu_count() or 1)
    assert 0.0 <= prom <= (os.cpu_count() or 1)
