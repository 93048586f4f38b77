"""Scale benchmark: N rooms x M participants (camera + mic, screen share for some) of synthetic
clients against a StudyRooms server, measured through the server's own ``/metrics``.

    python -m benchmarks.scale --rooms 2 --participants 5 --duration 20 --out benchmarks/results/scale
    python -m benchmarks.scale --smoke --out /tmp/scale      # 2 rooms x 3 participants, 5 s (CI)
    python -m benchmarks.scale --url http://127.0.0.1:8080   # against a running server (e.g. `make serve`)

Without ``--url`` a standalone server (benchmarks/loadgen/server.py: one process, ``--workers``
media workers, no Ray) runs in a child process, so the load generator's CPU (this process) is not
charged to the server. For Ray (participants spread over a cluster) use ``studyrooms loadtest``.
Reports per-core packet rates, CPU per stream, loss, latency p50/p99, join time, RSS per worker and
per transport; writes the results folder of benchmarks/loadgen/results.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from .loadgen.results import worker_rows, write_results
from .loadgen.runner import drive, plan, run_shard

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scale"


def start_server(workers: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.loadgen.server", "--workers", str(workers)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=str(Path(__file__).resolve().parents[1]))
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("the standalone server did not start")
    return proc, json.loads(line)["url"]


def stop_server(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
        proc.wait(timeout=15)
    except Exception:  # noqa: BLE001
        proc.kill()
        proc.wait()


async def run(args: argparse.Namespace) -> Path:
    entries = plan(args.rooms, args.participants, screen_share=args.screen_share, simulcast=args.simulcast)
    proc = None
    url = args.url
    if not url:
        proc, url = start_server(args.workers)
    try:
        stop = asyncio.Event()
        events: dict[str, int] = {}

        def progress(what: str, n: int) -> None:
            events[what] = events.get(what, 0) + n

        async def start() -> list[dict]:
            return [await run_shard(url, entries, duration_s=args.duration, join_gap_s=args.join_gap,
                                    progress=progress, stop=stop)]

        async def poll() -> dict:
            return dict(events)

        async def stop_all() -> None:
            stop.set()

        bar = None
        if args.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(entries) + int(args.duration), unit="step", desc="scale", file=sys.stderr)
        measured = await drive(url, len(entries), args.duration, start=start, progress=poll, stop=stop_all, bar=bar)
        if bar is not None:
            bar.close()
    finally:
        if proc is not None:
            stop_server(proc)
    params = {k: getattr(args, k) for k in ("rooms", "participants", "duration", "workers", "screen_share",
                                            "simulcast", "join_gap")}
    params.update(server="url" if args.url else "standalone", loadgen="in-process", url=url,
                  total_participants=len(entries))
    workers = worker_rows(measured["idle"], measured["start"], measured["end"], measured["window_s"])
    return write_results(args.out, params=params, shards=measured["shards"], workers=workers,
                         server=measured["end"].get("_server", {}))


def print_summary(folder: Path) -> None:
    res = json.loads((folder / "summary.json").read_text())["results"]
    keys = ["participants_ok", "join_s_p50", "join_s_p95", "latency_ms_p50", "latency_ms_p99", "loss_pct",
            "jitter_ms_mean", "server_rtp_in_pps", "server_rtp_out_pps", "server_cores_busy", "pkts_per_core_s",
            "fwd_pkts_per_core_s", "cpu_pct_per_consumer_stream", "cpu_pct_per_participant", "rss_per_worker_mb",
            "rss_per_transport_kb", "loadgen_cpu_s"]
    width = max(len(k) for k in keys)
    for k in keys:
        print(f"  {k:<{width}}  {res.get(k)}")
    print(f"results: {folder}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--rooms", type=int, default=2)
    p.add_argument("--participants", type=int, default=5, help="participants per room")
    p.add_argument("--duration", type=float, default=20.0, help="measured media window, seconds")
    p.add_argument("--workers", type=int, default=1, help="media workers of the standalone server")
    p.add_argument("--screen-share", type=int, default=1, help="participants per room also sharing a screen")
    p.add_argument("--simulcast", action="store_true", help="cameras send three simulcast encodings")
    p.add_argument("--join-gap", type=float, default=0.3, help="seconds between joins within a room")
    p.add_argument("--url", help="an already running server (else a standalone one is started)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--smoke", action="store_true", help="2 rooms x 3 participants, 5 s (CI)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    if args.smoke:
        args.rooms, args.participants, args.duration, args.join_gap = 2, 3, 5.0, 0.1
    t0 = time.monotonic()
    try:  # the generator receives every forwarded packet: uvloop reads datagrams in batches
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        folder = runner.run(run(args))
    print(f"scale run done in {time.monotonic() - t0:.1f} s")
    print_summary(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
