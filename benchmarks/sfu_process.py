"""A StudyRooms media Worker alone in its own process, driven by JSON lines on stdin/stdout, so
the benchmark driver can meter this process's CPU and nothing else.

    python -m benchmarks.sfu_process [--loop uvloop|asyncio] [--max-life 900]
prints {"pid", "workerId"}; then each stdin line {"id", "method", "data"} gets one stdout line
{"id", "result"} or {"id", "error"}. `method` is any WorkerChannel method (docs/worker-api.md), or
  setup_plain {consumers, sinkHost, sinkPort, ssrc, pt}  -> producer + N consumer PlainTransports
  profile_start {} / profile_stop {path}                 -> cProfile of the worker's loop
Exits on stdin EOF or after --max-life seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from .common import setup_plain


async def serve(a) -> None:
    from studyrooms.sfu.channel import WorkerChannel
    from studyrooms.sfu.options import WorkerOptions
    from studyrooms.sfu.worker import Worker

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    worker = await Worker.create("bench-worker", WorkerOptions(listen_ip="127.0.0.1",
                                                               consent_timeout_s=a.max_life + 60,
                                                               dtls_timeout_s=20.0))
    channel = WorkerChannel(worker)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 22)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    out.write(json.dumps({"pid": os.getpid(), "workerId": worker.id}) + "\n")
    out.flush()
    profiler = None
    deadline = loop.time() + a.max_life
    try:
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), max(0.1, deadline - loop.time()))
            except asyncio.TimeoutError:
                break
            if not line:
                break
            msg = json.loads(line)
            rid, method, data = msg.get("id"), msg.get("method"), msg.get("data") or {}
            try:
                if method == "setup_plain":
                    res = await setup_plain(channel.request, data["consumers"], data["sinkHost"], data["sinkPort"],
                                            data["ssrc"], data.get("pt", 96))
                elif method == "ingress_handled":  # packets the compiled receive step took end to end
                    res = {"handled": sum(getattr(s, "handled", 0) for p in worker.producers.values()
                                          for s in p.streams if s is not None)}
                elif method == "profile_start":
                    import cProfile

                    profiler = cProfile.Profile()
                    profiler.enable()
                    res = {}
                elif method == "profile_stop":
                    if profiler is not None:
                        profiler.disable()
                        profiler.dump_stats(data["path"])
                        profiler = None
                    res = {}
                else:
                    res = await channel.request(method, data)
                reply = {"id": rid, "result": res}
            except Exception as exc:  # noqa: BLE001 - reported to the driver
                reply = {"id": rid, "error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(reply, default=str) + "\n")
            out.flush()
    finally:
        await worker.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ap.add_argument("--max-life", type=float, default=900.0)
    a = ap.parse_args()
    if a.loop == "uvloop":
        import uvloop

        uvloop.run(serve(a))
    else:
        asyncio.run(serve(a))


if __name__ == "__main__":
    main()
