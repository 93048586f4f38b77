"""Micro-benchmark of the per-packet media code: RecvStream.receive and SendStream.send, and the
downlink bandwidth work (issue 10): tw-seq stamping per sent packet, the sender's tw-seq recorded per
received packet, TransportFeedback parse + send-record join + estimator per reported packet, probe
padding built per packet.

CPU time (time.process_time) per operation over many iterations, median of several repetitions,
printed as JSON. Realistic shapes: a Chrome VP8 packet (~1000-byte payload, mid + abs-send-time +
transport-cc extensions, the latter dropped) and an Opus packet with audio level.

    .venv/bin/python benchmarks/media_microbench.py [--iterations N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import struct
import sys
import time

from studyrooms.clock import FakeClock
from studyrooms.media import rtcp
from studyrooms.media.recv_stream import RecvStream
from studyrooms.media.rtp import build_rtp, parse_rtp
from studyrooms.media.send_stream import SendStream
from studyrooms.media.bwe import SendSideBwe
from studyrooms.media.twcc import TwccRecorder, TwccStamper, parse_feedback


def _video_packets(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        desc = bytes([0x90, 0x80, 0x80 | ((i >> 8) & 0x7F), i & 0xFF])  # X, S; I with 15-bit pid
        payload = desc + bytes([0x00 if i % 100 == 0 else 0x01]) + b"\xab" * 1000
        out.append(
            build_rtp(
                payload_type=96,
                seq=i & 0xFFFF,
                ts=(i // 3) * 3000,
                ssrc=0x11111111,
                payload=payload,
                marker=i % 3 == 2,
                extensions=[(9, b"0"), (2, b"\x01\x02\x03"), (4, bytes([i >> 8 & 0xFF, i & 0xFF]))],
            )
        )
    return out


def _audio_packets(count: int) -> list[bytes]:
    return [
        build_rtp(
            payload_type=111,
            seq=i & 0xFFFF,
            ts=i * 960,
            ssrc=0x22222222,
            payload=b"\x55" * 120,
            extensions=[(9, b"1"), (14, bytes([0x80 | 40]))],
        )
        for i in range(count)
    ]


def _recv_video(clock: FakeClock) -> RecvStream:
    return RecvStream(
        ssrc=0x11111111, kind="video", codec="vp8", clock_rate=90000, payload_type_map={96: 101},
        ext_id_map={9: 1, 2: 4}, reserve_mid_ext_id=1, audio_level_ext_id=None, rtx_ssrc=0x33333333,
        rtx_payload_type=97, clock=clock,
    )


def _recv_audio(clock: FakeClock) -> RecvStream:
    return RecvStream(
        ssrc=0x22222222, kind="audio", codec="opus", clock_rate=48000, payload_type_map={111: 100},
        ext_id_map={9: 1, 14: 10}, reserve_mid_ext_id=1, audio_level_ext_id=10, clock=clock,
    )


def _send(clock: FakeClock, kind: str) -> SendStream:
    return SendStream(
        ssrc=0x44444444, payload_type=101 if kind == "video" else 100,
        clock_rate=90000 if kind == "video" else 48000, kind=kind, codec="vp8" if kind == "video" else "opus",
        mid="12", rtx_ssrc=0x55555555, rtx_payload_type=102, clock=clock, keyframe_gating=False,
    )


def _time(fn, n: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        runs.append((time.process_time() - t0) / n * 1e6)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n = args.iterations
    clock = FakeClock()
    vpk = _video_packets(n)
    apk = _audio_packets(n)
    results: dict[str, float] = {}

    def recv_video() -> None:
        rs = _recv_video(clock)
        r = rs.receive
        for p in vpk:
            r(p)

    def recv_audio() -> None:
        rs = _recv_audio(clock)
        r = rs.receive
        for p in apk:
            r(p)

    rs = _recv_video(clock)
    normalised = [
        (rs.receive(p), rs.mid_value_offset, rs.last_seq, rs.last_ts, rs.last_keyframe) for p in vpk
    ]

    def send_video() -> None:
        ss = _send(clock, "video")
        s = ss.send
        for buf, mvo, seq, ts, kf in normalised:
            s(buf, mvo, seq, ts, kf, 0x11111111)

    def send_video_x10() -> None:
        streams = [_send(clock, "video") for _ in range(10)]
        for buf, mvo, seq, ts, kf in normalised:
            for ss in streams:
                ss.send(buf, mvo, seq, ts, kf, 0x11111111)

    def parse_only() -> None:
        for p in vpk:
            parse_rtp(p)

    rewrite = struct.Struct("!BHII")
    mid_elem = bytes([0x11]) + b"12" + bytes(6)

    def reference_minimal_forward() -> None:
        # the floor a forwarder cannot avoid in Python: header rewrite in place, MID write, one
        # bytes() snapshot kept in a ring (no tracking, no counters, no function call per packet)
        ring: list[bytes | None] = [None] * 600
        for buf, mvo, seq, ts, _kf in normalised:
            out_seq, out_ts = (seq + 5) & 0xFFFF, (ts + 7) & 0xFFFFFFFF
            rewrite.pack_into(buf, 1, (buf[1] & 0x80) | 101, out_seq, out_ts, 0x44444444)
            buf[mvo - 1 : mvo + 8] = mid_elem
            ring[seq % 600] = bytes(buf)

    def reference_copy() -> None:
        for p in vpk:
            bytearray(p)

    ss = _send(clock, "video")
    for buf, mvo, seq, ts, kf in normalised[:600]:
        ss.send(buf, mvo, seq, ts, kf, 0x11111111)
    nack_seqs = list(range(ss.max_seq - 20, ss.max_seq))

    def nack_rtx() -> None:
        for _ in range(n // 20):
            clock.advance(1.0)  # past the per-seq resend guard (one RTT)
            ss.on_nack(nack_seqs)

    # --- downlink bandwidth estimation (issue 10)
    rs_t = RecvStream(
        ssrc=0x11111111, kind="video", codec="vp8", clock_rate=90000, payload_type_map={96: 101},
        ext_id_map={9: 1, 2: 4, 4: 5}, reserve_mid_ext_id=1, audio_level_ext_id=None, rtx_ssrc=0x33333333,
        rtx_payload_type=97, clock=clock, reserve_twcc_ext_id=5,
    )
    ss_t = _send(clock, "video")
    sent = [ss_t.send(rs_t.receive(p), rs_t.mid_value_offset, rs_t.last_seq, rs_t.last_ts, True, 0x11111111)
            for p in vpk]

    def twcc_stamp() -> None:
        st = TwccStamper()
        stamp = st.stamp
        for i, d in enumerate(sent):
            stamp(d, i * 0.001)

    def twcc_ingress_record() -> None:
        rec = TwccRecorder()
        rec.ext_id = 4
        on = rec.on_rtp
        for i, p in enumerate(vpk):
            on(p, i * 0.001)
            if i % 100 == 99:
                rec.build(1)

    st = TwccStamper()
    rec = TwccRecorder()
    feedbacks = []
    for i, d in enumerate(sent[:20000]):
        st.record(len(d), i * 0.0005)
        rec.on_packet(i & 0xFFFF, 5.0 + i * 0.0005, 1)
        if i % 50 == 49:
            feedbacks.extend(rec.build(1))

    def twcc_feedback() -> None:
        bwe = SendSideBwe(600_000)
        lookup = st.lookup
        for k, fb in enumerate(feedbacks):
            parsed = parse_feedback(fb, 0, len(fb))
            results_ = []
            for seq, arr in parsed[2]:
                r = lookup(seq)
                if r is not None:
                    results_.append((r[0], r[1], r[2], arr / 1e6 if arr >= 0 else None))
            bwe.on_packet_results(results_, k * 0.025)

    def probe_padding() -> None:
        b = ss_t.build_rtx_padding
        for _ in range(n // 10):
            b(255)

    results["twcc_stamp_per_sent_packet_us"] = _time(twcc_stamp, n, args.repeat)
    results["twcc_ingress_record_per_received_packet_us"] = _time(twcc_ingress_record, n, args.repeat)
    results["twcc_feedback_handling_per_reported_packet_us"] = _time(
        twcc_feedback, len(feedbacks) * 50, args.repeat)
    results["probe_padding_build_per_packet_us"] = _time(probe_padding, n // 10, args.repeat)
    results["reference_bytearray_copy_us"] = _time(reference_copy, n, args.repeat)
    results["reference_minimal_forward_us"] = _time(reference_minimal_forward, n, args.repeat)
    results["parse_rtp_us"] = _time(parse_only, n, args.repeat)
    results["recv_video_receive_us"] = _time(recv_video, n, args.repeat)
    results["recv_audio_receive_us"] = _time(recv_audio, n, args.repeat)
    results["send_video_send_us"] = _time(send_video, n, args.repeat)
    results["send_video_send_per_copy_at_10_consumers_us"] = _time(send_video_x10, n * 10, args.repeat)
    results["rtx_retransmit_per_packet_us"] = _time(nack_rtx, (n // 20) * 20, args.repeat)
    results["nack_build_us"] = _time(
        lambda: [rtcp.build_nack(1, 2, nack_seqs) for _ in range(n // 10)], n // 10, args.repeat
    )
    print(
        json.dumps(
            {
                "benchmark": "media_microbench",
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "iterations": n,
                "repeat": args.repeat,
                "clock": "process_time",
                "results_us_per_op": {k: round(v, 3) for k, v in results.items()},
                "send_over_minimal_forward": round(
                    results["send_video_send_per_copy_at_10_consumers_us"]
                    / results["reference_minimal_forward_us"],
                    2,
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
