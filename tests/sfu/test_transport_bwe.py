"""TransportBwe's probe pacer and probe back-off (duck-typed transport, real SendStream/TwccStamper,
FakeClock): what goes on the wire during a probe cluster, and when the next one may start."""

from __future__ import annotations

from types import SimpleNamespace

from studyrooms.clock import FakeClock
from studyrooms.media.rtp import parse_rtp
from studyrooms.sfu import transport_bwe
from studyrooms.sfu.transport_bwe import TransportBwe

from media._util import ROUTER_TCC, VP8_KEY, chrome_video_packet, chrome_video_recv, send_stream


def make(history: int, size: int = 1000, buffer_packets: int = 600):
    clock = FakeClock()
    rs = chrome_video_recv(clock, ext_id_map={9: 1, 2: 4, 4: ROUTER_TCC}, reserve_twcc_ext_id=ROUTER_TCC)
    ss = send_stream(clock, rtx_ssrc=0xABC, rtx_payload_type=102, buffer_packets=buffer_packets)
    for i in range(history):
        pkt = rs.receive(chrome_video_packet(100 + i, 9000 + i, VP8_KEY + bytes(size)))
        ss.send(pkt, rs.mid_value_offset, rs.last_seq, rs.last_ts, rs.last_keyframe, rs.ssrc)
    wire: list[bytes] = []
    consumer = SimpleNamespace(kind="video", closed=False, send_stream=ss)
    transport = SimpleNamespace(id="t", clock=clock, closed=False, consumers={"c": consumer}, allocator=None,
                                rtcp=SimpleNamespace(remote_remb_bps=0))
    bwe = TransportBwe(transport, initial_bps=600_000, max_bps=10_000_000)
    transport.send_rtp = lambda data: wire.append(bytes(bwe.stamper.stamp(data, clock.now())))
    bwe.enable_stamping()
    bwe._last_feedback_at = clock.now()  # as if TransportFeedback had just arrived
    return bwe, clock, wire, ss


def run_cluster(bwe, clock):
    for _ in range(transport_bwe.PROBE_BURSTS + 1):
        clock.advance(transport_bwe.PROBE_BURST_INTERVAL_S)


def test_probe_cluster_resends_recent_media_as_rtx_and_stamps_every_packet():
    bwe, clock, wire, ss = make(history=40)
    assert bwe.request_probe(4_000_000)
    run_cluster(bwe, clock)
    assert not bwe.probing and wire
    media_seqs = {(ss.max_seq - d) & 0xFFFF for d in range(40)}
    rtx = [p for p in wire if not p[0] & 0x20]
    assert rtx and all(parse_rtp(p)[4] == 0xABC and parse_rtp(p)[0] == 102 for p in wire)
    for p in rtx:  # real media: OSN is one of the last packets sent
        assert int.from_bytes(p[parse_rtp(p)[5]:parse_rtp(p)[5] + 2], "big") in media_seqs
    assert bwe.probe_rtx_packets_sent == len(rtx) and bwe.probe_packets_sent == len(wire)
    assert bwe.stamper.stamped == len(wire) and bwe.stamper.unstamped == 0  # every probe has a tw-seq
    # the cluster is about the target: 1.8 Mbps x 25 ms (3x the 600 k start, capped) within one packet
    sent = sum(len(p) for p in wire)
    assert abs(sent - 1_800_000 / 8 * 0.025) < 1100, sent


def test_without_history_the_probe_is_padding_only():
    bwe, clock, wire, _ = make(history=40, buffer_packets=1)  # a stream that keeps no history
    assert bwe.request_probe(4_000_000)
    run_cluster(bwe, clock)
    assert wire and all(p[0] & 0x20 for p in wire)  # P bit: padding-only
    assert bwe.probe_rtx_packets_sent == 0 and bwe.stamper.unstamped == 0


def test_probes_back_off_while_they_find_nothing_and_reset_on_success():
    bwe, clock, _, _ = make(history=40)
    assert bwe.request_probe(4_000_000)
    run_cluster(bwe, clock)
    clock.advance(1.0)
    bwe._last_feedback_at = clock.now()
    assert not bwe.request_probe(4_000_000)  # the estimate did not grow: wait 2 s now
    clock.advance(1.0)
    bwe._last_feedback_at = clock.now()
    assert bwe.request_probe(4_000_000)
    run_cluster(bwe, clock)
    clock.advance(2.5)
    bwe._last_feedback_at = clock.now()
    assert not bwe.request_probe(4_000_000)  # failed again: 4 s
    clock.advance(1.5)
    assert bwe.request_probe(4_000_000)
    bwe.estimator.aimd.bitrate = 2 * bwe.estimator.aimd.bitrate  # this one worked
    run_cluster(bwe, clock)
    clock.advance(1.0)
    bwe._last_feedback_at = clock.now()
    assert bwe.request_probe(4_000_000)  # back to 1 s
    assert bwe.stats()["probeIntervalS"] == transport_bwe.PROBE_MIN_INTERVAL_S
