"""Memory of a media worker across a load episode: baseline, peak, and after everyone left.

    python -m benchmarks.memory_episode --participants 12 --duration 15 --after 10

Starts the actor app on a local Ray (one media worker, admission control off), has synthetic
participants (benchmarks/loadgen: audio + camera, everyone receiving everyone) join one room, run
for ``--duration`` seconds and leave, then samples the worker's RSS for ``--after`` seconds.
Writes ``benchmarks/results/memory/<run>.json``: ``{parameters, rss_mib: {baseline, peak, after,
samples: [[t_s, rss_mib, phase]]}, worker: {...stats after}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results" / "memory"


async def episode(participants: int, duration_s: float, after_s: float, trim_delay_s: float = 2.0,
                  trace: bool = False) -> dict:
    from actors.app import start_app
    from actors.hop import call
    from actors.runtime import init_ray
    from studyrooms.config import Settings

    from actors.memprobe import diff

    from .loadgen.participant import Participant, Profile

    started = init_ray(num_cpus=2, log_to_driver=False)
    settings = Settings(server={"port": 0, "num_workers": 1}, rooms={"worker_cpu_limit": 1.0},
                        media={"memory_trim_delay_s": trim_delay_s})
    app = await start_app(settings, prefix=f"mem-{uuid.uuid4().hex[:6]}", health_interval_s=1.0)
    (worker,) = app.workers.values()
    proc = psutil.Process((await call(worker.get_stats.remote()))["pid"])
    from ray._private import state

    (host,) = app.hosts.values()
    host_proc = psutil.Process((await asyncio.to_thread(state.actors, host._actor_id.hex()))["Pid"])
    samples: list[list] = []
    t0 = time.monotonic()

    def sample(phase: str) -> float:
        rss = proc.memory_info().rss / (1 << 20)
        samples.append([round(time.monotonic() - t0, 2), round(rss, 1), phase,
                        round(host_proc.memory_info().rss / (1 << 20), 1)])
        return rss

    try:
        await asyncio.sleep(2.0)
        if trace:
            await call(worker.trace_memory.remote("start"), timeout_s=60)
        census0 = {"worker": await call(worker.memory_census.remote()), "host": await call(host.memory_census.remote())}
        baseline = sample("baseline")
        host_baseline = samples[-1][3]
        people = [Participant(app.url, "mem", f"p{i}", Profile(audio=True, video=True)) for i in range(participants)]
        refused = 0
        for p in people:
            try:
                await p.join()
            except Exception:  # noqa: BLE001 - an overloaded server may refuse or time out
                refused += 1
            sample("joining")
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            await asyncio.sleep(1.0)
            sample("load")
        peak = max(s[1] for s in samples)
        # one leaves while the others stay: the trim's collection then walks a live call's objects
        await people[0].close()
        await asyncio.sleep(trim_delay_s + 1.5 if trim_delay_s > 0 else 0)
        one_left = (await call(worker.get_stats.remote())).get("memory", {})
        await asyncio.gather(*(p.close() for p in people[1:]), return_exceptions=True)
        end = time.monotonic() + after_s
        while time.monotonic() < end:
            await asyncio.sleep(1.0)
            sample("after")
        stats = await call(worker.get_stats.remote())
        host_memory = await call(host.memory.remote())
        census1 = {"worker": await call(worker.memory_census.remote()), "host": await call(host.memory_census.remote())}
        # diagnostics: what a malloc_trim(0) right now would still give back (not part of the figures)
        for who, actor in (("worker", worker), ("host", host)):
            trimmed = await call(actor.memory_census.remote(0, True))
            census1[who]["trimNow"] = {**trimmed["trim"], "anon": trimmed["anon"], "malloc": trimmed["malloc"]}
        traced = await call(worker.trace_memory.remote("diff"), timeout_s=120) if trace else None
        return {"parameters": {"participants": participants, "duration_s": duration_s, "after_s": after_s,
                               "memory_trim_delay_s": trim_delay_s, "tracemalloc": trace},
                "rss_mib": {"baseline": round(baseline, 1), "peak": round(peak, 1), "after": samples[-1][1],
                            "samples": samples},
                "room_host_rss_mib": {"baseline": host_baseline, "peak": max(s[3] for s in samples),
                                      "after": samples[-1][3]},
                "room_host_memory": host_memory,
                "worker_memory_after_one_leave": one_left,
                "tracemalloc_after_vs_baseline": traced,
                "census": {who: {"baseline": _brief(census0[who]), "after": _brief(census1[who]),
                                 "objectsGrown": diff(census0[who], census1[who])} for who in census0},
                "joined": sum(1 for p in people if p.result.participant_id), "join_failures": refused,
                "worker": {k: stats.get(k) for k in ("transportCount", "consumerCount", "producerCount",
                                                      "routerCount", "memory")}}
    finally:
        await app.stop()
        if started:
            import ray

            ray.shutdown()


def _brief(c: dict) -> dict:
    return {k: v for k, v in c.items() if k not in ("objects", "media")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--participants", type=int, default=12)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--after", type=float, default=10.0)
    p.add_argument("--trim-delay", type=float, default=2.0, help="media.memory_trim_delay_s (0: no trimming)")
    p.add_argument("--tracemalloc", action="store_true", help="diff the worker's allocations: baseline vs after")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    result = asyncio.run(episode(args.participants, args.duration, args.after, args.trim_delay, args.tracemalloc))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    rss = result["rss_mib"]
    host = result["room_host_rss_mib"]
    for who, c in result["census"].items():
        print(who, "malloc", c["baseline"]["malloc"], "->", c["after"]["malloc"], "tasks",
              c["baseline"]["tasks"], "->", c["after"]["tasks"], "grown", c["objectsGrown"][:8])
        print("   ", who, "anon", c["baseline"]["anon"], "->", c["after"]["anon"], "threads",
              c["baseline"]["threads"], "->", c["after"]["threads"], "trim now", c["after"].get("trimNow"))
        print("   ", who, "cycles", c["after"]["cycles"], "pymalloc", c["baseline"]["pymalloc"], "->",
              c["after"]["pymalloc"])
    print("worker trim after one of them left (the call going on):", result["worker_memory_after_one_leave"])
    print(f"worker RSS MiB: baseline {rss['baseline']}, peak {rss['peak']}, after {rss['after']}; room host "
          f"{host['baseline']} / {host['peak']} / {host['after']} -> {path}")


if __name__ == "__main__":
    main()
