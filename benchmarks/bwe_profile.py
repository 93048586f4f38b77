"""Where the per-packet cost of issue 10 goes on the Python forwarding path (round 3).

benchmarks.forwarding showed +2.8 to +5.4 us per forwarded packet end to end at fan-out 10, while
the stamp alone costs ~1 us. This splits the difference, in process (one VP8 producer -> N
WebRtcTransport consumers that negotiated transport-wide-cc; SRTP protect and sendto stubbed so only
the Python path is timed):

1. ``forward``: CPU per forwarded packet with stamping on / off, interleaved (as benchmarks.twcc_ab).
2. ``profile``: cProfile of the stamped run: the functions whose own time grows with stamping.
3. ``timers``: what the per-transport timers that came with issue 10 cost, spread over the packets
   the benchmark forwards (1000 packets/s in at fan-out N): the allocator (every 0.5 s per
   transport), the TransportFeedback timer (every 0.1 s per transport).

    .venv/bin/python -m benchmarks.bwe_profile [--fanout 10] [--out benchmarks/results/bwe/profile.json]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import sys
import time

from studyrooms.media.rtp import build_rtp
from studyrooms.sfu.channel import WorkerChannel
from studyrooms.sfu.options import WorkerOptions
from studyrooms.sfu.worker import Worker

from .common import vp8_rtp_parameters


class FakeSrtp:
    def protect_rtp(self, d):
        return d

    def protect_rtcp(self, d):
        return d

    def remove_tx_stream(self, s):
        pass


async def setup(fanout: int):
    w = await Worker.create("prof", WorkerOptions(rtc_min_port=48500, rtc_max_port=48999))
    ch = WorkerChannel(w)
    r = await ch.request("create_router", {})
    caps = r["rtpCapabilities"]
    pt = await ch.request("create_plain_transport", {"routerId": r["routerId"], "comedia": True})
    prod = await ch.request("produce", {"transportId": pt["id"], "kind": "video",
                                        "rtpParameters": vp8_rtp_parameters(1234, 96, with_mid=True)})
    trs = []
    for _ in range(fanout):
        info = await ch.request("create_webrtc_transport", {"routerId": r["routerId"], "direction": "recv"})
        t = w.transports[info["id"]]
        t._srtp = FakeSrtp()
        t._tuple = ("127.0.0.1", 9)
        t._send_to = lambda d, a: True
        t._set_media_ready()
        await ch.request("consume", {"transportId": info["id"], "producerId": prod["id"], "rtpCapabilities": caps,
                                     "paused": False})
        trs.append(t)
    return w, w.producers[prod["id"]], trs


def packets(n: int) -> list[bytes]:
    return [build_rtp(payload_type=96, seq=i & 0xFFFF, ts=i * 3000, ssrc=1234,
                      payload=bytes([0x10, 0x00 if i == 0 else 0x01]) + bytes(1000),
                      extensions=[(1, b"0"), (3, b"\x01\x02\x03")]) for i in range(n)]


def set_stamping(trs, stamp: bool) -> None:
    for t in trs:
        bwe = getattr(t, "bwe", None)  # None: a tree before issue 10 (--baseline runs)
        if bwe is None:
            continue
        if stamp:
            bwe.enable_stamping()
        else:
            bwe.stamper = None


def run(producer, trs, pkts, stamp: bool) -> float:
    set_stamping(trs, stamp)
    transport = producer.transport
    t0 = time.process_time()
    for p in pkts:
        transport.receive_rtp(p)
    return (time.process_time() - t0) / (len(pkts) * len(trs)) * 1e6


def profile(producer, trs, pkts, stamp: bool) -> dict[str, float]:
    set_stamping(trs, stamp)
    prof = cProfile.Profile()
    transport = producer.transport
    prof.enable()
    for p in pkts:
        transport.receive_rtp(p)
    prof.disable()
    stats = pstats.Stats(prof)
    out = {}
    fwd = len(pkts) * len(trs)
    for (file, line, name), (_cc, nc, tt, _ct, _callers) in stats.stats.items():
        key = f"{file.rsplit('/', 2)[-1] if '/' in file else file}:{name}"
        out[key] = round(tt / fwd * 1e6, 3)
    return out


class Round2Stamper:
    """TwccStamper.stamp as round 2 shipped it (three record lists, a counter, slices + join), kept
    here as the reference the round-3 version is compared with in the same process."""

    def __init__(self) -> None:
        self.seq, self.stamped, self.cluster = 1, 0, -1
        self.sent_at, self.sizes, self.clusters = [-1.0] * 16384, [0] * 16384, [-1] * 16384
        self.seq_bytes = [i.to_bytes(2, "big") for i in range(65536)]

    def stamp(self, data, now):
        b0 = data[0]
        n = len(data)
        off = -1
        if b0 & 0x10:
            h = 12 + ((b0 & 0x0F) << 2)
            if h + 8 <= n and data[h] == 0xBE and data[h + 1] == 0xDE:
                if h + 16 <= n and data[h + 13] == 0x51:
                    off = h + 14
                elif data[h + 4] == 0x51:
                    off = h + 5
        if off < 0:
            return data
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFF
        i = seq & 16383
        self.sent_at[i] = now
        self.sizes[i] = n
        self.clusters[i] = self.cluster
        self.stamped += 1
        return b"".join((data[:off], self.seq_bytes[seq], data[off + 2:]))


def stamp_variants(sample: bytes, reps: int = 7, number: int = 100_000) -> dict[str, float]:
    """us per stamp (min over reps, interleaved): round 2's implementation vs the current one,
    and the clock read that goes with each stamp."""
    import timeit

    from studyrooms.clock import SystemClock
    from studyrooms.media.twcc import TwccStamper

    old, new = Round2Stamper(), TwccStamper()
    clock = SystemClock()
    best = {"round2_stamp": [], "current_stamp": [], "clock_now": []}
    for _ in range(reps):
        best["round2_stamp"].append(timeit.timeit(lambda: old.stamp(sample, 1.0), number=number))
        best["current_stamp"].append(timeit.timeit(lambda: new.stamp(sample, 1.0), number=number))
        best["clock_now"].append(timeit.timeit(clock.now, number=number))
    return {k: round(min(v) / number * 1e6, 3) for k, v in best.items()}


def time_call(fn, reps: int) -> float:
    t0 = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t0) / reps * 1e6


async def main(fanout: int, n: int) -> dict:
    w, producer, trs = await setup(fanout)
    pkts = packets(n)
    run(producer, trs, pkts[:2000], True)  # warm up (keyframe gate, history)
    res: dict[str, list[float]] = {}
    for mode in ("stamp", "nostamp") * 3:
        res.setdefault(mode, []).append(run(producer, trs, pkts, mode == "stamp"))
    forward = {k: round(statistics.median(v), 3) for k, v in res.items()}
    if getattr(trs[0], "bwe", None) is None:  # the tree before issue 10: forwarding only
        top = sorted(profile(producer, trs, pkts, False).items(), key=lambda kv: -kv[1])[:12]
        await w.close()
        return {"benchmark": "bwe_profile", "tree": "before issue 10", "python": sys.version.split()[0],
                "fanout": fanout, "packets": n, "us_per_forwarded_packet": {"before": forward["nostamp"]},
                "runs": {"before": res["nostamp"]}, "profile_top_us_per_forwarded_packet": dict(top)}
    on = profile(producer, trs, pkts, True)
    off = profile(producer, trs, pkts, False)
    grew = sorted(((k, round(on.get(k, 0) - off.get(k, 0), 3)) for k in set(on) | set(off)),
                  key=lambda kv: -abs(kv[1]))[:8]
    top = sorted(on.items(), key=lambda kv: -kv[1])[:12]
    # the timers issue 10 added, per call, then spread over what the benchmark forwards
    alloc_us = statistics.median(time_call(t.allocator.run, 200) for t in trs[:3])
    fb_us = statistics.median(time_call(t.bwe._on_feedback_timer, 2000) for t in trs[:3])
    for t in trs:  # _on_feedback_timer re-arms itself: cancel what the calls above scheduled
        t.bwe.stop()
    fwd_per_s = 1000 * fanout
    stamped_sample = trs[0].consumers and next(iter(trs[0].consumers.values())).send_stream
    sample = stamped_sample.get_buffered(stamped_sample.max_seq) if stamped_sample else None
    timers = {
        "allocator_run_us": round(alloc_us, 2), "feedback_timer_us": round(fb_us, 2),
        "allocator_us_per_forwarded_packet": round(alloc_us * 2 * fanout / fwd_per_s, 3),
        "feedback_timer_us_per_forwarded_packet": round(fb_us * 10 * fanout / fwd_per_s, 3),
    }
    await w.close()
    return {"benchmark": "bwe_profile", "python": sys.version.split()[0], "fanout": fanout, "packets": n,
            "us_per_forwarded_packet": forward, "runs": {k: [round(x, 3) for x in v] for k, v in res.items()},
            "stamping_cost_us": round(forward["stamp"] - forward["nostamp"], 3),
            "profile_top_stamped_us_per_forwarded_packet": dict(top),
            "profile_own_time_change_us": dict(grew), "timers": timers,
            "stamp_variants_us": stamp_variants(bytes(sample)) if sample else None}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fanout", type=int, default=10)
    ap.add_argument("--packets", type=int, default=10000)
    ap.add_argument("--out")
    args = ap.parse_args()
    result = asyncio.run(main(args.fanout, args.packets))
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
