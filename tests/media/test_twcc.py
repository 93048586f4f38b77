"""Transport-wide cc bytes: the reserved slot, egress stamping + send record, feedback parsing
(against TransportFeedback captured from real Chromium, tests/media/fixtures/chrome_twcc.json, made
with scripts/capture_twcc.py) and feedback generation toward senders."""

from __future__ import annotations

import json
from pathlib import Path

from studyrooms.clock import FakeClock
from studyrooms.media.bwe import SendSideBwe
from studyrooms.media.rtp import build_rtp, iter_extensions, parse_rtp
from studyrooms.media.twcc import TwccRecorder, TwccStamper, parse_feedback, twcc_slot_offset

from ._util import ROUTER_TCC, VP8_KEY, chrome_video_packet, chrome_video_recv, send_stream

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "chrome_twcc.json").read_text())


def _ext_values(data: bytes) -> dict[int, bytes]:
    p = parse_rtp(data)
    return {xid: bytes(data[o:o + n]) for xid, o, n in iter_extensions(data, p[6], p[7], p[8])}


def _forwarded(clock, seq=100, payload=VP8_KEY, mid="1", **kw):
    """A Chrome packet through ingress normalisation and a consumer's rewrite, as send_rtp gets it."""
    rs = chrome_video_recv(clock, ext_id_map={9: 1, 2: 4, 4: ROUTER_TCC}, reserve_twcc_ext_id=ROUTER_TCC)
    pkt = rs.receive(chrome_video_packet(seq, 9000, payload, tcc=0x4242))
    ss = send_stream(clock, mid=mid, **kw)
    data = ss.send(pkt, rs.mid_value_offset, rs.last_seq, rs.last_ts, rs.last_keyframe, rs.ssrc)
    return data, ss


def test_ingress_reserves_the_slot_and_never_forwards_the_senders_seq():
    clock = FakeClock()
    data, _ = _forwarded(clock)
    values = _ext_values(data)
    assert values[ROUTER_TCC] == b"\x00\x00"  # our empty slot, not the sender's 0x4242
    assert data.count(b"\x42\x42") == 0
    assert values[1].rstrip(b"\x00") == b"1"  # the consumer's MID in the MID slot


def test_stamp_writes_consecutive_seqs_and_the_send_record():
    clock = FakeClock()
    data, ss = _forwarded(clock, mid="12345678")  # a MID filling the whole slot
    stamper = TwccStamper(initial_seq=0xFFFE)
    out = [stamper.stamp(data, 10.0 + i) for i in range(3)]
    assert [int.from_bytes(_ext_values(o)[ROUTER_TCC], "big") for o in out] == [0xFFFE, 0xFFFF, 0]
    assert all(o[:twcc_slot_offset(o)] == data[:twcc_slot_offset(data)] for o in out)  # nothing else moved
    assert stamper.lookup(0xFFFF) == (11.0, len(data), -1)
    assert stamper.lookup(1) is None  # not sent yet
    # RTX retransmission and probe padding carry the slot too
    ss.rtx_enabled, ss.rtx_ssrc, ss.rtx_payload_type = True, 0xABC, 102
    rtx = ss._rtx_wrap(data)
    pad = ss.build_rtx_padding(200)
    for pkt in (rtx, pad):
        stamped = stamper.stamp(pkt, 20.0)
        assert int.from_bytes(_ext_values(stamped)[ROUTER_TCC], "big") == stamper.seq - 1
    assert parse_rtp(pad)[4] == 0xABC and len(pad) == 12 + 4 + 12 + 200
    assert stamper.stamped == 5 and stamper.unstamped == 0


def test_packet_without_slot_is_sent_unstamped():
    stamper = TwccStamper()
    plain = build_rtp(payload_type=100, seq=1, ts=1, ssrc=1, payload=b"x", extensions=[(1, b"abc")])
    assert stamper.stamp(plain, 1.0) is plain
    assert stamper.unstamped == 1 and stamper.stamped == 0


def test_chromium_feedback_parses_and_joins_the_send_record():
    packets = FIXTURE["feedback"]
    assert len(packets) >= 20
    total = received = joined = 0
    bwe = SendSideBwe(600_000)
    for i, entry in enumerate(packets):
        raw = bytes.fromhex(entry["hex"])
        parsed = parse_feedback(raw, 0, len(raw))
        assert parsed is not None, f"feedback {i} did not parse"
        _media, fb_count, items = parsed
        count = int.from_bytes(raw[14:16], "big")
        assert len(items) == count
        assert items[0][0] == int.from_bytes(raw[12:14], "big")
        got = [a for _, a in items if a >= 0]
        total += len(items)
        received += len(got)
        results = []
        for seq, arrival in items:
            sent = entry["sent"].get(str(seq))
            if sent is not None:
                joined += 1
                results.append((sent[0], sent[1], -1, arrival / 1e6 if arrival >= 0 else None))
        # on loopback the one-way delay varies little: arrival deltas follow send deltas
        pairs = [(r[0], r[3]) for r in results if r[3] is not None]
        for (s0, a0), (s1, a1) in zip(pairs, pairs[1:]):
            assert abs((a1 - a0) - (s1 - s0)) < 0.25
        bwe.on_packet_results(results, 100.0 + i * 0.1)
        # truncations never raise and never parse
        assert parse_feedback(raw[: len(raw) - 4 - (len(raw) - 20) // 2], 0, len(raw)) is None
    assert received >= 0.95 * total and joined >= 0.9 * total
    assert bwe.packets_acked >= 0.95 * joined and bwe.estimate_bps >= 300_000


def test_feedback_generation_round_trip_with_losses_and_large_gaps():
    rec = TwccRecorder()
    arrivals = {}
    t = 50.0
    for seq in list(range(65530, 65536)) + list(range(0, 20)):
        if seq in (65533, 3, 4, 5):
            continue  # lost
        t += 0.3 if seq == 10 else 0.001  # a 300 ms stall needs a 2-byte delta
        rec.on_packet(seq, t, 0x1234)
        arrivals[seq] = t
    out = rec.build(0x5346)
    assert out
    seen = {}
    for pkt in out:
        parsed = parse_feedback(pkt, 0, len(pkt))
        assert parsed is not None and parsed[0] == 0x1234
        for seq, arr in parsed[2]:
            seen[seq] = arr
    assert set(k for k, v in seen.items() if v >= 0) == set(arrivals)
    assert all(seen[s] == -1 for s in (65533, 3, 4, 5))
    keys = sorted(arrivals, key=lambda s: arrivals[s])
    for a, b in zip(keys, keys[1:]):  # 250 us resolution
        assert abs((seen[b] - seen[a]) / 1e6 - (arrivals[b] - arrivals[a])) < 0.0006
    assert rec.build(0x5346) == []  # nothing new
    rec.on_packet(20, t + 0.01, 0x1234)
    pkt = rec.build(1)[0]
    nxt = parse_feedback(pkt, 0, len(pkt))
    assert nxt is not None and nxt[2] == [(20, nxt[2][0][1])] and nxt[1] == (out and len(out))


def test_recorder_reads_the_senders_extension_from_raw_rtp():
    rec = TwccRecorder()
    rec.ext_id = 4
    rec.on_rtp(chrome_video_packet(1, 1, tcc=777), 1.0)
    rec.on_rtp(build_rtp(payload_type=97, seq=2, ts=1, ssrc=9, extensions=[(4, b"\x03\x0a")], padding=200), 1.001)
    rec.on_rtp(build_rtp(payload_type=97, seq=3, ts=1, ssrc=9, extensions=[(4, b"\x03\x0b")], two_byte=True), 1.002)
    pkt = rec.build(1)[0]
    parsed = parse_feedback(pkt, 0, len(pkt))
    got = [s for s, a in parsed[2] if a >= 0]
    assert got == [777, 778, 779]


def test_rtx_probe_resends_recent_media_with_osn_rtx_ssrc_pt_and_a_tw_seq():
    """Bandwidth probes carry real media when history exists (libwebrtc): RFC 4588 RTX of a recent
    packet, OSN in the first two payload bytes, RTX SSRC/PT/own seq, MID and tw-seq slot kept."""
    clock = FakeClock()
    rs = chrome_video_recv(clock, ext_id_map={9: 1, 2: 4, 4: ROUTER_TCC}, reserve_twcc_ext_id=ROUTER_TCC)
    ss = send_stream(clock, mid="1", rtx_ssrc=0xABC, rtx_payload_type=102)
    sent = []
    for i in range(3):
        pkt = rs.receive(chrome_video_packet(100 + i, 9000 + i, VP8_KEY + bytes(i * 10), tcc=0x4242))
        sent.append(ss.send(pkt, rs.mid_value_offset, rs.last_seq, rs.last_ts, rs.last_keyframe, rs.ssrc))
    stamper = TwccStamper(initial_seq=500)
    for depth, original in ((0, sent[2]), (2, sent[0])):
        probe = ss.build_rtx_probe(depth, 2000)
        o, p = parse_rtp(original), parse_rtp(probe)
        assert (p[0], p[4]) == (102, 0xABC)  # RTX payload type and SSRC
        assert p[3] == o[3]  # the original timestamp
        assert probe[p[5]:p[5] + 2] == o[2].to_bytes(2, "big")  # OSN: the original (output) seq
        assert probe[p[5] + 2:] == original[o[5]:]  # then the original payload, byte for byte
        assert probe[12:p[5]] == original[12:o[5]]  # the extension block (MID, tw slot) kept
        stamped = stamper.stamp(probe, 1.0)
        assert int.from_bytes(_ext_values(stamped)[ROUTER_TCC], "big") == stamper.seq - 1
    rtx_seqs = [parse_rtp(ss.build_rtx_probe(1, 2000))[2] for _ in range(2)]
    assert (rtx_seqs[1] - rtx_seqs[0]) & 0xFFFF == 1  # the RTX stream's own consecutive seqs
    assert ss.build_rtx_probe(5, 2000) is None  # not in the history (only 3 packets sent)
    assert ss.build_rtx_probe(0, 40) is None  # larger than what is left of the burst
    assert stamper.stamped == 2 and stamper.unstamped == 0
