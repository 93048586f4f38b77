"""BandwidthAllocator decisions for given estimates and priorities (duck-typed transport/consumers:
the allocator reads only the attributes listed in its module docstring)."""

from __future__ import annotations

from types import SimpleNamespace

from studyrooms.clock import FakeClock
from studyrooms.sfu.bandwidth_allocator import UPGRADE_HOLD_S, BandwidthAllocator

LAYERS = (150_000, 500_000, 1_200_000)


class Stream:
    def __init__(self, bps):
        self.bps = bps

    def bitrate_bps(self, now):
        return self.bps


class Producer:
    def __init__(self, transport_id, source="camera", layers=LAYERS):
        self.transport = SimpleNamespace(id=transport_id)
        self.source = source
        self.streams = [Stream(b) for b in layers]
        self.rtp_parameters = {"encodings": [{} for _ in layers]}
        self._heights = [180, 360, 720][: len(layers)]

    def layer_heights(self):
        return self._heights

    def active_stream_indexes(self, now, window):
        return [i for i, s in enumerate(self.streams) if s.bps > 0]


class Consumer:
    def __init__(self, cid, producer, kind="video", temporal=3, audio_bps=0):
        self.id = cid
        self.kind = kind
        self.producer = producer
        self.type = "simulcast" if kind == "video" and len(producer.streams) > 1 else "simple"
        self.priority = 1
        self.paused = False
        self.producer_paused = False
        self.preferred_spatial_layer = 2
        self.preferred_temporal_layer = -1
        self.temporal_layer_count = temporal
        self.send_stream = Stream(audio_bps)
        self.applied = None

    def apply_allocation(self, spatial, temporal, reason):
        self.applied = (spatial, temporal, reason)


class Bwe:
    def __init__(self, bps, source="transport-cc"):
        self.bps = bps
        self.source = source
        self.probes = []
        self.initial_probe_done = True
        self.has_feedback = True

    def available_bitrate_bps(self):
        return self.bps

    def request_probe(self, target):
        self.probes.append(target)
        return True


def make(estimate, *consumers, source="transport-cc", speaker=None, recency=None):
    """``speaker`` / ``recency`` (producer transport id -> order) are the room's speaker decision,
    given to the allocator as each consumer's inputs (as Consumer.set_forwarding does)."""
    clock = FakeClock()
    transport = SimpleNamespace(id="recv", clock=clock, closed=False, media_ready=True,
                                consumers={c.id: c for c in consumers}, bwe=Bwe(estimate, source))
    alloc = BandwidthAllocator(transport)
    for c in consumers:
        inp = alloc.inputs(c.id)
        inp.speaker = c.producer.transport.id == speaker
        inp.speaker_recency = int((recency or {}).get(c.producer.transport.id, 0))
    return alloc, transport, clock


def cam(cid, who, **kw):
    return Consumer(cid, Producer(who, **kw))


def test_enough_bandwidth_gives_everyone_the_top_layer_and_no_probe():
    a, b = cam("a", "pa"), cam("b", "pb")
    alloc, t, _ = make(5_000_000, a, b)
    alloc.run()
    assert a.applied == (2, 2, "best-layer") and b.applied == (2, 2, "best-layer")
    assert t.bwe.probes == []


def test_priority_then_speaker_then_recency_and_lowest_paused_first():
    a, b, c = cam("a", "pa"), cam("b", "pb"), cam("c", "pc")
    screen = Consumer("s", Producer("pd", source="screen", layers=(400_000,)))
    audio = Consumer("m", Producer("pa", layers=(40_000,)), kind="audio", audio_bps=40_000)
    # 1.1 Mbps - 40 k audio: all get their lowest rung (screen 160 k, cameras 60 k at TL0); then in
    # order screen (400 k), b the speaker (480p, 500 k), a (spoke last: TL1 of 180p), c stays lowest
    alloc, t, _ = make(1_100_000, a, b, c, screen, audio, speaker="pb", recency={"pa": 5.0, "pc": 1.0})
    alloc.run()
    assert screen.applied == (0, 2, "best-layer")
    assert b.applied == (1, 2, "bandwidth")
    assert a.applied == (0, 1, "bandwidth")
    assert c.applied == (0, 0, "bandwidth")
    assert audio.applied is None  # audio is never allocated, never dropped
    assert t.bwe.probes and t.bwe.probes[0] > 1_100_000  # wants more: probe
    assert alloc.decisions["b"]["group"] == "speaker" and alloc.decisions["s"]["group"] == "screen"
    # 300 k for video: the screen share (a lead) keeps its best fitting layer (TL1, 240 k); the
    # rest go to the others' lowest rungs in order (b, the speaker); a and c do not fit: paused
    t.bwe.bps = 340_000
    alloc.run()
    assert c.applied == (-1, -1, "paused-bandwidth") and a.applied == (-1, -1, "paused-bandwidth")
    assert screen.applied[:2] == (0, 1) and b.applied[:2] == (0, 0)
    # an explicit priority beats the groups: c now goes first, a (last in order) is paused
    c.priority = 200
    alloc.run()
    assert a.applied == (-1, -1, "paused-bandwidth")
    assert c.applied[2] == "upgrade-hold" or c.applied[0] == 0


def test_on_stage_keeps_its_best_fitting_layer_before_the_others_lowest():
    """The CI flake of the constrained-link test: at ~160 kbps the on-stage video was cut to its
    lowest layer so that another camera's lowest layer fitted too."""
    a, b, c = cam("a", "pa"), cam("b", "pb"), cam("c", "pc")
    audio = Consumer("m", Producer("pm", layers=(20_000,)), kind="audio", audio_bps=20_000)
    alloc, t, clock = make(160_000, a, b, c, audio)
    alloc.inputs("b").on_stage = True
    alloc.run()
    # 140 k for video: b's ladder 60 / 90 / 150 k -> 90 k (TL1); 50 k left is no one's lowest rung
    assert b.applied == (0, 1, "bandwidth")
    assert a.applied == c.applied == (-1, -1, "paused-bandwidth")
    assert alloc.decisions["b"]["group"] == "on-stage"
    # the estimate grows: b goes to its preferred layer (360p) first, then the others' lowest rungs
    t.bwe.bps = 700_000
    clock.advance(UPGRADE_HOLD_S + 0.1)
    for _ in range(3):
        alloc.run()
        clock.advance(1.1)
    assert b.applied[:2] == (1, 2)  # 500 k
    assert a.applied[:2] == c.applied[:2] == (0, 1)  # 180 k left: 60 k each, then TL1 (+30 k each)
    # above the preferred layer the lead is just first in order: 1.2 M for b does not come before
    # the others' lowest rungs
    t.bwe.bps = 1_300_000
    for _ in range(4):
        alloc.run()
        clock.advance(1.1)
    assert b.applied[:2] == (1, 2) and a.applied[0] >= 0 and c.applied[0] >= 0


def test_a_leads_higher_resolution_never_pauses_another_cameras_lowest_layer():
    """Issue 10: with the lead's whole preferred rung first, an estimate that paid for its 360p but
    not also for the thumbnails' lowest layers kept the thumbnails paused (17 s at the start of a
    real call). The lead now takes its lowest resolution at full frame rate, then the others get
    their lowest layers, then the lead goes on to its preferred layer."""
    a, b, c = cam("a", "pa"), cam("b", "pb"), cam("c", "pc")
    alloc, t, clock = make(600_000, a, b, c)
    alloc.inputs("b").on_stage = True
    alloc.run()
    # b: 150 k (180p, full rate); a, c: 60 k each; 500 k for b's 360p would leave no lowest rungs
    assert b.applied[:2] == (0, 2)
    assert a.applied[0] == 0 and c.applied[0] == 0
    assert all(x.applied[:2] <= b.applied[:2] for x in (a, c))  # nobody above the lead
    # enough for the lead's 360p and everyone's lowest: the lead's preferred rung comes first
    t.bwe.bps = 720_000
    clock.advance(UPGRADE_HOLD_S + 0.1)
    for _ in range(3):
        alloc.run()
        clock.advance(1.1)
    assert b.applied[:2] == (1, 2) and a.applied[0] == 0 and c.applied[0] == 0  # 620 k, then 100 k to share


def test_explicit_priority_makes_a_lead_and_a_lone_lead_always_flows():
    a, b = cam("a", "pa"), cam("b", "pb")
    alloc, _, _ = make(30_000, a, b)
    b.priority = 255
    alloc.run()
    assert b.applied[:2] == (0, 0) and a.applied == (-1, -1, "paused-bandwidth")


def test_temporal_layers_are_dropped_before_pausing():
    a = cam("a", "pa")
    alloc, _, _ = make(100_000, a)
    alloc.run()
    # lowest encoding 150 k: 40 % (TL0) = 60 k and 60 % (TL0+1) = 90 k fit, 100 % does not
    assert a.applied == (0, 1, "bandwidth")


def test_initial_probe_once_feedback_arrives():
    a = cam("a", "pa")
    alloc, t, _ = make(2_000_000, a)  # the top layer fits the start estimate
    t.bwe.initial_probe_done = False
    t.bwe.has_feedback = False
    alloc.run()
    assert t.bwe.probes == []  # nothing to measure yet
    t.bwe.has_feedback = True
    alloc.run()
    assert t.bwe.probes == [6_000_000]  # 3 x the estimate, even with everything at its top layer


def test_remb_only_estimate_never_pauses():
    a, b = cam("a", "pa"), cam("b", "pb")
    alloc, _, _ = make(50_000, a, b, source="remb")
    alloc.run()
    assert a.applied[0] == 0 and b.applied[0] == 0


def test_preferred_layers_and_max_height_cap_the_ladder():
    a, b = cam("a", "pa"), cam("b", "pb")
    a.preferred_spatial_layer = 1
    alloc, _, _ = make(10_000_000, a, b)
    alloc.inputs("b").max_height = 400
    alloc.run()
    assert a.applied == (1, 2, "preferred-layers")
    assert b.applied == (1, 2, "max-height")
    alloc.inputs("b").forwardable = False
    alloc.run()
    assert b.applied == (-1, -1, "not-forwardable")


def test_downgrade_at_once_upgrade_one_step_after_hold():
    a = cam("a", "pa")
    alloc, t, clock = make(5_000_000, a)
    alloc.run()
    assert a.applied[:2] == (2, 2)
    t.bwe.bps = 300_000
    alloc.run()
    assert a.applied[:2] == (0, 2)  # straight down, no waiting
    t.bwe.bps = 5_000_000
    alloc.run()
    assert a.applied[2] == "upgrade-hold" and a.applied[:2] == (0, 2)
    clock.advance(UPGRADE_HOLD_S + 0.1)
    alloc.run()
    assert a.applied[:2] == (1, 2) and a.applied[2] == "stepping-up"  # one rung
    alloc.run()
    assert a.applied[:2] == (1, 2)  # at most one step per UPGRADE_INTERVAL_S
    clock.advance(1.1)
    alloc.run()
    assert a.applied == (2, 2, "best-layer")


def test_measured_temporal_layer_rates_price_the_rungs():
    """Rungs are priced from the producer's per-TID measurement when it exists (a 3-layer VP8
    stream where TL0 carries 25 %, not the assumed 40 %)."""
    a = cam("a", "pa")
    a.producer.temporal_bitrates = lambda index, now: [37_500 * (index + 1), 75_000 * (index + 1),
                                                       LAYERS[index]][: 3]
    alloc, _, _ = make(80_000, a)
    alloc.run()
    # assumed split: TL0 60 k, TL1 90 k -> only TL0 would fit; measured: TL1 is 75 k and fits
    assert a.applied == (0, 1, "bandwidth")
    assert alloc.decisions["a"]["bitrate"] == 75_000
    a.producer.temporal_bitrates = lambda index, now: None  # nothing measured: the split again
    alloc.run()
    assert alloc.decisions["a"]["bitrate"] == 60_000 and a.applied[:2] == (0, 0)
