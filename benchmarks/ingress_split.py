"""Where the per-ingress time goes with the compiled core (issue 13): the Python receive step vs the
core's per-copy work, without the kernel.

One Worker, a comedia PlainTransport producing VP8 (the harness's stream shape, ~1012-byte packets)
and N PlainTransport consumers forwarded by the compiled core whose cells cannot send (fd -1: the
core does all its per-copy work, rewrite + history entry, and counts a drop instead of the
``sendto``). Timed in-process, CPU time per ingress packet:

* ``full``: ``transport.receive_rtp(packet)`` — listener lookup, Producer, RecvStream (seq/NACK
  tracking, jitter, normalisation), the core call and its events;
* ``core``: the core call alone on the same normalised packet (``Fanout.run``);
* ``python_ingress`` = full - core: what moving the receive step into C could save at most per
  ingress packet (a C receive step still costs something), to set against the harness's per-ingress
  figures (which include the event-loop wake-up, ``recvfrom`` and N ``sendto``).

    .venv/bin/python -m benchmarks.ingress_split [--consumers 10] [--iterations 20000] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from studyrooms.media import fastpath
from studyrooms.media.rtp import build_rtp
from studyrooms.sfu.channel import WorkerChannel
from studyrooms.sfu.options import WorkerOptions
from studyrooms.sfu.worker import Worker

SSRC = 22222222


def packets(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        key = i % 300 == 0
        desc = bytes([0x90, 0x80, 0x80 | (i >> 8) & 0x7F, i & 0xFF])
        payload = desc + (bytes([0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A]) if key else bytes([0x01])) + bytes(990)
        out.append(build_rtp(payload_type=96, seq=i & 0xFFFF, ts=(i // 3) * 3000, ssrc=SSRC, marker=i % 3 == 2,
                             payload=payload))
    return out


async def run(consumers: int, iterations: int, repeat: int) -> dict:
    fastpath.configure("on")
    worker = await Worker.create("ingress-split", WorkerOptions(listen_ip="127.0.0.1"))
    channel = WorkerChannel(worker)
    try:
        r = await channel.request("create_router", {})
        t = await channel.request("create_plain_transport", {"routerId": r["routerId"], "comedia": True})
        p = await channel.request("produce", {"transportId": t["id"], "kind": "video", "rtpParameters": {
            "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000,
                        "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}]}],
            "encodings": [{"ssrc": SSRC}], "rtcp": {"cname": "split"}}})
        caps = (await channel.request("router_rtp_capabilities", {"routerId": r["routerId"]}))["rtpCapabilities"]
        for _ in range(consumers):
            ct = await channel.request("create_plain_transport", {"routerId": r["routerId"]})
            await channel.request("connect_plain_transport", {"transportId": ct["id"], "ip": "127.0.0.1",
                                                              "port": 9})
            c = await channel.request("consume", {"transportId": ct["id"], "producerId": p["id"],
                                                  "rtpCapabilities": caps, "paused": False})
            consumer = worker.consumers[c["id"]]
            assert consumer.fast
            consumer.transport.fast_cell.c.fd = -1  # the core does everything but the send
        transport = worker.transports[t["id"]]
        producer = worker.producers[p["id"]]
        stream = producer.streams[0]
        fan = producer._fan
        pkts = packets(iterations * (repeat + 1))
        receive = transport.receive_rtp
        for pkt in pkts[:iterations]:  # warm: the keyframe, plans, histories
            receive(pkt)
        full, core = [], []
        k = iterations
        for _ in range(repeat):
            batch = pkts[k:k + iterations]
            k += iterations
            t0 = time.process_time()
            for pkt in batch:
                receive(pkt)
            full.append((time.process_time() - t0) / iterations * 1e6)
            # the core alone, on the last normalised packet (same work per call: no send)
            norm = stream.receive(batch[-1]) or bytearray(batch[-1])
            t0 = time.process_time()
            for _ in range(iterations):
                fan.run(norm, 0, stream, True)
            core.append((time.process_time() - t0) / iterations * 1e6)
        sent = sum(c.send_stream.packets for c in worker.consumers.values())
        f, c = statistics.median(full), statistics.median(core)
        return {"consumers": consumers, "iterations": iterations, "repeat": repeat, "copies_made": sent,
                "us_full_per_ingress": round(f, 3), "us_core_per_ingress": round(c, 3),
                "us_python_ingress": round(f - c, 3), "us_core_per_copy": round(c / consumers, 3)}
    finally:
        await worker.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--consumers", default="1,10,50")
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    rows = [asyncio.run(run(int(n), a.iterations, a.repeat)) for n in a.consumers.split(",")]
    text = json.dumps(rows, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
