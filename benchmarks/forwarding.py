"""Forwarding cost of a StudyRooms media Worker vs the minimal Python loop, measured in the same run.

    python -m benchmarks.forwarding [--mode plain|srtp|both] [--fanout 1,10,50] [--pps 1000]
                                    [--duration 10] [--warmup 2] [--idle 1] [--repeats 3] [--out DIR]
    python -m benchmarks.forwarding --smoke --out /tmp/bench      # fan-out 1,10; 2 s windows; 1 repeat

Modes
  plain  one comedia producer PlainTransport + N consumer PlainTransports connected to one counting
         sink socket (WorkerChannel API: create_router / create_plain_transport / produce / consume).
  srtp   synthetic WebRTC clients: a controlling ICE client (real STUN checks with USE-CANDIDATE,
         the transport's credentials) + aiortc's RTCDtlsTransport as DTLS client toward a
         WebRtcTransport on the worker's shared port; the producer's VP8-like RTP (mid +
         abs-send-time extensions) is SRTP-protected once before the window; N consumer transports,
         whose client sockets are handed to a draining sink process after the handshakes.
  Reference: benchmarks/minimal_loop.py on the same load (plain: same sink; srtp: SRTP unprotect
  once + per consumer rewrite/protect/send to N sink sockets).

Processes: the SFU under test (benchmarks.sfu_process, or minimal_loop) runs alone in its own process
and is metered by its CPU time (/proc/PID/task/*/schedstat) between two exact packet indices after
warm-up; the driver (this process) paces the generator; sinks run in a third process.
Repetitions are interleaved (rep r: every mode and fan-out, the two implementations in alternating
order); medians per (mode, fan-out, implementation); ratio = StudyRooms / minimal loop.
Output: DIR/<timestamp>/results.csv and summary.json (schema: benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import secrets
import socket
import sys
import time
from typing import Any

from .common import (PY, Child, SinkHandle, cpu_ns, machine_info, median, udp_drops, vp8_packets,
                     vp8_rtp_parameters)

SSRC = 22222222
PT = 96
IMPLS = ("minimal", "studyrooms", "studyrooms-python", "studyrooms-notwcc", "studyrooms-python-notwcc")
# StudyRooms implementations: the forwarding path each one's worker process is forced to. The
# ``-notwcc`` twins (srtp mode) consume without transport-wide-cc, so nothing is stamped: the pair
# measures the end-to-end cost of tw-seq stamping in one run.
SFU_PATHS = {"studyrooms": "on", "studyrooms-python": "off", "studyrooms-notwcc": "on", "studyrooms-python-notwcc": "off"}
TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def without_transport_cc(caps: dict) -> dict:
    """Receiver capabilities that do not offer transport-wide-cc (no tw-seq on what it gets)."""
    caps = dict(caps)
    caps["headerExtensions"] = [e for e in caps.get("headerExtensions") or [] if e.get("uri") != TRANSPORT_CC_URI]
    caps["codecs"] = [dict(c, rtcpFeedback=[fb for fb in c.get("rtcpFeedback") or [] if fb.get("type") != "transport-cc"])
                      for c in caps.get("codecs") or []]
    return caps
DEFAULT_IMPLS = ("minimal", "studyrooms")


def sfu_child(impl: str, max_life: float) -> Child:
    """benchmarks.sfu_process forced to one forwarding path (STUDYROOMS_MEDIA_FAST_PATH)."""
    env = dict(os.environ, STUDYROOMS_MEDIA_FAST_PATH=SFU_PATHS[impl])
    return Child([PY, "-m", "benchmarks.sfu_process", "--max-life", str(max_life)], env=env)

CSV_FIELDS = [
    "mode", "impl", "fanout", "rep", "pps", "window_s", "sent_in", "expected_fwd", "sink_rtp", "sink_drops", "delivery",
    "delivery_received",
    "cpu_s", "idle_cpu_ms_per_s", "cpu_util_pct", "us_per_fwd_pkt", "us_per_fwd_pkt_idle_corr", "us_per_in_pkt",
    "fwd_pkts_per_core_s", "setup_s", "sink_rtcp", "sfu_rx_rtp", "sfu_tx_rtp", "gen_late",
]


# ---------------------------------------------------------------------- synthetic WebRTC client
class ClientPeer:
    """Controlling ICE client + duck-typed ICE transport for aiortc's RTCDtlsTransport, on one raw
    UDP socket connected to the server's candidate (so the fd can later go to the sink process)."""

    role = "controlling"

    def __init__(self, loop: asyncio.AbstractEventLoop, remote: tuple[str, int], ice_params: dict, cert) -> None:
        from aiortc import RTCDtlsTransport

        self.loop = loop
        self.remote = remote
        self.ice_params = ice_params
        self.ufrag = secrets.token_hex(4)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.connect(remote)
        self.sock.setblocking(False)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pending: dict[bytes, asyncio.Future] = {}
        self.media_rx = 0
        self.attached = True
        loop.add_reader(self.sock.fileno(), self._readable)
        self.dtls = RTCDtlsTransport(self, [cert])  # type: ignore[arg-type]

    def _readable(self) -> None:
        from aioice import stun

        for _ in range(64):
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                return
            b0 = data[0] if data else 255
            if b0 < 4:
                try:
                    msg = stun.parse_message(data)
                except ValueError:
                    continue
                fut = self.pending.pop(msg.transaction_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif 19 < b0 < 64:
                self.queue.put_nowait(data)
            else:
                self.media_rx += 1

    async def _check(self, use_candidate: bool, timeout_s: float = 0.5):
        from aioice import stun

        msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        msg.attributes["USERNAME"] = f"{self.ice_params['usernameFragment']}:{self.ufrag}"
        msg.attributes["PRIORITY"] = 1853824767
        msg.attributes["ICE-CONTROLLING"] = secrets.randbits(64)
        if use_candidate:
            msg.attributes["USE-CANDIDATE"] = None
        msg.add_message_integrity(self.ice_params["password"].encode())
        fut = self.loop.create_future()
        self.pending[msg.transaction_id] = fut
        self.sock.send(bytes(msg))
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            self.pending.pop(msg.transaction_id, None)
            return None

    async def ice_connect(self, attempts: int = 10) -> None:
        """Regular nomination toward an ICE-lite server: a plain check, then USE-CANDIDATE."""
        from aioice import stun

        for use_candidate in (False, True):
            for _ in range(attempts):
                resp = await self._check(use_candidate)
                if resp is not None:
                    if resp.message_class != stun.Class.RESPONSE:
                        raise ConnectionError(f"ICE check rejected: {resp.attributes.get('ERROR-CODE')}")
                    break
            else:
                raise ConnectionError("ICE check timed out")

    async def dtls_connect(self, server_fingerprints: list[dict], timeout_s: float = 10.0) -> None:
        from aiortc import RTCDtlsFingerprint, RTCDtlsParameters

        self.dtls._set_role("client")
        params = RTCDtlsParameters(fingerprints=[RTCDtlsFingerprint(algorithm=f["algorithm"].lower(),
                                                                    value=f["value"]) for f in server_fingerprints])
        await asyncio.wait_for(self.dtls.start(params), timeout_s)
        if self.dtls.state != "connected":
            raise ConnectionError(f"DTLS ended in state {self.dtls.state}")

    def fingerprints(self) -> list[dict]:
        return [{"algorithm": f.algorithm, "value": f.value} for f in self.dtls.getLocalParameters().fingerprints]

    def detach(self) -> None:
        """Stop reading the socket here (the sink process drains it from now on)."""
        if self.attached:
            self.loop.remove_reader(self.sock.fileno())
            self.attached = False

    async def _recv(self) -> bytes:
        data = await self.queue.get()
        if data is None:
            raise ConnectionError("closed")
        return data

    async def _send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:
            pass

    async def close(self) -> None:
        self.detach()
        try:
            await asyncio.wait_for(self.dtls.stop(), 1.0)
        except Exception:  # noqa: BLE001
            pass
        self.queue.put_nowait(None)
        self.sock.close()


async def setup_srtp_studyrooms(loop, sfu: Child, fanout: int, cert,
                                twcc: bool = True) -> tuple[ClientPeer, list[ClientPeer]]:
    r = sfu.call("create_router", {})
    router_id, caps = r["routerId"], r["rtpCapabilities"]
    if not twcc:
        caps = without_transport_cc(caps)

    async def open_transport(direction: str) -> tuple[str, ClientPeer, dict]:
        info = sfu.call("create_webrtc_transport", {"routerId": router_id, "direction": direction})
        cand = info["iceCandidates"][0]
        peer = ClientPeer(loop, (cand.get("ip") or cand.get("address"), cand["port"]), info["iceParameters"], cert)
        return info["id"], peer, info

    async def connect(tid: str, peer: ClientPeer, info: dict) -> None:
        await peer.ice_connect()
        sfu.call("connect_webrtc_transport", {"transportId": tid,
                                              "dtlsParameters": {"role": "client",
                                                                 "fingerprints": peer.fingerprints()}})
        await peer.dtls_connect(info["dtlsParameters"]["fingerprints"])

    ptid, producer, pinfo = await open_transport("send")
    await connect(ptid, producer, pinfo)
    prod = sfu.call("produce", {"transportId": ptid, "kind": "video",
                                "rtpParameters": vp8_rtp_parameters(SSRC, PT, with_mid=True)})
    consumers = []
    opened = [await open_transport("recv") for _ in range(fanout)]
    for i in range(0, fanout, 10):  # handshakes 10 at a time
        await asyncio.gather(*(connect(*o) for o in opened[i:i + 10]))
    for tid, peer, _ in opened:
        c = sfu.call("consume", {"transportId": tid, "producerId": prod["id"], "rtpCapabilities": caps,
                                 "paused": False})
        sfu.call("resume_consumer", {"consumerId": c["id"]})
        consumers.append(peer)
    return producer, consumers


# ---------------------------------------------------------------------- one measurement cell
def paced_send(send, packets: list[bytes], pps: float, marks: dict[int, Any]) -> int:
    """Send on an absolute schedule (sleep-only pacing: a spinning generator would steal a core from
    the SFU on a 2-core box); marks[i]() runs right before packet i. Returns late packets."""
    period = 1.0 / pps
    late = 0
    t0 = time.perf_counter()
    for i, pkt in enumerate(packets):
        f = marks.get(i)
        if f is not None:
            f()
        target = t0 + i * period
        now = time.perf_counter()
        if target > now:
            time.sleep(target - now)
        elif now - target > period:
            late += 1
        try:
            send(pkt)
        except (BlockingIOError, ConnectionRefusedError):
            pass
    f = marks.get(len(packets))
    if f is not None:
        f()
    return late


def run_cell(loop, mode: str, impl: str, fanout: int, rep: int, a) -> dict[str, Any]:
    warm_n, meas_n = int(a.pps * a.warmup), int(a.pps * a.duration)
    total = warm_n + meas_n
    t_setup = time.perf_counter()
    sink = sfu = None
    peers: list[ClientPeer] = []
    gen_sock = None
    try:
        if mode == "plain":
            sink = SinkHandle(bind=1, max_life_s=a.max_life)
            if impl in SFU_PATHS:
                sfu = sfu_child(impl, a.max_life)
                r = sfu.call("setup_plain", {"consumers": fanout, "sinkHost": "127.0.0.1",
                                             "sinkPort": sink.ports[0], "ssrc": SSRC, "pt": PT})
                ingest = tuple(r["ingest"])
            else:
                sfu = Child([PY, "-m", "benchmarks.minimal_loop", "--mode", "plain", "--consumers", str(fanout),
                             "--sink-port", str(sink.ports[0]), "--max-life", str(a.max_life)])
                host, port = sfu.info["ingest"].rsplit(":", 1)
                ingest = (host, int(port))
            packets = vp8_packets(total, SSRC, PT, int(a.pps), payload_size=a.payload_size)
            gen_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            gen_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            gen_sock.bind(("127.0.0.1", 0))
            gen_sock.connect(ingest)
            send = gen_sock.send
        else:
            plain = vp8_packets(total, SSRC, PT, int(a.pps), payload_size=a.payload_size, mid="0")
            if impl in SFU_PATHS:
                from aiortc import RTCCertificate

                cert = RTCCertificate.generateCertificate()
                sfu = sfu_child(impl, a.max_life)
                producer, peers = loop.run_until_complete(
                    asyncio.wait_for(setup_srtp_studyrooms(loop, sfu, fanout, cert, twcc=not impl.endswith("-notwcc")), 120))
                peers.append(producer)
                for p in peers[:-1]:
                    p.detach()
                sink = SinkHandle(fds=[p.sock.fileno() for p in peers[:-1]], max_life_s=a.max_life)
                tx = producer.dtls._tx_srtp
                packets = [tx.protect(p) for p in plain]
                send = producer.sock.send
            else:
                from .minimal_loop import srtp_session

                key = os.urandom(30)
                sink = SinkHandle(bind=fanout, max_life_s=a.max_life)
                sfu = Child([PY, "-m", "benchmarks.minimal_loop", "--mode", "srtp", "--consumers", str(fanout),
                             "--dst-ports", ",".join(map(str, sink.ports)), "--key-in", key.hex(),
                             "--max-life", str(a.max_life)])
                host, port = sfu.info["ingest"].rsplit(":", 1)
                tx = srtp_session(key, inbound=False)
                packets = [tx.protect(p) for p in plain]
                gen_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                gen_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                gen_sock.bind(("127.0.0.1", 0))
                gen_sock.connect((host, int(port)))
                send = gen_sock.send
        setup_s = time.perf_counter() - t_setup
        pid = sfu.pid

        # idle CPU (timers, RTCP) before any media
        time.sleep(0.2)
        i0, t0 = cpu_ns(pid), time.perf_counter()
        time.sleep(a.idle)
        idle_ns_per_s = (cpu_ns(pid) - i0) / (time.perf_counter() - t0) if a.idle > 0 else 0.0

        snaps: dict[str, dict] = {}

        def snap(tag: str):
            def f():
                snaps[tag] = {"cpu": cpu_ns(pid), "t": time.perf_counter(), "sink": sink.snapshot(),
                              "drops": udp_drops(sink.ports)}
            return f

        late = paced_send(send, packets, a.pps, {warm_n: snap("start"), total: snap("end")})
        time.sleep(0.3)
        s0, s1 = snaps["start"], snaps["end"]
        wall = s1["t"] - s0["t"]
        cpu = (s1["cpu"] - s0["cpu"]) / 1e9
        exp_fwd = meas_n * fanout
        got = s1["sink"]["rtp"] - s0["sink"]["rtp"]
        drops = s1["drops"] - s0["drops"]
        net_cpu = cpu - idle_ns_per_s / 1e9 * wall
        sfu_rx = sfu_tx = None
        if impl in SFU_PATHS:
            st: dict[str, Any] = {}
            try:
                st = sfu.call("get_stats", {}, timeout_s=10)
                sfu_rx, sfu_tx = st.get("rtpPacketsReceived"), st.get("rtpPacketsSent")
                handled = sfu.call("ingress_handled", {}, timeout_s=10).get("handled")
                print(f"{impl} N={fanout}: rtp received {sfu_rx}, by the compiled receive step {handled}",
                      file=sys.stderr)
            except Exception as exc:  # noqa: BLE001
                print(f"get_stats failed: {exc}", file=sys.stderr)
            want = "compiled" if SFU_PATHS[impl] == "on" else "python"
            if st and st.get("forwardingPath", "python") != want:
                raise RuntimeError(f"{impl}: the worker forwarded on the {st.get('forwardingPath')} path")
        return {
            "mode": mode, "impl": impl, "fanout": fanout, "rep": rep, "pps": a.pps, "window_s": round(wall, 4),
            "sent_in": meas_n, "expected_fwd": exp_fwd, "sink_rtp": got, "sink_drops": drops,
            "delivery": round((got + drops) / exp_fwd, 4) if exp_fwd else None,
            "delivery_received": round(got / exp_fwd, 4) if exp_fwd else None,
            "cpu_s": round(cpu, 5), "idle_cpu_ms_per_s": round(idle_ns_per_s / 1e6, 3),
            "cpu_util_pct": round(100 * cpu / wall, 2) if wall else None,
            "us_per_fwd_pkt": round(cpu * 1e6 / exp_fwd, 3),
            "us_per_fwd_pkt_idle_corr": round(net_cpu * 1e6 / exp_fwd, 3),
            "us_per_in_pkt": round(cpu * 1e6 / meas_n, 3),
            "fwd_pkts_per_core_s": round(exp_fwd / cpu) if cpu > 0 else None,
            "setup_s": round(setup_s, 3), "sink_rtcp": s1["sink"]["rtcp"],
            "sfu_rx_rtp": sfu_rx, "sfu_tx_rtp": sfu_tx, "gen_late": late,
        }
    finally:
        for p in peers:
            try:
                loop.run_until_complete(p.close())
            except Exception:  # noqa: BLE001
                pass
        if gen_sock is not None:
            gen_sock.close()
        if sfu is not None:
            sfu.stop()
        if sink is not None:
            sink.close()


# ---------------------------------------------------------------------- summary
def summarize(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["mode"], r["fanout"]) for r in rows})
    for mode, fanout in keys:
        cell: dict[str, Any] = {"mode": mode, "fanout": fanout}
        for impl in IMPLS:
            rs = [r for r in rows if r["mode"] == mode and r["fanout"] == fanout and r["impl"] == impl]
            if not rs:
                continue
            cell[impl] = {
                "runs": len(rs),
                "us_per_fwd_pkt": median([r["us_per_fwd_pkt"] for r in rs]),
                "us_per_fwd_pkt_min": min((r["us_per_fwd_pkt"] for r in rs), default=None),
                "us_per_fwd_pkt_max": max((r["us_per_fwd_pkt"] for r in rs), default=None),
                "us_per_fwd_pkt_idle_corr": median([r["us_per_fwd_pkt_idle_corr"] for r in rs]),
                "us_per_in_pkt": median([r["us_per_in_pkt"] for r in rs]),
                "fwd_pkts_per_core_s": median([r["fwd_pkts_per_core_s"] for r in rs]),
                "cpu_util_pct": median([r["cpu_util_pct"] for r in rs]),
                "delivery": median([r["delivery"] for r in rs]),
                "delivery_min": min((r["delivery"] for r in rs), default=None),
                "delivery_received_min": min((r["delivery_received"] for r in rs), default=None),
            }
        for impl in SFU_PATHS:
            suffix = "" if impl == "studyrooms" else "_" + impl.split("-", 1)[1]
            s = cell.get(impl, {}).get("us_per_fwd_pkt")
            m = cell.get("minimal", {}).get("us_per_fwd_pkt")
            if impl not in cell:
                continue
            cell["ratio_us_per_fwd_pkt" + suffix] = round(s / m, 3) if s and m else None
            paired = []
            for rep in sorted({r["rep"] for r in rows}):
                pr = {r["impl"]: r for r in rows if r["mode"] == mode and r["fanout"] == fanout and r["rep"] == rep}
                if impl in pr and "minimal" in pr and pr["minimal"]["us_per_fwd_pkt"]:
                    paired.append(pr[impl]["us_per_fwd_pkt"] / pr["minimal"]["us_per_fwd_pkt"])
            cell["ratio_paired_median" + suffix] = round(median(paired), 3) if paired else None
        out.append(cell)
    return out


def print_table(summary: list[dict]) -> None:
    print("\n| mode | N | StudyRooms µs/fwd pkt | minimal µs/fwd pkt | ratio | StudyRooms µs/in pkt | minimal µs/in pkt"
          " | StudyRooms fwd pkt/core-s | minimal fwd pkt/core-s | delivery S / M | Python path µs/fwd pkt (ratio) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    empty: dict[str, Any] = {k: None for k in ("us_per_fwd_pkt", "us_per_in_pkt", "fwd_pkts_per_core_s", "delivery_min")}
    for c in summary:
        s, m = c.get("studyrooms", empty), c.get("minimal", empty)
        py = c.get("studyrooms-python", empty)

        def f(v, d=2):
            return "-" if v is None else f"{v:.{d}f}"

        print(f"| {c['mode']} | {c['fanout']} | {f(s['us_per_fwd_pkt'])} | {f(m['us_per_fwd_pkt'])} | "
              f"{f(c.get('ratio_us_per_fwd_pkt'))} | {f(s['us_per_in_pkt'], 1)} | {f(m['us_per_in_pkt'], 1)} | "
              f"{f(s['fwd_pkts_per_core_s'], 0)} | {f(m['fwd_pkts_per_core_s'], 0)} | "
              f"{f(s['delivery_min'], 3)} / {f(m['delivery_min'], 3)} | "
              f"{f(py['us_per_fwd_pkt'])} ({f(c.get('ratio_us_per_fwd_pkt_python'))}) |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["plain", "srtp", "both"], default="both")
    ap.add_argument("--fanout", default="1,10,50")
    ap.add_argument("--pps", type=float, default=1000.0)
    ap.add_argument("--duration", type=float, default=10.0, help="measured window (s)")
    ap.add_argument("--warmup", type=float, default=2.0, help="media before the window (s)")
    ap.add_argument("--idle", type=float, default=1.0, help="idle-CPU metering before media (s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--payload-size", type=int, default=1000)
    ap.add_argument("--impls", default=",".join(DEFAULT_IMPLS),
                    help="subset of minimal,studyrooms,studyrooms-python,studyrooms-notwcc,studyrooms-python-notwcc "
                         "(studyrooms = the compiled fan-out core, studyrooms-python = STUDYROOMS_MEDIA_FAST_PATH=off; "
                         "-notwcc: srtp consumers without transport-wide-cc, nothing stamped)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--max-life", type=float, default=600.0, help="child processes exit after this (s)")
    ap.add_argument("--smoke", action="store_true", help="fan-out 1,10; 2 s windows; 1 repeat")
    a = ap.parse_args(argv)
    if a.smoke:
        a.fanout, a.duration, a.warmup, a.idle, a.repeats, a.max_life = "1,10", 2.0, 0.5, 0.0, 1, 120.0
    modes = ["plain", "srtp"] if a.mode == "both" else [a.mode]
    fanouts = [int(x) for x in a.fanout.split(",") if x]
    impls = [x for x in a.impls.split(",") if x in IMPLS]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = os.path.join(a.out, stamp)
    os.makedirs(out_dir, exist_ok=True)
    params = {k: getattr(a, k) for k in ("pps", "duration", "warmup", "idle", "repeats", "payload_size", "smoke",
                                         "max_life")}
    params.update(modes=modes, fanouts=fanouts, impls=impls, ssrc=SSRC, pt=PT, srtp_profile="AES_CM_128_HMAC_SHA1_80",
                  sfu_loop="uvloop")
    machine = machine_info()
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    rows: list[dict] = []
    errors: list[str] = []
    csv_path = os.path.join(out_dir, "results.csv")
    started = time.time()
    with open(csv_path, "w", newline="") as fcsv:
        w = csv.DictWriter(fcsv, fieldnames=CSV_FIELDS)
        w.writeheader()
        for rep in range(a.repeats):
            for mode in modes:
                for fanout in fanouts:
                    order = impls if (rep + fanout) % 2 == 0 else list(reversed(impls))
                    for impl in order:
                        try:
                            row = run_cell(loop, mode, impl, fanout, rep, a)
                        except Exception as exc:  # noqa: BLE001 - keep the rest of the matrix
                            msg = f"{mode} {impl} N={fanout} rep={rep}: {type(exc).__name__}: {exc}"
                            print("ERROR " + msg, file=sys.stderr, flush=True)
                            errors.append(msg)
                            continue
                        rows.append(row)
                        w.writerow(row)
                        fcsv.flush()
                        print(f"{mode:5s} {impl:17s} N={fanout:<3d} rep={rep} us/fwd={row['us_per_fwd_pkt']:.2f} "
                              f"us/in={row['us_per_in_pkt']:.1f} delivery={row['delivery']} "
                              f"cpu={row['cpu_util_pct']}%", flush=True)
    loop.close()
    summary = summarize(rows)
    doc = {"schema": "studyrooms-forwarding-bench/1", "timestamp": stamp, "elapsed_s": round(time.time() - started, 1),
           "machine": machine, "parameters": params, "medians": summary, "errors": errors,
           "results_csv": "results.csv"}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print_table(summary)
    print(f"\nwrote {csv_path} and summary.json", flush=True)
    return 0 if rows and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
