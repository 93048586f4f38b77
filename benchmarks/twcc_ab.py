"""In-process A/B of the transport-wide seq stamping (issue 10): one VP8 producer -> 10 WebRtcTransport
consumers (SRTP protect and sendto stubbed out, so only the Python forwarding path is timed), CPU per
forwarded packet with and without ``TwccStamper.stamp`` in ``WebRtcTransport.send_rtp``, interleaved.

    .venv/bin/python -m benchmarks.twcc_ab [--out benchmarks/results/bwe/twcc_ab.json]
"""
import argparse
import asyncio
import json
import statistics
import sys
import time

from studyrooms.sfu.worker import Worker
from studyrooms.sfu.options import WorkerOptions
from studyrooms.sfu.channel import WorkerChannel
from studyrooms.media.rtp import build_rtp
from .common import vp8_rtp_parameters

class FakeSrtp:
    def protect_rtp(self, d): return d
    def protect_rtcp(self, d): return d
    def remove_tx_stream(self, s): pass

async def main():
    w = await Worker.create("ab", WorkerOptions(rtc_min_port=48500, rtc_max_port=48999))
    ch = WorkerChannel(w)
    r = await ch.request("create_router", {})
    caps = r["rtpCapabilities"]
    pt = await ch.request("create_plain_transport", {"routerId": r["routerId"], "comedia": True})
    prod = await ch.request("produce", {"transportId": pt["id"], "kind": "video", "rtpParameters": vp8_rtp_parameters(1234, 96, with_mid=True)})
    trs = []
    for i in range(10):
        info = await ch.request("create_webrtc_transport", {"routerId": r["routerId"], "direction": "recv"})
        t = w.transports[info["id"]]
        t._srtp = FakeSrtp(); t._tuple = ("127.0.0.1", 9); t._send_to = lambda d, a: True
        t._set_media_ready()
        await ch.request("consume", {"transportId": info["id"], "producerId": prod["id"], "rtpCapabilities": caps, "paused": False})
        trs.append(t)
    producer = w.producers[prod["id"]]
    pkts = [build_rtp(payload_type=96, seq=i & 0xFFFF, ts=i * 3000, ssrc=1234, payload=bytes([0x10, 0x00 if i == 0 else 0x01]) + bytes(1000), extensions=[(1, b"0"), (3, b"\x01\x02\x03")]) for i in range(20000)]
    transport = producer.transport
    res = {}
    for mode in ("stamp", "nostamp", "stamp", "nostamp", "stamp", "nostamp"):
        for t in trs:
            if mode == "nostamp": t.bwe.stamper = None
            else: t.bwe.enable_stamping()
        t0 = time.process_time()
        for p in pkts:
            transport.receive_rtp(p)
        dt = (time.process_time() - t0) / (len(pkts) * 10) * 1e6
        res.setdefault(mode, []).append(dt)
    out = {"benchmark": "twcc_ab", "python": sys.version.split()[0], "fanout": 10, "packets": len(pkts),
           "us_per_forwarded_packet": {k: round(statistics.median(v), 3) for k, v in res.items()},
           "runs": {k: [round(x, 3) for x in v] for k, v in res.items()}}
    out["stamping_cost_us"] = round(out["us_per_forwarded_packet"]["stamp"] - out["us_per_forwarded_packet"]["nostamp"], 3)
    await w.close()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out")
    args = ap.parse_args()
    result = asyncio.run(main())
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
