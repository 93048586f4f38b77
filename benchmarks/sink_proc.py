"""Counting UDP sink (its own process): drains given socket fds (inherited) or one socket it binds,
counts RTP vs RTCP-looking datagrams into a shared file the driver mmaps. No decryption.

    python -m benchmarks.sink_proc --counters FILE [--bind 0] [--fds 5,6,7] [--max-life 600]
prints {"pid", "ports": [...]} then runs until stdin EOF, parent exit, or --max-life seconds.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import select
import socket
import struct
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counters", required=True)
    ap.add_argument("--bind", type=int, default=0, help="bind this many sockets on 127.0.0.1 (ephemeral ports)")
    ap.add_argument("--fds", default="")
    ap.add_argument("--max-life", type=float, default=600.0)
    a = ap.parse_args()
    socks = []
    for fd in [int(x) for x in a.fds.split(",") if x]:
        socks.append(socket.socket(fileno=fd))
    for _ in range(a.bind):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    # deep buffers (a shared, noisy 2-core box can stall this process for 100s of ms), but at most
    # ~32 MB in total: past the host-wide udp_mem limit EVERY UDP socket drops, the forwarder's
    # ingress included, and the loss would be charged to the forwarder
    per_socket = max(1 << 20, min(16 << 20, (32 << 20) // max(1, len(socks))))
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, per_socket)  # SO_RCVBUFFORCE (root only)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, per_socket)
        s.setblocking(False)
    with open(a.counters, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 32)
    print(json.dumps({"pid": os.getpid(), "ports": [s.getsockname()[1] for s in socks]}), flush=True)

    ep = select.epoll()
    by_fd = {}
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = s
    stdin_fd = sys.stdin.fileno()
    ep.register(stdin_fd, select.EPOLLIN | select.EPOLLHUP)
    parent = os.getppid()
    buf = bytearray(2048)
    rtp = nbytes = rtcp = polls = 0
    deadline = time.monotonic() + a.max_life
    while True:
        events = ep.poll(0.5)
        polls += 1
        for fd, _ in events:
            if fd == stdin_fd:
                if not os.read(stdin_fd, 4096):
                    return
                continue
            recv_into = by_fd[fd].recv_into
            for _ in range(256):  # bounded drain per wake-up
                try:
                    n = recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    break
                if n > 1 and 191 < buf[1] < 224:
                    rtcp += 1
                else:
                    rtp += 1
                    nbytes += n
        struct.pack_into("<4Q", mm, 0, rtp, nbytes, rtcp, polls)
        if (not events or polls % 64 == 0) and (os.getppid() != parent or time.monotonic() > deadline):
            return


if __name__ == "__main__":
    main()
