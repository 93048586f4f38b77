"""The C minimal SRTP fan-out loop (the shared harness's c-floor/srtpfwd.c) on the load of
``benchmarks.forwarding --mode srtp``: same VP8-like packets, same pacing (one packet per period from
this process), an epoll sink (SINK_POLL_US=0: the forwarder pays the receivers' wake-ups, as with our
sink), CPU metered the same way (/proc/PID/task/*/schedstat between two packet indices).

Build srtpfwd outside the repository first (Debian's libsrtp2, or the libsrtp pylibsrtp bundles):
    gcc -O2 -o /tmp/cfloor/srtpfwd /work/shared/bench-harness/c-floor/srtpfwd.c -lsrtp2
    python -m benchmarks.c_floor --binary /tmp/cfloor/srtpfwd --label c-floor --fanout 1,10,50 --out DIR
Writes DIR/c_floor.csv (columns: label, fanout, rep, pps, sent_in, expected_fwd, sink_pkts, cpu_s,
us_per_fwd_pkt, us_per_in_pkt) and prints medians.
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import time

from pylibsrtp import Policy, Session

from .common import cpu_ns, median, vp8_packets
from .forwarding import paced_send

SSRC = 0xABCDEF01
FIELDS = ["label", "fanout", "rep", "pps", "sent_in", "expected_fwd", "sink_pkts", "cpu_s", "us_per_fwd_pkt",
          "us_per_in_pkt"]


def ingress_session() -> Session:
    """srtpfwd's ingress key (stream index -1: byte j = 1 + 7 j), AES_CM_128_HMAC_SHA1_80."""
    key = bytes((1 + 7 * j) & 0xFF for j in range(30))
    return Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                          srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80))


def free_base(n: int) -> int:
    """A run of n free UDP ports on 127.0.0.1 (checked, then released)."""
    for base in range(43000, 60000, 97):
        socks = []
        try:
            for i in range(n + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def run_cell(binary: str, fanout: int, pps: float, warmup: float, duration: float, payload: int) -> dict:
    warm_n, meas_n = int(pps * warmup), int(pps * duration)
    base = free_base(fanout)
    in_port, sink_base = base, base + 1
    env = dict(os.environ, SINK_POLL_US="0")
    span = warmup + duration + 5
    sink = subprocess.Popen([binary, "sink", str(sink_base), str(fanout), str(span + 5), "1500"], env=env,
                            stdout=subprocess.PIPE, text=True)
    fwd = None
    try:
        assert sink.stdout.readline().startswith("sink ready")
        fwd = subprocess.Popen([binary, "fwd", "cm", str(in_port), str(fanout), str(sink_base), str(span)],
                               stdout=subprocess.PIPE, text=True)
        assert fwd.stdout.readline().startswith("fwd ready")
        tx = ingress_session()
        packets = [tx.protect(p) for p in vp8_packets(warm_n + meas_n, SSRC, 96, int(pps), payload_size=payload)]
        gen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gen.connect(("127.0.0.1", in_port))
        marks: dict[str, int] = {}
        paced_send(gen.send, packets, pps, {warm_n: lambda: marks.__setitem__("a", cpu_ns(fwd.pid)),
                                            warm_n + meas_n: lambda: marks.__setitem__("b", cpu_ns(fwd.pid))})
        gen.close()
        fwd_out = fwd.communicate(timeout=span + 10)[0]
        sink_out = sink.communicate(timeout=span + 10)[0]
    finally:
        for p in (fwd, sink):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    cpu = (marks["b"] - marks["a"]) / 1e9
    sunk = next((int(w.split("=")[1]) for w in sink_out.split() if w.startswith("pkts=")), -1)
    if "fwd N=" not in fwd_out:
        raise RuntimeError(f"srtpfwd fwd printed {fwd_out!r}")
    return {"fanout": fanout, "pps": pps, "sent_in": meas_n, "expected_fwd": meas_n * fanout, "sink_pkts": sunk,
            "cpu_s": round(cpu, 5), "us_per_fwd_pkt": round(cpu * 1e6 / (meas_n * fanout), 3),
            "us_per_in_pkt": round(cpu * 1e6 / meas_n, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--label", default="c-floor")
    ap.add_argument("--fanout", default="1,10,50")
    ap.add_argument("--pps", type=float, default=1000.0)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--payload-size", type=int, default=1000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "c_floor.csv")
    new = not os.path.exists(path)
    rows = []
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for rep in range(a.repeats):
            for n in [int(x) for x in a.fanout.split(",")]:
                row = dict(run_cell(a.binary, n, a.pps, a.warmup, a.duration, a.payload_size), label=a.label, rep=rep)
                rows.append(row)
                w.writerow(row)
                f.flush()
                print(f"{a.label} N={n} rep={rep} us/fwd={row['us_per_fwd_pkt']} sink={row['sink_pkts']}", flush=True)
                time.sleep(0.5)
    print(f"\n| {a.label} | N | µs CPU / fwd pkt (median) |\n|---|---|---|")
    for n in sorted({r["fanout"] for r in rows}):
        print(f"| {a.label} | {n} | {median([r['us_per_fwd_pkt'] for r in rows if r['fanout'] == n]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
