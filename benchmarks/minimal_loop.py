"""The minimal forwarding loop of docs/performance.md: the reference StudyRooms is measured beside.

uvloop; one ingress UDP socket; per ingress packet: SRTP unprotect once (srtp mode), parse
(b1, seq, ts) once; per consumer: ONE struct.pack_into rewriting PT/marker, seq, timestamp and SSRC,
SRTP protect with that consumer's own session (srtp mode), and send() on a socket connected to
that consumer's address (pre-resolved: no address parsing per packet). No RTCP, no NACK buffer, no
keyframe gating: this is the floor, not a product.

    python -m benchmarks.minimal_loop --consumers N --sink-host 127.0.0.1 --sink-port P [--mode plain]
    python -m benchmarks.minimal_loop --mode srtp --consumers N --dst-ports p1,p2,... --key-in HEX

Speaks the bench-harness adapter contract (prints ONE JSON line {"pid", "ingest", "ssrc", "pt",
"codec"}, exits on stdin EOF), so it also runs under the external comparison harness
(see harness/studyrooms_adapter.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import sys

SSRC_IN = 22222222
PT = 96
SRTP_KEY_LEN = 30  # AES_CM_128_HMAC_SHA1_80: 16-byte key + 14-byte salt


def srtp_session(key: bytes, inbound: bool):
    from pylibsrtp import Policy, Session

    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND,
                    srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return Session(policy)


class Forwarder(asyncio.DatagramProtocol):
    def __init__(self, outs, rx) -> None:
        # outs: list of (send, protect|None, pt, seq_off, ts_off, ssrc)
        self.outs = outs
        self.rx = rx
        self.received = 0
        self.sent = 0
        self.dropped = 0
        self.errors = 0

    def datagram_received(self, data: bytes, addr) -> None:
        self.received += 1
        if self.rx is not None:
            try:
                data = self.rx(data)
            except Exception:  # noqa: BLE001 - auth/replay failure
                self.errors += 1
                return
        if len(data) < 12:
            return
        b1, seq, ts = _unpack_from("!BHI", data, 1)
        marker = b1 & 0x80
        buf = bytearray(data)
        for send, protect, pt, seq_off, ts_off, ssrc in self.outs:
            _pack_into("!BHII", buf, 1, marker | pt, (seq + seq_off) & 0xFFFF, (ts + ts_off) & 0xFFFFFFFF, ssrc)
            try:
                send(protect(bytes(buf)) if protect is not None else buf)
                self.sent += 1
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                self.dropped += 1


_unpack_from = struct.unpack_from
_pack_into = struct.pack_into


async def run(a) -> None:
    loop = asyncio.get_running_loop()
    srtp = a.mode == "srtp"
    ports = [int(p) for p in a.dst_ports.split(",")] if a.dst_ports else [a.sink_port] * a.consumers
    if len(ports) == 1 and a.consumers > 1:
        ports = ports * a.consumers
    outs = []
    socks = []
    for i, port in enumerate(ports[: a.consumers]):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.bind((a.listen_ip, 0))
        s.connect((a.sink_host, port))
        s.setblocking(False)
        socks.append(s)
        protect = srtp_session(os.urandom(SRTP_KEY_LEN), False).protect if srtp else None
        outs.append((s.send, protect, 100 + (i % 20), 1000 * i, 3000 * i, 0x10000000 + i))
    rx = srtp_session(bytes.fromhex(a.key_in), True).unprotect if srtp else None
    ingress = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ingress.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    ingress.bind((a.listen_ip, a.port))
    ingress.setblocking(False)
    fwd = Forwarder(outs, rx)
    transport, _ = await loop.create_datagram_endpoint(lambda: fwd, sock=ingress)
    print(json.dumps({"pid": os.getpid(), "ingest": f"{a.listen_ip}:{ingress.getsockname()[1]}", "ssrc": SSRC_IN,
                      "pt": PT, "codec": "vp8", "consumers": a.consumers, "mode": a.mode}), flush=True)
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
    transport.close()
    for s in socks:
        s.close()
    print(json.dumps({"received": fwd.received, "sent": fwd.sent, "dropped": fwd.dropped, "errors": fwd.errors}),
          file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["plain", "srtp"], default="plain")
    ap.add_argument("--consumers", type=int, default=1)
    ap.add_argument("--sink-host", default="127.0.0.1")
    ap.add_argument("--sink-port", type=int, default=50000)
    ap.add_argument("--dst-ports", default="", help="one destination port per consumer (default: sink-port)")
    ap.add_argument("--key-in", default="", help="hex SRTP master key+salt (30 bytes) of the ingress stream")
    ap.add_argument("--listen-ip", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ap.add_argument("--max-life", type=float, default=900.0, help="exit after this many seconds regardless")
    a = ap.parse_args()
    if a.mode == "srtp" and len(bytes.fromhex(a.key_in)) != SRTP_KEY_LEN:
        ap.error("--key-in must be 30 bytes of hex in srtp mode")
    if a.loop == "uvloop":
        import uvloop

        uvloop.run(run(a))
    else:
        asyncio.run(run(a))


if __name__ == "__main__":
    main()
