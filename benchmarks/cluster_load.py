"""The seed's load on a simulated 3-node Ray cluster: N rooms x M participants joined at once.

    python -m benchmarks.cluster_load --rooms 10 --participants 50 --duration 30   # the seed's 10 x 50
    python -m benchmarks.cluster_load --smoke                                       # 2 x 5, 5 s (checks the tool)

What it starts (one machine, loopback): a ``ray.cluster_utils.Cluster`` with a head (``signaling``,
no CPU) and two nodes (``a``: ``signaling`` + ``--media-slots`` media slots, ``b``: media slots), so two
signaling fronts, one media worker per slot on each node and one room host per media node; then the
app (``actors.app.start_app``) with ``rooms.capacity = M`` and ``rooms.max_rooms = N``.

Every synthetic participant (benchmarks/loadgen: real Socket.IO, ICE, DTLS, SRTP) connects to a front
(alternating, so each room has participants on both fronts), joins, opens both transports, produces
(Opus audio, and VP8 with ``--video``) and consumes at most ``--max-consumed`` remote producers (a
client-side cap standing in for last-N). Participants of a room join ``--room-concurrency`` at a time
(default: all of them at once); rooms join concurrently. The load generators are Ray actors
(``--shards``) spread over the cluster: they share the machine's cores with the server.

Measured: time until every participant joined, join times p50/p95/p99 (connect -> join-room ack,
and connect -> transports up and producing), RSS and CPU of every actor process of the cluster
(idle, after the joins, end of the media window; memory per participant), errors (every failed
participant with its message), and what is left after everyone leaves (routers, transports,
producers, consumers on the workers; rooms listed; rooms reserved in the Directory). Writes the
load-run folder of benchmarks/loadgen/results.py plus ``cluster.json`` under ``--out``.

Heavy: on a shared 2-core machine run it under ``flock /work/wt/.heavy.lock``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cluster"
#: actor classes of the product and of the load generator (other ``ray::`` processes are Ray's own agents)
STUDYROOMS_ACTORS = {"Directory", "Signaling", "RoomHost", "MediaWorker", "LoadShard"}


def _percentiles(values: list[float]) -> dict:
    from .loadgen.results import quantile

    values = [v for v in values if v is not None]
    return {"n": len(values), "p50": _r(quantile(values, 0.5)), "p95": _r(quantile(values, 0.95)),
            "p99": _r(quantile(values, 0.99)), "max": _r(max(values) if values else None)}


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def actor_processes() -> dict[int, dict]:
    """Every Ray actor process this driver's cluster runs (descendants of this process titled
    ``ray::<Class>``): pid -> {kind, rss_bytes, cpu_s}."""
    import psutil

    out: dict[int, dict] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            title = (proc.cmdline() or [""])[0]
            if not title.startswith("ray::") or title.startswith("ray::IDLE"):
                continue
            times = proc.cpu_times()
            kind = title[5:].split(".")[0].split(" ")[0]
            out[proc.pid] = {"kind": kind if kind in STUDYROOMS_ACTORS else f"ray:{kind}",
                             "rss_bytes": proc.memory_info().rss, "cpu_s": times.user + times.system}
        except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
            continue
    return out


async def leftovers(app: Any, timeout_s: float) -> dict:
    """What the cluster still holds after everyone left (waits up to ``timeout_s`` for zero)."""
    import aiohttp

    from actors.hop import call

    deadline = time.monotonic() + timeout_s
    while True:
        loads = [await call(w.load.remote()) for w in app.workers.values()]
        state = {k: sum(int(load.get(k, 0)) for load in loads)
                 for k in ("routerCount", "transportCount", "producerCount", "consumerCount")}
        async with aiohttp.ClientSession() as http:
            async with http.get(app.url + "api/rooms") as resp:
                state["roomsListed"] = len((await resp.json())["rooms"])
        directory = await call(app.directory.dump.remote())
        state["roomsReserved"] = len(directory.get("reserved", {}))
        if not any(state.values()) or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.25)


async def run(args: argparse.Namespace) -> Path:
    import ray

    from actors.app import start_app
    from actors.hop import call
    from actors.loadtest import _benchmarks_path, shard_actor_class
    from studyrooms.config import Settings

    from .loadgen.results import worker_rows, write_results
    from .loadgen.runner import drive, plan, shard

    root = _benchmarks_path()
    settings = Settings(
        server={"host": "127.0.0.1", "port": 0},
        rooms={"capacity": args.participants, "max_rooms": args.rooms, "empty_room_timeout_s": 1.0},
    )
    app = await start_app(settings, prefix=f"cl-{uuid.uuid4().hex[:6]}", health_interval_s=2.0)
    shards_actors: list = []
    snapshots: dict[str, dict] = {}
    stamps: dict[str, float] = {}  # monotonic time of each snapshot
    try:
        urls = app.urls
        entries = plan(args.rooms, args.participants, screen_share=0, audio=True, video=args.video,
                       room_prefix="seed")
        for i, entry in enumerate(entries):
            entry["url"] = urls[i % len(urls)]
            entry["profile"].update(max_consumed=args.max_consumed or None, media_scale=args.media_scale,
                                    consume_in_parallel=not args.sequential_consume,
                                    audio_levels=True, talking=entry["index"] < args.talkers)
        groups = shard(entries, args.shards)
        Shard = shard_actor_class()
        shards_actors = [Shard.options(scheduling_strategy="SPREAD",
                                       runtime_env={"env_vars": {"PYTHONPATH": root}}).remote(i)
                         for i in range(len(groups))]
        await asyncio.gather(*(call(a.progress.remote(), what="load shard", timeout_s=120) for a in shards_actors))
        await asyncio.sleep(1.0)
        snapshots["idle"] = actor_processes()
        concurrency = args.room_concurrency or args.participants
        t_start = time.monotonic()
        all_joined: dict[str, float] = {}
        counts: dict[str, int] = {}

        async def start() -> list[dict]:
            return list(await asyncio.gather(*(
                call(a.run.remote(app.url, g, args.duration, None, 0.0, concurrency, args.join_timeout,
                                  args.consume_timeout),
                     what="load shard", timeout_s=args.duration * 3 + 120 + args.join_timeout + args.consume_timeout
                     + len(g) * 10) for a, g in zip(shards_actors, groups))))

        async def poll() -> dict:
            parts = await asyncio.gather(*(call(a.progress.remote(), what="load shard") for a in shards_actors))
            joined = sum(p.get("joined", 0) for p in parts)
            consumed = sum(p.get("consumed", 0) for p in parts)
            if joined >= len(entries) and "s" not in all_joined:
                all_joined["s"] = time.monotonic() - t_start
                snapshots["joined"] = actor_processes()
                stamps["joined"] = time.monotonic()
                counts["consumed_at_joined"] = consumed
            if consumed >= expected_consumers and "consumed" not in all_joined:
                all_joined["consumed"] = time.monotonic() - t_start
                snapshots["consumed"] = actor_processes()
                stamps["consumed"] = time.monotonic()
            return {"joined": joined, "consumed": consumed}

        # every participant consumes every other participant's producers (no client-side cap)
        kinds = 1 + int(args.video)
        expected_consumers = (len(entries) * min(args.participants - 1, args.max_consumed or 10**9) * kinds
                              if args.max_consumed == 0 or args.max_consumed >= kinds else 0)

        async def stop() -> None:
            snapshots["end"] = actor_processes()
            stamps["end"] = time.monotonic()
            await asyncio.gather(*(call(a.stop.remote(), what="load shard") for a in shards_actors))

        measured = await drive(app.url, len(entries), args.duration, start=start, progress=poll, stop=stop,
                               settled=lambda prog: prog["consumed"] >= expected_consumers,
                               settle_timeout_s=args.consume_timeout)
        batching = await batch_stats(app)
        closed_by_reason: dict[str, int] = {}  # transports the workers closed themselves (before leave)
        for worker in app.workers.values():
            stats = await call(worker.get_stats.remote(), what="media worker", timeout_s=30)
            for reason, n in (stats.get("transportsClosedByReason") or {}).items():
                closed_by_reason[reason] = closed_by_reason.get(reason, 0) + n
        left = await leftovers(app, args.leave_timeout)
        worker_info = {info.get("pid"): wid for wid, info in
                       zip(app.workers, await asyncio.gather(*(call(w.info.remote()) for w in app.workers.values())))}
        front_info = {}
        for route, front in app.fronts.items():
            try:
                front_info[(await call(front.info.remote()))["pid"]] = route
            except Exception:  # noqa: BLE001
                pass
    finally:
        for a in shards_actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        await app.stop()

    participants = [p for s in measured["shards"] for p in s["participants"]]
    ok = [p for p in participants if p.get("ok")]
    errors = [{"name": p["name"], "room": p["room"], "error": p.get("error")} for p in participants if not p.get("ok")]
    errors += [{"name": p["name"], "room": p["room"], "error": f"consume: {e}"}
               for p in participants for e in p.get("consume_errors") or []]
    consumed = [len(p.get("streams") or []) for p in ok]
    actors = []
    idle, joined, end = snapshots.get("idle", {}), snapshots.get("joined", {}), snapshots.get("end", {})
    settled = snapshots.get("consumed", {})
    window_span = stamps.get("end", 0) - stamps.get("consumed", stamps.get("joined", 0)) if "end" in stamps else 0
    consume_cpu = _consume_cpu(joined, settled, expected_consumers - counts.get("consumed_at_joined", 0))
    for pid, first in sorted(idle.items(), key=lambda kv: kv[1]["kind"]):
        j, e = joined.get(pid, {}), end.get(pid, {})
        c = settled.get(pid) or j  # the media window starts once every consumer exists
        name = worker_info.get(pid) or front_info.get(pid) or f"{first['kind']}-{pid}"
        growth = (c.get("rss_bytes", 0) - first["rss_bytes"]) if c else None  # joined and consuming
        actors.append({
            "actor": name, "kind": first["kind"], "pid": pid,
            "rss_idle_mb": _r(first["rss_bytes"] / 2**20, 1),
            "rss_joined_mb": _r(j["rss_bytes"] / 2**20, 1) if j else None,
            "rss_end_mb": _r(e["rss_bytes"] / 2**20, 1) if e else None,
            "rss_per_participant_kb": _r(growth / 1024 / len(ok), 1) if growth is not None and ok else None,
            "cpu_s_join_phase": _r(j["cpu_s"] - first["cpu_s"], 2) if j else None,
            "rss_consumed_mb": _r(settled[pid]["rss_bytes"] / 2**20, 1) if pid in settled else None,
            "cpu_s_consume_phase": _r(settled[pid]["cpu_s"] - j["cpu_s"], 2) if pid in settled and j else None,
            "cpu_s_media_window": _r(e["cpu_s"] - c["cpu_s"], 2) if c and e else None,
            # over the time from the window's start snapshot (everything consumed, else joined) to the end
            "cpu_pct_media_window": _r(100 * (e["cpu_s"] - c["cpu_s"]) / window_span, 1)
            if c and e and window_span else None,
        })
    params = {"rooms": args.rooms, "participants": args.participants, "duration": args.duration,
              "join_timeout": args.join_timeout,
              "video": args.video, "audio": True, "max_consumed": args.max_consumed or "all (server last-N + audio selection)",
              "media_scale": args.media_scale, "audio_pps": 50 * args.media_scale,
              "talkers_per_room": args.talkers,
              "room_concurrency": args.room_concurrency or args.participants, "shards": len(groups),
              "media_slots_per_node": args.media_slots,
              "consume": "one at a time" if args.sequential_consume else "all announced at once (as the page)", "nodes": "head (signaling) + a (signaling, media) + b (media)",
              "fronts": len(urls), "server": "ray-cluster-sim", "loadgen": "ray-actors",
              "total_participants": len(entries)}
    rows = worker_rows(measured["idle"], measured["start"], measured["end"], measured["window_s"])
    folder = write_results(args.out, params=params, shards=measured["shards"], workers=rows,
                           server=measured["end"].get("_server", {}))
    cluster = {
        "parameters": params,
        "time_until_all_joined_s": _r(all_joined.get("s")),
        # connect of the first -> every consumer of every participant resumed (None: not within --consume-timeout)
        "time_until_all_consumed_s": _r(all_joined.get("consumed")),
        "consumers_expected": expected_consumers,
        "participants": len(participants), "participants_ok": len(ok), "errors": errors,
        "join_ack_s": _percentiles([p.get("joined_s") for p in ok]),
        "media_ready_s": _percentiles([p.get("media_ready_s") for p in ok]),
        "first_remote_rtp_s": _percentiles([p.get("join_s") for p in ok if p.get("join_s") is not None]),
        "streams_consumed_per_participant": _percentiles(consumed),
        # connect -> the participant's last consumer resumed (every producer of the room consumed)
        "all_consumed_s": _percentiles([p.get("last_consume_s") for p in ok]),
        # streams that carried packets during the run (what last-N and audio selection forward)
        "streams_with_packets_per_participant": _percentiles(
            [sum(1 for st in p.get("streams") or [] if st.get("packets")) for p in ok]),
        "uptime_before": getattr(args, "uptime_before", None), "uptime_after": _uptime(),
        "cpu_window_span_s": _r(window_span, 2),  # what cpu_pct_media_window is a share of
        "actors": actors,
        # server CPU (every product actor) from everyone joined to every consumer resumed, per consume
        # (one consume + one resume-consumer request) completed in that span
        "consume_phase": consume_cpu,
        # Ray calls vs requests they carried on the batched paths (actors/call_batch.py), whole run
        "batching": batching,
        # transports a worker closed by itself during the run (consent lost, DTLS failed), before the leave
        "transports_closed_by_reason": closed_by_reason,
        "leftovers_after_leave": left,
        "load_generator_cpu_s": _r(sum(s["loadgen"].get("cpu_s", 0) for s in measured["shards"]), 2),
    }
    with open(folder / "cluster.json", "w") as fh:
        json.dump(cluster, fh, indent=2, default=str)
    return folder


async def batch_stats(app: Any) -> dict:
    """Per path: Ray calls made and the requests they carried (front -> room host, room host ->
    media worker)."""
    from actors.hop import call

    out: dict = {}
    for label, handles in (("front_to_room_host", app.fronts), ("room_host_to_worker", app.hosts)):
        calls = items = largest = 0
        for handle in handles.values():
            try:
                stats = await call(handle.batch_stats.remote(), what="batch stats", timeout_s=10)
            except Exception:  # noqa: BLE001 - a product without batching
                continue
            for st in stats.values():
                calls, items, largest = calls + st["calls"], items + st["items"], max(largest, st["largest"])
        out[label] = {"ray_calls": calls, "requests": items, "largest_batch": largest,
                      "requests_per_call": _r(items / calls, 2) if calls else None}
    return out


SERVER_KINDS = ("Directory", "Signaling", "RoomHost", "MediaWorker")


def _consume_cpu(joined: dict, settled: dict, consumes: int) -> dict | None:
    """Server CPU per consume in the consume phase (joined -> all consumed), per actor kind."""
    if not joined or not settled or consumes <= 0:
        return None
    per_kind = {k: 0.0 for k in SERVER_KINDS}
    for pid, j in joined.items():
        if j["kind"] in per_kind and pid in settled:
            per_kind[j["kind"]] += settled[pid]["cpu_s"] - j["cpu_s"]
    total = sum(per_kind.values())
    return {"consumes": consumes, "server_cpu_s": _r(total, 2),
            "server_cpu_ms_per_consume": _r(1000 * total / consumes, 3),  # consume + resume-consumer
            "cpu_ms_per_consume_by_kind": {k: _r(1000 * v / consumes, 3) for k, v in per_kind.items()}}


def _uptime() -> str:
    import subprocess

    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def start_cluster(media_slots: int) -> Any:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True,
                      head_node_args=dict(num_cpus=0, resources={"signaling": 1}, include_dashboard=False))
    cluster.add_node(num_cpus=media_slots, resources={"media_slots": media_slots, "signaling": 1})
    cluster.add_node(num_cpus=media_slots, resources={"media_slots": media_slots})
    cluster.wait_for_nodes(timeout=180)
    ray.init(address=cluster.address, log_to_driver=False, namespace="cluster-load")
    return cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--participants", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="media window after the joins, s")
    parser.add_argument("--video", action="store_true", help="also produce VP8 (default: audio only)")
    parser.add_argument("--max-consumed", type=int, default=0,
                        help="client-side cap on remote producers consumed (0: all of them; the server's "
                             "last-N and audio selection decide what is forwarded)")
    parser.add_argument("--media-scale", type=float, default=1.0,
                        help="multiplies every packet rate (1: Opus 50 pps, camera at its full rate)")
    parser.add_argument("--talkers", type=int, default=2,
                        help="participants per room whose mic carries a speaking audio level")
    parser.add_argument("--sequential-consume", action="store_true",
                        help="each participant consumes one producer at a time (the page: all at once)")
    parser.add_argument("--room-concurrency", type=int, default=0, help="participants of a room joining at once (0: all)")
    parser.add_argument("--shards", type=int, default=4, help="load-generator actors")
    parser.add_argument("--media-slots", type=int, default=1, help="media workers per media node")
    parser.add_argument("--join-timeout", type=float, default=180.0,
                        help="per participant: connect -> producing, else counted as an error")
    parser.add_argument("--leave-timeout", type=float, default=60.0)
    parser.add_argument("--consume-timeout", type=float, default=900.0,
                        help="after the joins, wait at most this long for every consumer before the media window")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--smoke", action="store_true", help="2 rooms x 5 participants, 5 s")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rooms, args.participants, args.duration, args.shards = 2, 5, 5.0, 2

    # before anything imports Ray (design/ray.md P1, P2): every Ray listener on 127.0.0.1, no token auth
    for key, value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                       "RAY_USAGE_STATS_ENABLED": "0"}.items():
        os.environ.setdefault(key, value)
    private_tmp = None
    if "RAY_TMPDIR" not in os.environ:  # never another cluster's /tmp/ray
        private_tmp = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="sr-cl-")
    import ray

    t0 = time.monotonic()
    args.uptime_before = _uptime()
    cluster = start_cluster(args.media_slots)
    try:
        folder = asyncio.run(run(args))
    finally:
        ray.shutdown()
        cluster.shutdown()
        if private_tmp:
            shutil.rmtree(private_tmp, ignore_errors=True)
    summary = json.loads((folder / "cluster.json").read_text())
    print(json.dumps({k: summary[k] for k in ("time_until_all_joined_s", "time_until_all_consumed_s", "consume_phase",
                                              "participants", "participants_ok",
                                              "join_ack_s", "media_ready_s", "leftovers_after_leave")}, indent=1))
    print(f"errors: {len(summary['errors'])}; results in {folder} ({time.monotonic() - t0:.0f} s)")
    return 0 if not summary["errors"] and not any(summary["leftovers_after_leave"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
