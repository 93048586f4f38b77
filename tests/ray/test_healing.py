"""Self-healing with real kills (``os.kill(pid, SIGKILL)`` on the actor's process) through the Ray app.

One app and one set of pymediasoup clients for the whole module (an app start costs ~10 s): room A
(Amy, Bob, Cat) and room B (Dan, Eve) are in a call, each client sending VP8 and decoding the
others. The clients are :class:`support.healing.HealingClient`: they do what docs/protocol.md asks
of a client (media-reset, room-reset, reconnection) with no user action. The tests run in order,
each on the state the previous one left:

1. the media worker of room A is killed: every A peer decodes every other again within 5 s, room B
   never stops, the directory noticed within 2 s, /healthz said degraded meanwhile, the worker runs
   again (restarted by Ray);
2. room A's room host is killed: room-reset, every A peer decodes again within 10 s, B never stops;
3. the directory is killed: media never stops, it comes back with the workers, hosts and rooms;
4. the signaling actor is killed: it listens on the same port again, every client reconnects with
   its token and resumes its session (same participant, its media untouched): the decoded frames of
   both rooms never stop, and every socket is bound to its participant again;
5. a client gone for longer than the resume grace is removed (the others are told) and, coming
   back with its old resume key, joins afresh and is decoded again;
6. crash loop: the worker killed in 1 dies again with no restart left: given up with an ERROR log
   line naming it, its rooms move to the other worker;
and at the end everyone leaves and no worker holds any object, no room host any socket.

Kill -> first decoded frame per peer is printed (``-s``) and quoted in the README.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import aiohttp
import pytest
import pytest_asyncio

from actors.app import start_app
from actors.hop import call
from studyrooms.config import Settings

healing = pytest.importorskip("support.healing")

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(400)]

ROOM_A, ROOM_B = f"heal-a-{uuid.uuid4().hex[:4]}", f"heal-b-{uuid.uuid4().hex[:4]}"
FIGURES: dict[str, dict[str, float]] = {}
RESUME_GRACE_S = 8.0  # long enough for a restarted signaling actor, short for the expiry test


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(ray_session):
    settings = Settings(server={"host": "127.0.0.1", "port": 0, "num_workers": 2, "room_hosts": 2,
                                "worker_max_restarts": 1},
                        rooms={"empty_room_timeout_s": 0.2, "resume_grace_s": RESUME_GRACE_S})
    handle = await start_app(settings, prefix=f"heal-{uuid.uuid4().hex[:6]}", health_interval_s=0.5)
    yield handle
    await handle.stop()
    if FIGURES:
        print("\nkill -> first decoded frame of every other person, per peer (s):")
        for what, per_peer in FIGURES.items():
            print(f"  {what}: " + ", ".join(f"{k} {v:.2f}" for k, v in per_peer.items()))


async def http(app, method, path, body=None, timeout=10):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.request(method, app.url + path, json=body) as resp:
            return resp.status, await resp.json()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def call_(app):
    """Room A: Amy, Bob, Cat; room B: Dan, Eve; everyone decoding everyone in their room."""
    clients: dict[str, healing.HealingClient] = {}
    for room, names in ((ROOM_A, ("Amy", "Bob", "Cat")), (ROOM_B, ("Dan", "Eve"))):
        for name in names:
            status, body = await http(app, "POST", "api/token", {"roomId": room, "displayName": name})
            assert status == 200, body
            client = healing.HealingClient(app.url, body["token"], room, name)
            await client.start()
            await client.wait_joined()
            clients[name] = client
    await wait_all_decoding(clients, since=0.0, new_only=False, timeout=40)
    yield clients
    for client in list(clients.values()):
        await client.close()


def rooms_of(clients):
    out: dict[str, list] = {}
    for c in clients.values():
        out.setdefault(c.room, []).append(c)
    return out


async def wait_all_decoding(clients, *, since: float, new_only: bool, timeout: float,
                            only_room: str | None = None) -> dict[str, float]:
    """Wait until every client decoded every other person of its room after ``since``; returns,
    per client, the time from ``since`` to its last first-frame (when it saw everyone again)."""
    deadline = time.monotonic() + timeout
    result: dict[str, float] = {}
    while True:
        missing = []
        for room, members in rooms_of(clients).items():
            if only_room is not None and room != only_room:
                continue
            for c in members:
                firsts = [c.first_frame_after(since, o.name, new_only=new_only) for o in members if o is not c]
                if any(f is None for f in firsts):
                    missing.append(c.name)
                else:
                    result[c.name] = max(firsts) - since if since else 0.0
        if not missing:
            return result
        if time.monotonic() > deadline:
            details = {c.name: (c.errors[-3:], [e for _, e in c.events[-6:]]) for c in clients.values()
                       if c.name in missing}
            raise AssertionError(f"no decoded video again at {missing} within {timeout} s: {details}")
        await asyncio.sleep(0.05)


def assert_never_stopped(clients, room: str, since: float, until: float, max_gap_s: float = 1.0) -> None:
    """Every member of ``room`` kept decoding every other (no gap over ``max_gap_s``) and nobody
    there got new consumers (no reset reached the room)."""
    members = rooms_of(clients)[room]
    for c in members:
        assert c.consumers_created_after(since) == 0, f"{c.name} in {room} was reset"
        for o in members:
            if o is c:
                continue
            times = [t for t in c.frame_times(o.name) if since - 0.5 <= t <= until]
            assert times, f"{c.name} decoded nothing of {o.name}"
            gaps = [b - a for a, b in zip([since - 0.5, *times], [*times, until])]
            assert max(gaps) < max_gap_s, f"{c.name} <- {o.name}: a {max(gaps):.2f} s gap in room {room}"


async def actor_state(handle) -> tuple[str, int, int]:
    """(State, NumRestarts, Pid) from the GCS."""
    from ray._private import state

    info = await asyncio.to_thread(state.actors, handle._actor_id.hex())
    return info["State"], info["NumRestarts"], info["Pid"]


async def kill(handle) -> float:
    _, _, pid = await actor_state(handle)
    assert pid and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


async def wait_alive(handle, restarts: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, n, pid = await actor_state(handle)
        if state == "ALIVE" and n >= restarts:
            return pid
        await asyncio.sleep(0.1)
    raise AssertionError(f"actor not ALIVE with {restarts} restart(s): {await actor_state(handle)}")


async def dump(app) -> dict:
    return await call(app.directory.dump.remote(), what="directory", timeout_s=15)


async def totals(app) -> dict:
    out = {"routerCount": 0, "transportCount": 0, "producerCount": 0, "consumerCount": 0}
    for wid, handle in app.workers.items():
        if (await actor_state(handle))[0] == "DEAD":
            continue
        load = await call(handle.load.remote(), what=wid, timeout_s=10)
        for key in out:
            out[key] += load[key]
    return out


async def test_media_worker_killed(app, call_):
    clients = call_
    d = await dump(app)
    worker_a = next(iter(d["roomRouters"][ROOM_A]))
    assert set(d["roomRouters"][ROOM_B]) != {worker_a}, "the rooms should start on different workers"
    handle = app.workers[worker_a]
    old_pid = (await actor_state(handle))[2]
    t_kill = await kill(handle)
    degraded = None
    while time.monotonic() - t_kill < 3 and degraded is None:  # /healthz tells while it restarts
        status, body = await http(app, "GET", "healthz")
        if status == 503:
            degraded = body
        await asyncio.sleep(0.05)
    figures = await wait_all_decoding(clients, since=t_kill, new_only=True, timeout=5.0, only_room=ROOM_A)
    FIGURES["media worker"] = figures
    # the directory noticed within 2 s: the media-reset reached every A peer by then
    for c in rooms_of(clients)[ROOM_A]:
        resets = [t for t, e in c.events if e == "media-reset" and t >= t_kill]
        assert resets and resets[0] - t_kill < 2.0, (c.name, resets)
        assert c.joins == 1  # membership kept: no re-join
    assert_never_stopped(clients, ROOM_B, t_kill, time.monotonic())
    assert degraded is not None and degraded["status"] == "degraded" and worker_a in degraded["reason"], degraded
    # the killed worker runs again (a fresh Worker) and /healthz is ok once it is back
    new_pid = await wait_alive(handle, 1)
    assert new_pid != old_pid
    info = await call(handle.info.remote(), what="worker", timeout_s=10)
    assert info["restarted"] and info["started"] and info["pid"] == new_pid
    deadline = time.monotonic() + 10
    while (status := (await http(app, "GET", "healthz"))[0]) != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert status == 200
    healing_ = await call(app.directory.healing.remote(), what="directory")
    assert healing_["restarts"]["media-worker"] == 1 and healing_["mediaResets"] == 3, healing_


async def test_room_host_killed(app, call_):
    clients = call_
    d = await dump(app)
    host_a, host_b = d["rooms"][ROOM_A], d["rooms"][ROOM_B]
    assert host_a != host_b, "the rooms should start on different room hosts"
    handle = app.hosts[host_a]
    t_kill = await kill(handle)
    figures = await wait_all_decoding(clients, since=t_kill, new_only=True, timeout=10.0, only_room=ROOM_A)
    FIGURES["room host"] = figures
    for c in rooms_of(clients)[ROOM_A]:
        assert any(e == "join" and t >= t_kill for t, e in c.events), f"{c.name} got no room-reset"
    assert_never_stopped(clients, ROOM_B, t_kill, time.monotonic())
    await wait_alive(handle, 1)
    assert await call(handle.ping.remote(), what="room host") == host_a
    healing_ = await call(app.directory.healing.remote(), what="directory")
    assert healing_["restarts"]["room-host"] == 1 and healing_["roomResets"] == 3, healing_


async def test_directory_killed(app, call_):
    clients = call_
    before = await dump(app)
    t_kill = await kill(app.directory)
    await wait_alive(app.directory, 1)
    # media never needed the directory: it kept flowing in both rooms
    await asyncio.sleep(1.5)
    for room in (ROOM_A, ROOM_B):
        assert_never_stopped(clients, room, t_kill, time.monotonic())
    FIGURES["directory"] = {c.name: 0.0 for c in clients.values()}
    after = await dump(app)  # rebuilt from the live workers and room hosts
    assert set(after["workers"]) == set(before["workers"]) and set(after["hosts"]) == set(before["hosts"])
    assert after["rooms"] == before["rooms"]
    status, body = await http(app, "GET", "healthz")
    assert status == 200 and body["status"] == "ok", body
    status, rooms = await http(app, "GET", "api/rooms")
    assert {r["roomId"] for r in rooms["rooms"]} == {ROOM_A, ROOM_B}
    # placement works again: a room on the restarted directory gets a router (and is closed after)
    worker = await call(app.directory.place_router.remote("probe-room"), what="directory")
    assert worker in app.workers
    await call(app.directory.release_router.remote("probe-room", worker), what="directory")
    healing_ = await call(app.directory.healing.remote(), what="directory")
    assert healing_["restarts"]["directory"] == 1, healing_


async def host_dumps(app) -> list[dict]:
    return [await call(h.dump.remote(), what=hid, timeout_s=15) for hid, h in app.hosts.items()]


async def wait_bound(app, clients, timeout: float = 15) -> list[dict]:
    """Until every client's participant is bound to a socket again (none detached)."""
    deadline = time.monotonic() + timeout
    while True:
        dumps = await host_dumps(app)
        people = [p for d in dumps for r in d.get("rooms", []) for p in r["participants"]]
        if (sum(d.get("sockets", 0) for d in dumps) == len(clients) and len(people) == len(clients)
                and not any(p["detached"] for p in people)):
            return people
        if time.monotonic() > deadline:
            raise AssertionError(f"not every socket bound again: {dumps}")
        await asyncio.sleep(0.1)


async def test_signaling_killed(app, call_):
    """Every client resumes its session: no room's media stops (the largest gap in decoded frames
    is measured), the participants and their consumers are the same, every socket is bound again."""
    clients = call_
    before = {c.name: (c.participant_id, c.joins, len(c.received)) for c in clients.values()}
    t_kill = await kill(app.signaling)
    deadline = time.monotonic() + 15
    while any(c.resumes == 0 for c in clients.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    t_back = {c.name: next((t for t, e in c.events if e == "resumed" and t >= t_kill), None) for c in clients.values()}
    assert all(t_back.values()), ({c.name: (c.errors[-3:], [e for _, e in c.events[-6:]]) for c in clients.values()})
    for c in clients.values():  # reconnected (a new socket, same token) and resumed: nothing rebuilt
        assert any(e == "disconnect" and t >= t_kill for t, e in c.events), c.name
        assert c.sio.connected and c.participant_id == before[c.name][0]
        assert c.joins == before[c.name][1] + 1 and len(c.received) == before[c.name][2], c.name
    await asyncio.sleep(1.0)
    until = time.monotonic()
    gaps = {}
    for room in (ROOM_A, ROOM_B):
        members = rooms_of(clients)[room]
        for c in members:
            for o in members:
                if o is not c:
                    times = [t for t in c.frame_times(o.name) if t_kill - 0.5 <= t <= until]
                    gaps[f"{c.name}<-{o.name}"] = max(b - a for a, b in zip([t_kill - 0.5, *times], [*times, until]))
        assert_never_stopped(clients, room, t_kill, until)  # no gap over 1 s, no consumer re-created
    FIGURES["signaling (largest gap in decoded frames)"] = {"max": max(gaps.values())}
    FIGURES["signaling (kill -> resumed)"] = {n: t - t_kill for n, t in t_back.items()}
    status, body = await http(app, "GET", "healthz")  # the same URL: the same port
    assert status == 200, body
    await wait_alive(app.signaling, 1)
    people = await wait_bound(app, clients)
    assert {p["participantId"] for p in people} == {v[0] for v in before.values()}
    status, rooms = await http(app, "GET", "api/rooms")
    counts = {r["roomId"]: r["participantCount"] for r in rooms["rooms"]}
    assert counts == {ROOM_A: 3, ROOM_B: 2}, counts


async def test_resume_grace_expired(app, call_):
    """Eve's socket goes (no leave-room) and stays away past the grace: Dan is told she left and
    her media objects go; back with her old key she joins afresh and Dan decodes her again."""
    clients = call_
    eve, dan = clients["Eve"], clients["Dan"]
    old_id, old_key = eve.participant_id, eve.auth.get("resumeKey")
    left = []
    dan.sio.on("participant-left", lambda data: left.append((time.monotonic(), data.get("participantId"))))
    t_gone = time.monotonic()
    eve.sio.reconnection = False  # away for good (until reconnected below)
    await eve.sio.eio.ws.close()  # the connection drops (no leave-room, no socket.io disconnect): detached
    await asyncio.sleep(RESUME_GRACE_S / 2)
    assert not left
    assert_never_stopped({"Dan": dan, "Eve": eve}, ROOM_B, t_gone, time.monotonic())  # her media flows on
    deadline = time.monotonic() + RESUME_GRACE_S + 5
    while not left and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert [p for _, p in left] == [old_id]
    assert RESUME_GRACE_S - 0.5 <= left[0][0] - t_gone <= RESUME_GRACE_S + 3, left[0][0] - t_gone
    t_back = time.monotonic()
    deadline = time.monotonic() + 5
    while eve.sio.connected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await eve.sio.connect(app.url, auth=eve.auth, transports=["websocket"], wait_timeout=10)
    eve.sio.reconnection = True
    figures = await wait_all_decoding({"Dan": dan, "Eve": eve}, since=t_back, new_only=True, timeout=10.0)
    FIGURES["grace expired, back and rebuilt"] = figures
    assert eve.participant_id != old_id and eve.auth["resumeKey"] != old_key
    await wait_bound(app, clients)


async def test_crash_loop_worker_given_up(app, call_):
    """The worker killed in the first test dies again, with no restart left (worker_max_restarts=1):
    the directory gives up on it with a clear log line and its rooms move to the other worker."""
    clients = call_
    d = await dump(app)
    restarts = {w: (await actor_state(app.workers[w]))[1] for w in d["workers"]}
    flaky = next(w for w, n in restarts.items() if n == 1)
    other = next(w for w in app.workers if w != flaky)
    # if a room is on the other worker, that one dies once first: every room moves onto the flaky one
    on_other = [r for r in (ROOM_A, ROOM_B) if other in d["roomRouters"].get(r, {})]
    if on_other:
        t1 = await kill(app.workers[other])
        for room in on_other:
            await wait_all_decoding(clients, since=t1, new_only=True, timeout=8.0, only_room=room)
    d = await dump(app)
    assert {w for r in (ROOM_A, ROOM_B) for w in d["roomRouters"][r]} == {flaky}, d
    deadline = time.monotonic() + 10
    while other in (await dump(app))["down"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    # then the flaky one dies a second time: Ray gives up, so does the directory; rooms move
    t2 = await kill(app.workers[flaky])
    figures = await wait_all_decoding(clients, since=t2, new_only=True, timeout=8.0)
    FIGURES["crash loop (worker given up)"] = figures
    assert (await actor_state(app.workers[flaky]))[0] == "DEAD"
    d = await dump(app)
    assert d["givenUp"] == [flaky] and flaky not in d["workers"], d
    assert {w for r in (ROOM_A, ROOM_B) for w in d["roomRouters"][r]} == {other}, d
    healing_ = await call(app.directory.healing.remote(), what="directory")
    assert healing_["workersGivenUp"] == 1
    line = await directory_log_line(app, f"media worker {flaky} given up (crash loop")
    assert " ERROR " in f" {line} " and "its rooms move" in line, line
    status, body = await http(app, "GET", "healthz")
    assert status == 200 and body.get("givenUp") == [flaky], body
    status, metrics = await http_text(app, "metrics")
    assert status == 200
    lines = {line.split("{")[0]: line for line in metrics.splitlines() if line.startswith("studyrooms_")
             and 'kind="media-worker"' in line or line.startswith(("studyrooms_media_resets", "studyrooms_room_resets"))}
    assert float(lines["studyrooms_actor_restarts_total"].rsplit(" ", 1)[1]) >= 1, lines
    assert float(lines["studyrooms_media_resets_total"].rsplit(" ", 1)[1]) >= 3, lines
    assert float(lines["studyrooms_room_resets_total"].rsplit(" ", 1)[1]) >= 3, lines


async def directory_log_line(app, needle: str, timeout: float = 5) -> str:
    """The line of the directory process's log (Ray's worker-*-<pid>.err) containing ``needle``."""
    import glob

    import ray

    pid = (await actor_state(app.directory))[2]
    logs = ray._private.worker.global_worker.node.get_logs_dir_path()
    deadline = time.monotonic() + timeout
    while True:
        for path in glob.glob(os.path.join(logs, f"worker-*-{pid}.err")):
            with open(path, errors="replace") as f:
                for line in f:
                    if needle in line:
                        return line.strip()
        if time.monotonic() > deadline:
            raise AssertionError(f"no {needle!r} in the directory's log ({logs}, pid {pid})")
        await asyncio.sleep(0.2)


async def http_text(app, path):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async with session.get(app.url + path) as resp:
            return resp.status, await resp.text()


async def test_everyone_leaves_no_object_left(app, call_):
    for client in list(call_.values()):
        await client.close()
    call_.clear()
    deadline = time.monotonic() + 20
    while (t := await totals(app)) != dict.fromkeys(t, 0) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert t == {"routerCount": 0, "transportCount": 0, "producerCount": 0, "consumerCount": 0}
    for d in await host_dumps(app):  # nor any socket, detached participant or rate limiter
        assert (d.get("sockets", 0), d.get("detached", 0), d.get("rateLimiters", 0)) == (0, 0, 0), d
