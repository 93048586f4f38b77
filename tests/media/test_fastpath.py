"""The compiled fan-out core's switch (STUDYROOMS_MEDIA_FAST_PATH), its no-copy retransmission
history and the transport-wide sequence hook, on real sockets. (Bytes on the wire against the Python
path: tests/sfu/test_fastpath_differential.py.)"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from studyrooms.clock import SystemClock
from studyrooms.errors import InvalidRequestError
from studyrooms.media import fastpath
from studyrooms.media.rtp import build_rtp, parse_rtp
from studyrooms.sfu.options import WorkerOptions
from studyrooms.sfu.worker import Worker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def restore():
    yield
    fastpath.configure()


@pytest.fixture
def broken_build(monkeypatch, restore):
    """As if the compiled module were missing (not built, no compiler on this machine)."""
    import studyrooms.media

    monkeypatch.setitem(sys.modules, "studyrooms.media._fanout", None)  # import raises ImportError
    monkeypatch.delattr(studyrooms.media, "_fanout", raising=False)
    monkeypatch.setattr(fastpath, "lib", None)
    monkeypatch.setattr(fastpath, "_warned", False)
    yield


def test_the_build_is_there_and_on_turns_it_on(restore):
    assert fastpath.configure("on") is True and fastpath.active()
    assert fastpath.describe()["mode"] == "on"
    assert fastpath.configure("off") is False and not fastpath.active()
    with pytest.raises(InvalidRequestError):
        fastpath.configure("fast")


def test_auto_falls_back_with_one_warning_line_and_on_refuses(broken_build, caplog):
    caplog.set_level(logging.WARNING, "studyrooms.media.fastpath")
    assert fastpath.configure("auto") is False
    assert fastpath.configure("auto") is False
    warnings = [r for r in caplog.records if r.name == "studyrooms.media.fastpath"]
    assert len(warnings) == 1 and "pure Python" in warnings[0].getMessage()
    with pytest.raises(fastpath.FastPathUnavailableError, match="make setup"):
        fastpath.configure("on")


async def test_worker_with_on_refuses_to_start_without_the_build(broken_build, monkeypatch):
    monkeypatch.setattr(fastpath, "_mode", None)
    monkeypatch.setenv(fastpath.ENV, "on")
    with pytest.raises(fastpath.FastPathUnavailableError):
        await Worker.create("w-on", WorkerOptions(rtc_min_port=45000, rtc_max_port=45999))
    monkeypatch.setenv(fastpath.ENV, "off")
    fastpath.configure()
    worker = await Worker.create("w-off", WorkerOptions(rtc_min_port=45000, rtc_max_port=45999))
    try:
        assert worker.get_stats()["forwardingPath"] == "python"
    finally:
        await worker.close()


def test_studyrooms_serve_with_on_refuses_to_start_when_the_core_is_not_built(tmp_path):
    """`studyrooms serve` from a tree where the extension was never built: exit 1, one clear line."""
    for pkg in ("studyrooms", "actors"):
        shutil.copytree(os.path.join(ROOT, pkg), tmp_path / pkg,
                        ignore=shutil.ignore_patterns("_fanout*.so", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDYROOMS_")}
    env.update(STUDYROOMS_MEDIA_FAST_PATH="on", PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "actors.cli", "serve", "--port", "0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "STUDYROOMS_MEDIA_FAST_PATH=on" in proc.stderr and "make setup" in proc.stderr
    assert "serving" not in proc.stdout


# ------------------------------------------------------------------------------------ the core itself
def _stream(seq: int, pkt: bytes, ext_seq: int, twcc_off: int = -1) -> SimpleNamespace:
    p = parse_rtp(pkt)
    return SimpleNamespace(last_seq=seq, last_ts=p[3], last_keyframe=True, ssrc=p[4], last_payload_offset=p[5],
                           last_payload_end=len(pkt), mid_value_offset=-1, last_receive_time=1.0 + ext_seq / 100,
                           last_ext_seq=ext_seq)


def _consumer(ssrc: int, cell: fastpath.TransportCell, buffer_packets: int = 64) -> SimpleNamespace:
    ss = fastpath.FastSendStream(ssrc=ssrc, payload_type=101, clock_rate=90000, kind="video", codec="VP8", mid=None,
                                 buffer_packets=buffer_packets, clock=SystemClock(), initial_seq=1000,
                                 initial_ts=0)
    ss.attach_transport(cell)
    ss.cell.active = 1
    return SimpleNamespace(send_stream=ss)


def test_history_is_shared_and_transport_wide_seq_is_stamped(restore):
    """Two consumers on one transport: the packet bytes are stored once (one History slot per
    ingress packet), both rings rebuild their own packets from it, and with the transport-wide seq
    enabled every packet sent carries the next transport seq in the reserved slot + one record."""
    fastpath.configure("on")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        cell = fastpath.TransportCell(require_srtp=False)
        cell.set_destination(tx, rx.getsockname())
        stamper = cell.enable_transport_wide_seq(first_seq=65534, system_clock=False)
        fan = fastpath.Fanout()
        consumers = [_consumer(7000, cell), _consumer(8000, cell)]
        fan.set_consumers(consumers)
        sent = []
        for i in range(3):
            # a one-byte extension block with id 5 (2 bytes) reserved for the transport-wide seq
            pkt = build_rtp(payload_type=96, seq=40 + i, ts=3000 * i, ssrc=1111, payload=bytes([i]) * 50,
                            extensions=[(5, b"\x00\x00")])
            assert pkt[16] == 0x51  # header, extension header, then the slot's element header
            nev, gated = fan.run(bytearray(pkt), 0, _stream(40 + i, pkt, i), True)
            assert gated == 0
            sent.append(pkt)
        got = [rx.recv(2000) for _ in range(6)]
        assert [parse_rtp(g)[4] for g in got] == [7000, 8000] * 3
        assert [parse_rtp(g)[2] for g in got] == [1000, 1000, 1001, 1001, 1002, 1002]
        assert [int.from_bytes(g[17:19], "big") for g in got] == [65534, 65535, 0, 1, 2, 3]
        # the send records the estimator joins feedback with: (sent_at, plaintext size, probe cluster)
        assert [stamper.lookup(s) for s in (65534, 65535, 0, 1, 2, 3)] == [
            (1.0 + i / 100, len(sent[0]), -1) for i in (0, 0, 1, 1, 2, 2)]
        assert stamper.lookup(4) is None and stamper.stamped == 6
        # a packet Python sends (RTX answer, probe padding) takes the next seq from the same counter
        stamper.cluster = 7
        rtx = stamper.stamp(sent[0], 5.0)
        assert int.from_bytes(rtx[17:19], "big") == 4 and stamper.lookup(4) == (5.0, len(sent[0]), 7)
        assert stamper.seq == 5 and sent[0][17:19] == b"\x00\x00"  # the input is not modified
        plain = build_rtp(payload_type=96, seq=1, ts=0, ssrc=1, payload=b"x")
        assert stamper.stamp(plain, 6.0) == plain and stamper.unstamped == 1 and stamper.seq == 5
        assert len(fan._hists) == 1  # one history for the encoding, not one copy per consumer
        for c in consumers:
            ss = c.send_stream
            assert (ss.packets, ss.max_seq) == (3, 1002)
            again = ss.get_buffered(1001)
            assert again[8:12] == ss.ssrc.to_bytes(4, "big") and again[2:4] == (1001).to_bytes(2, "big")
            assert again[19:] == sent[1][19:]  # same payload, from the shared slot
            assert ss.get_buffered(999) is None
        stats = cell.stats()
        assert stats["rtp"] == 6 and stats["dropped"] == 0
        cell.close()  # the owner closes the cell before its socket: later packets are counted, not sent
        fan.run(bytearray(sent[0]), 0, _stream(43, sent[0], 3), True)
        assert cell.stats()["dropped"] == 2
    finally:
        rx.close()
        tx.close()


def test_malformed_packets_never_crash_the_core(restore):
    """Random and truncated packets (VP8 descriptors cut anywhere, bogus extension blocks, offsets past
    the end) through the core with everything on: VP8 rewriting, temporal-layer dropping, the history,
    transport-wide seq stamping. A bad bounds check would crash this process (SIGSEGV) or corrupt what
    the core reports; every packet must be either sent whole or counted."""
    import random

    fastpath.configure("on")
    rng = random.Random(1313)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        cell = fastpath.TransportCell(require_srtp=False)
        cell.set_destination(tx, rx.getsockname())
        stamper = cell.enable_transport_wide_seq(system_clock=False)
        fan = fastpath.Fanout()
        consumers = [_consumer(7000 + i, cell) for i in range(3)]
        for i, c in enumerate(consumers):
            c.send_stream.cell.vp8 = 1
            c.send_stream.cell.keyframe_gating = 0
            c.send_stream.cell.target_temporal = (-1, 0, 1)[i]
            c.send_stream.cell.current_temporal = (-1, 0, 1)[i]
        fan.set_consumers(consumers)
        good = build_rtp(payload_type=96, seq=1, ts=0, ssrc=1111, extensions=[(1, b"0" * 8), (5, b"\x00\x00")],
                         payload=bytes([0x90, 0xE0, 0x81, 0x23, 0x07, 0x60]) + bytes(100))
        off = parse_rtp(good)[5]
        total = 0
        for i in range(4000):
            kind = i % 4
            if kind == 0:  # random bytes, any length (the core's own minimum is 12)
                pkt = rng.randbytes(rng.randrange(0, 80))
            elif kind == 1:  # a valid packet truncated anywhere (descriptor, extension block)
                pkt = good[:rng.randrange(0, len(good) + 1)]
            else:  # valid header, random descriptor/extension bytes
                pkt = bytearray(good)
                for _ in range(rng.randrange(1, 6)):
                    pkt[rng.randrange(12, min(len(pkt), off + 8))] = rng.getrandbits(8)
                pkt = bytes(pkt)
            n = len(pkt)
            stream = SimpleNamespace(
                last_seq=i & 0xFFFF, last_ts=i * 3000, last_keyframe=rng.random() < 0.2, ssrc=1111,
                last_payload_offset=rng.choice((off, rng.randrange(-3, n + 20))),
                last_payload_end=rng.choice((n, rng.randrange(-3, n + 20))),
                mid_value_offset=rng.choice((-1, 17, rng.randrange(-3, n + 20))),
                last_receive_time=1.0 + i / 1000, last_ext_seq=i)
            nev, gated = fan.run(bytearray(pkt), 0, stream, True)
            assert nev >= 0 and gated == 0
            total += n >= 12
        drained = 0
        while True:
            try:
                rx.recv(4096)
            except BlockingIOError:
                break
            drained += 1
        sent = sum(c.send_stream.packets for c in consumers)
        dropped = sum(c.send_stream.cell.tl_dropped for c in consumers)
        assert 0 < sent and sent + dropped == 3 * total  # every packet >= 12 bytes: sent or dropped by TID
        assert cell.stats()["rtp"] + cell.stats()["dropped"] == sent
        assert stamper.stamped + stamper.unstamped == sent and stamper.stamped > 0
        assert drained <= sent
    finally:
        rx.close()
        tx.close()
