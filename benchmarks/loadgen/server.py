"""A standalone StudyRooms server (one process, no Ray) with telemetry, for load runs and CI:

    python -m benchmarks.loadgen.server [--workers 1] [--port 0]

Prints one JSON line ``{"url", "pid"}`` once listening; stops on stdin EOF or SIGTERM. ``GET /metrics``
serves the Prometheus exposition (actors/telemetry.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys


async def main(workers: int, port: int) -> None:
    from actors.telemetry import attach_standalone
    from studyrooms.config import Settings
    from studyrooms.standalone import start_standalone

    app = await start_standalone(Settings.from_env(), num_workers=workers, port=port)  # STUDYROOMS_* apply
    attach_standalone(app)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not sys.stdin.buffer.read1(4096) else None)
    print(json.dumps({"url": app.url, "pid": os.getpid()}), flush=True)
    try:
        await done.wait()
    finally:
        await app.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(args.workers, args.port))
