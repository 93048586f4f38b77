"""Bytes on the wire: capture the UDP datagrams sent on the loopback interface.

An ``AF_PACKET`` socket bound to ``lo`` sees every datagram a process on this machine sends to
127.0.0.1 (each once as outgoing; only those are kept), whichever process or Ray actor sent it. It
needs CAP_NET_RAW (root, as in CI); :func:`capture_or_skip` skips the test plainly otherwise.

:func:`check_srtp` is the test's proof that a pipe carries SRTP: each captured RTP datagram
authenticates and decrypts under the key the pipe's sending end announced (AEAD_AES_256_GCM: a
16-byte tag a plain RTP packet cannot carry by chance), and its payload on the wire differs from
the decrypted one.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


class LoopbackCapture:
    """UDP datagrams (src port, dst port, payload) sent on ``lo`` while running; bounded."""

    def __init__(self, max_datagrams: int = 20000) -> None:
        self.max_datagrams = max_datagrams
        self.datagrams: list[tuple[int, int, bytes]] = []
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lo-capture", daemon=True)

    def __enter__(self) -> "LoopbackCapture":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.datagrams) < self.max_datagrams:
            try:
                frame, addr = self._sock.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            if addr[2] != PACKET_OUTGOING or len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] != 17:  # UDP only
                continue
            src, dst, length = struct.unpack("!HHH", ip[ihl:ihl + 6])
            self.datagrams.append((src, dst, bytes(ip[ihl + 8:ihl + length])))

    def between(self, src_port: int, dst_port: int) -> list[bytes]:
        return [d for s, p, d in list(self.datagrams) if s == src_port and p == dst_port]

    def wait_for(self, src_port: int, dst_port: int, count: int, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.between(src_port, dst_port)) < count:
            time.sleep(0.05)
        return self.between(src_port, dst_port)


def capture_or_skip() -> LoopbackCapture:
    try:
        return LoopbackCapture()
    except PermissionError:
        pytest.skip("capturing on lo needs CAP_NET_RAW (run as root, as CI does)")


def is_rtp(datagram: bytes) -> bool:
    return len(datagram) >= 12 and datagram[0] & 0xC0 == 0x80 and not 191 < datagram[1] < 224


def check_srtp(datagrams: list[bytes], sender_srtp: dict, receiver_srtp: dict) -> int:
    """Assert every RTP datagram is SRTP under the sender's key; returns how many were checked."""
    from studyrooms.net.srtp import SrtpPair

    # decrypt as the receiving end does: its own key for sending, the sender's for receiving
    pair = SrtpPair.from_keys(sender_srtp["cryptoSuite"], receiver_srtp["keyBase64"], sender_srtp["keyBase64"])
    checked = 0
    for datagram in datagrams:
        if not is_rtp(datagram):
            continue
        plain = pair.unprotect_rtp(datagram)
        assert plain is not None, "a datagram on the pipe does not authenticate under the pipe's SRTP key"
        assert len(datagram) == len(plain) + 16  # the GCM tag
        header = 12 + 4 * (plain[0] & 0x0F)
        if plain[0] & 0x10:  # header extension: in the clear too
            header += 4 + 4 * struct.unpack("!H", plain[header + 2:header + 4])[0]
        assert datagram[header:header + 16] != plain[header:header + 16], "payload sent in the clear"
        checked += 1
    return checked
