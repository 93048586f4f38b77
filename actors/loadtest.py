"""``studyrooms loadtest``: synthetic participants as Ray actors, spread over the cluster.

    studyrooms loadtest --rooms 10 --participants 50 --duration 60            # starts the app on a local Ray
    studyrooms loadtest --url http://10.0.0.5:8080/ --address auto --shards 8  # against a running server

Each shard is a ``LoadShardActor`` (benchmarks/loadgen/runner.py ``LoadShard``, ``num_cpus=0``,
SPREAD scheduling) running whole rooms of participants; the driver measures the window through the
server's ``GET /metrics`` (benchmarks/loadgen/runner.py ``drive``) and writes the results folder of
benchmarks/loadgen/results.py. The load generator lives in the repository's ``benchmarks/``
package: its path reaches the shard actors as PYTHONPATH (a cluster's nodes have the checkout at
the same path: cluster.yaml installs the repository).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

import ray

from .hop import call

logger = logging.getLogger("studyrooms.actors.loadtest")

REPO_ROOT = Path(__file__).resolve().parents[1]


def _benchmarks_path() -> str:
    if not (REPO_ROOT / "benchmarks" / "loadgen" / "runner.py").is_file():
        raise RuntimeError(f"the load generator needs the repository checkout (no benchmarks/loadgen in {REPO_ROOT})")
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)
    return root


def shard_actor_class() -> Any:
    from benchmarks.loadgen.runner import LoadShard

    return ray.remote(num_cpus=0, max_restarts=0, max_concurrency=100)(LoadShard)


async def run_loadtest(*, url: str | None, rooms: int, participants: int, duration_s: float, shards: int | None = None,
                       screen_share: int = 1, simulcast: bool = False, join_gap_s: float = 0.3, out: str | None = None,
                       workers: int | None = None, progress: bool = True) -> Path:
    """Run one load test on the current Ray; returns the results folder."""
    root = _benchmarks_path()
    from benchmarks.loadgen.results import worker_rows, write_results
    from benchmarks.loadgen.runner import drive, plan, shard

    app = None
    if not url:
        from studyrooms.config import Settings

        from .app import start_app

        server: dict = {"host": "127.0.0.1", "port": 0}
        if workers:
            server["num_workers"] = workers
        app = await start_app(Settings(server=server), prefix=f"loadtest-{int(time.time())}")
        url = app.url
    entries = plan(rooms, participants, screen_share=screen_share, simulcast=simulcast)
    count = shards or max(1, min(rooms, int(ray.available_resources().get("CPU", 1)) or 1))
    groups = shard(entries, count)
    Shard = shard_actor_class()
    actors = [Shard.options(scheduling_strategy="SPREAD",
                            runtime_env={"env_vars": {"PYTHONPATH": root}}).remote(i) for i in range(len(groups))]
    bar = None
    try:
        await asyncio.gather(*(call(a.progress.remote(), what="load shard", timeout_s=120) for a in actors))
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(entries) + int(duration_s), unit="step", file=sys.stderr,
                       desc=f"loadtest {rooms}x{participants}")

        async def start() -> list[dict]:
            return list(await asyncio.gather(*(
                call(a.run.remote(url, g, duration_s, None, join_gap_s), what="load shard",
                     timeout_s=duration_s * 3 + 60 + len(g) * 30) for a, g in zip(actors, groups))))

        async def poll() -> dict:
            parts = await asyncio.gather(*(call(a.progress.remote(), what="load shard") for a in actors))
            return {"joined": sum(p.get("joined", 0) for p in parts)}

        async def stop() -> None:
            await asyncio.gather(*(call(a.stop.remote(), what="load shard") for a in actors))

        measured = await drive(url, len(entries), duration_s, start=start, progress=poll, stop=stop, bar=bar)
    finally:
        if bar is not None:
            bar.close()
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        if app is not None:
            await app.stop()
    params = {"rooms": rooms, "participants": participants, "duration": duration_s, "screen_share": screen_share,
              "simulcast": simulcast, "join_gap": join_gap_s, "workers": workers, "shards": len(groups),
              "server": "ray-app" if app is not None else "url", "loadgen": "ray-actors", "url": url,
              "total_participants": len(entries)}
    rows = worker_rows(measured["idle"], measured["start"], measured["end"], measured["window_s"])
    default_out = REPO_ROOT / "benchmarks" / "results" / "loadtest"
    return write_results(out or default_out, params=params, shards=measured["shards"], workers=rows,
                         server=measured["end"].get("_server", {}))


def main(args: Any) -> int:
    """The CLI entry (actors/cli.py): start or attach to Ray, run, print the summary."""
    from .runtime import init_ray

    try:
        started = init_ray(args.address, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - one line
        print(f"studyrooms: could not start or reach Ray: {type(exc).__name__}: {str(exc).strip()[:200]}",
              file=sys.stderr)
        return 1
    try:
        folder = asyncio.run(run_loadtest(
            url=args.url, rooms=args.rooms, participants=args.participants, duration_s=args.duration,
            shards=args.shards, screen_share=args.screen_share, simulcast=args.simulcast, join_gap_s=args.join_gap,
            out=args.out, workers=args.workers, progress=not args.no_progress))
    finally:
        if started:
            ray.shutdown()
    from benchmarks.scale import print_summary

    print_summary(folder)
    return 0
