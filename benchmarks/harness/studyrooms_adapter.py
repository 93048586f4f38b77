#!/usr/bin/env python3
"""Adapter for an external plain-RTP comparison harness (not in this repository; contract below).

    python benchmarks/harness/studyrooms_adapter.py --consumers N --sink-host H --sink-port P

A StudyRooms media Worker in THIS process (the pid bench.py meters), driven through WorkerChannel:
create_router -> one comedia PlainTransport + produce(VP8, ssrc 22222222, pt 96) -> N PlainTransports
connected to H:P, each with a resumed consumer. Prints ONE JSON line {"pid", "ingest", "ssrc", "pt",
"codec"}; forwards until stdin EOF (or --max-life seconds), then closes the worker and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.common import setup_plain  # noqa: E402

SSRC = 22222222
PT = 96


async def run(a) -> None:
    from studyrooms.sfu.channel import WorkerChannel
    from studyrooms.sfu.options import WorkerOptions
    from studyrooms.sfu.worker import Worker

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    worker = await Worker.create("harness-worker", WorkerOptions(listen_ip="127.0.0.1"))
    channel = WorkerChannel(worker)
    loop = asyncio.get_running_loop()
    try:
        r = await setup_plain(channel.request, a.consumers, a.sink_host, a.sink_port, SSRC, PT)
        ip, port = r["ingest"]
        from studyrooms.media import fastpath

        print(json.dumps({"pid": os.getpid(), "ingest": f"{ip}:{port}", "ssrc": SSRC, "pt": PT, "codec": "vp8",
                          "consumers": a.consumers, "impl": "studyrooms",
                          "forwarding": "compiled" if fastpath.active() else "python"}), flush=True)
        done = loop.create_future()

        def on_stdin() -> None:
            if not os.read(sys.stdin.fileno(), 4096) and not done.done():
                done.set_result(None)

        loop.add_reader(sys.stdin.fileno(), on_stdin)
        try:
            await asyncio.wait_for(done, a.max_life)
        except asyncio.TimeoutError:
            pass
        loop.remove_reader(sys.stdin.fileno())
        stats = await channel.request("get_stats", {})
        handled = sum(getattr(s, "handled", 0) for p in worker.producers.values() for s in p.streams if s)
        print(json.dumps({"rtpPacketsReceived": stats.get("rtpPacketsReceived"),
                          "rtpPacketsSent": stats.get("rtpPacketsSent"),
                          "compiledReceiveStep": handled}), file=sys.stderr, flush=True)
    finally:
        await worker.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--consumers", type=int, default=1)
    ap.add_argument("--sink-host", default="127.0.0.1")
    ap.add_argument("--sink-port", type=int, default=50000)
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ap.add_argument("--max-life", type=float, default=900.0)
    a = ap.parse_args()
    if a.loop == "uvloop":
        import uvloop

        uvloop.run(run(a))
    else:
        asyncio.run(run(a))


if __name__ == "__main__":
    main()
