"""Shared helpers for the forwarding benchmarks: CPU metering, machine info, synthetic VP8 RTP,
the JSON-lines child-process RPC, and the counting sink process handle.

Nothing here is timed itself; it only prepares load and reads counters.
"""

from __future__ import annotations

import json
import mmap
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PY = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


# ---------------------------------------------------------------------- CPU metering
def cpu_ns(pid: int) -> int:
    """Process CPU time (ns): sum of /proc/PID/task/*/schedstat run time (ns resolution);
    falls back to utime+stime ticks from /proc/PID/stat."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
        if total:
            return total
    except FileNotFoundError:
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // CLK_TCK


def udp_drops(ports) -> int:
    """Sum of receive drops (sk_drops, last column of /proc/net/udp) of the sockets bound to these
    local ports: datagrams the forwarder did emit but a starved sink socket could not queue."""
    want = {f"{p:04X}" for p in ports}
    total = 0
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[1].rsplit(":", 1)[1] in want:
                    total += int(cols[-1])
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return total


def machine_info() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    try:
        from importlib import metadata

        for pkg in ("uvloop", "pylibsrtp", "aiortc", "aioice", "cryptography", "pyOpenSSL", "psutil"):
            try:
                versions[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                versions[pkg] = None
    except ImportError:
        pass
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        commit = None
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "kernel": platform.release(),
        "packages": versions,
        "git_commit": commit,
        "loadavg": os.getloadavg(),
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---------------------------------------------------------------------- synthetic VP8 RTP
def vp8_packets(n: int, ssrc: int, pt: int = 96, pps: int = 1000, fps: int = 30, payload_size: int = 1000,
                keyframe_every: int = 30, mid: str | None = None, seq0: int = 1000, ts0: int = 12345) -> list[bytes]:
    """n VP8-looking RTP packets (RFC 7741 descriptor with 15-bit PictureID, S bit on a frame's first
    packet, marker on its last; a key frame every `keyframe_every` frames, frame 0 included).
    With `mid`, a one-byte header extension block carries mid (id 1) and abs-send-time (id 3)."""
    per_frame = max(1, round(pps / fps))
    ts_step = 90000 // fps
    filler = bytes((i * 7) & 0xFF for i in range(payload_size))
    out = []
    for i in range(n):
        frame, idx = divmod(i, per_frame)
        first, last = idx == 0, idx == per_frame - 1
        key = frame % keyframe_every == 0
        b0 = 0x90 if mid is not None else 0x80
        hdr = struct.pack("!BBHII", b0, (0x80 if last else 0) | pt, (seq0 + i) & 0xFFFF,
                          (ts0 + frame * ts_step) & 0xFFFFFFFF, ssrc)
        if mid is not None:
            m = mid.encode()
            ext = bytes([(1 << 4) | (len(m) - 1)]) + m + bytes([(3 << 4) | 2]) + (i & 0xFFFFFF).to_bytes(3, "big")
            ext += b"\x00" * (-len(ext) % 4)
            hdr += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
        pid = 0x8000 | (frame & 0x7FFF)
        desc = struct.pack("!BBHBB", 0x80 | (0x10 if first else 0), 0xE0, pid, frame & 0xFF, 0x20)
        body_len = max(payload_size - len(desc), 16)
        if first:
            vp8hdr = bytes([0x10 | (0 if key else 1), 0, 0]) + (b"\x9d\x01\x2a" + struct.pack("<HH", 640, 360)
                                                                if key else b"")
            body = vp8hdr + filler[: body_len - len(vp8hdr)]
        else:
            body = filler[:body_len]
        out.append(hdr + desc + body)
    return out


def vp8_rtp_parameters(ssrc: int, pt: int = 96, with_mid: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {
        "codecs": [{"mimeType": "video/VP8", "payloadType": pt, "clockRate": 90000, "parameters": {},
                    "rtcpFeedback": [{"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"},
                                     {"type": "ccm", "parameter": "fir"}]}],
        "headerExtensions": [],
        "encodings": [{"ssrc": ssrc}],
        "rtcp": {"cname": "bench", "reducedSize": True},
    }
    if with_mid:
        params["mid"] = "0"
        params["headerExtensions"] = [{"uri": MID_URI, "id": 1, "encrypt": False, "parameters": {}},
                                      {"uri": ABS_SEND_TIME, "id": 3, "encrypt": False, "parameters": {}}]
    return params


# ---------------------------------------------------------------------- plain-RTP setup through the channel API
async def setup_plain(request, consumers: int, sink_host: str, sink_port: int, ssrc: int, pt: int = 96) -> dict:
    """1 comedia producer PlainTransport + `consumers` PlainTransports connected to the sink, through
    WorkerChannel-style `request(method, data)`. Returns {routerId, ingest: (ip, port), producerId, ...}."""
    r = await request("create_router", {})
    router_id, caps = r["routerId"], r["rtpCapabilities"]
    pt_in = await request("create_plain_transport", {"routerId": router_id, "comedia": True, "rtcpMux": True})
    prod = await request("produce", {"transportId": pt_in["id"], "kind": "video",
                                     "rtpParameters": vp8_rtp_parameters(ssrc, pt)})
    consumer_ids = []
    for _ in range(consumers):
        t = await request("create_plain_transport", {"routerId": router_id, "comedia": False, "rtcpMux": True})
        await request("connect_plain_transport", {"transportId": t["id"], "ip": sink_host, "port": sink_port})
        c = await request("consume", {"transportId": t["id"], "producerId": prod["id"], "rtpCapabilities": caps,
                                      "paused": False})
        await request("resume_consumer", {"consumerId": c["id"]})
        consumer_ids.append(c["id"])
    tup = pt_in["tuple"]
    return {"routerId": router_id, "ingest": (tup["localIp"], tup["localPort"]), "producerId": prod["id"],
            "consumerIds": consumer_ids, "rtpCapabilities": caps}


# ---------------------------------------------------------------------- JSON-lines child process
class Child:
    """A child process that prints one JSON line (its info) and exits on stdin EOF; optional
    JSON-lines RPC over its stdin/stdout afterwards."""

    def __init__(self, cmd: list[str], pass_fds=(), timeout_s: float = 30.0, env=None):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
                                     pass_fds=tuple(pass_fds), env=env, bufsize=1)
        self.info = self._readline(timeout_s)
        self.pid = self.info.get("pid", self.proc.pid)
        self._id = 0

    def _readline(self, timeout_s: float) -> dict:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout_s):
                self.stop()
                raise TimeoutError(f"child {self.proc.args!r} printed nothing in {timeout_s}s")
        finally:
            sel.close()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(5)
            raise RuntimeError(f"child {self.proc.args!r} exited (rc={self.proc.returncode})")
        return json.loads(line)

    def call(self, method: str, data: dict | None = None, timeout_s: float = 30.0) -> Any:
        self._id += 1
        self.proc.stdin.write(json.dumps({"id": self._id, "method": method, "data": data or {}}) + "\n")
        self.proc.stdin.flush()
        reply = self._readline(timeout_s)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def stop(self, timeout_s: float = 10.0) -> None:
        try:
            self.proc.stdin.close()
        except Exception:  # noqa: BLE001
            pass
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by handle
            self.proc.wait(5)


class SinkHandle:
    """Counting sink subprocess (benchmarks.sink_proc): counters in a shared mmap'd file."""

    SLOTS = 4  # packets, bytes, rtcp-looking packets, polls

    def __init__(self, fds=(), bind: int = 0, max_life_s: float = 600.0):
        self._tmp = tempfile.NamedTemporaryFile(prefix="bench-sink-", delete=False)
        self._tmp.write(b"\0" * 8 * self.SLOTS)
        self._tmp.flush()
        cmd = [PY, "-m", "benchmarks.sink_proc", "--counters", self._tmp.name, "--bind", str(bind),
               "--max-life", str(max_life_s), "--fds", ",".join(str(f) for f in fds)]
        self.child = Child(cmd, pass_fds=fds)
        self.ports = self.child.info.get("ports", [])
        self._mm = mmap.mmap(self._tmp.fileno(), 8 * self.SLOTS, access=mmap.ACCESS_READ)

    def snapshot(self) -> dict[str, int]:
        pk, by, rtcp, polls = struct.unpack_from("<4Q", self._mm, 0)
        return {"rtp": pk, "bytes": by, "rtcp": rtcp, "polls": polls}

    def close(self) -> None:
        self.child.stop()
        self._mm.close()
        self._tmp.close()
        try:
            os.unlink(self._tmp.name)
        except OSError:
            pass


def wait_until(pred, timeout_s: float, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return pred()
