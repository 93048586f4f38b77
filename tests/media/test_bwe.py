"""Send-side estimator on synthetic arrival series: overuse -> decrease, steady delay -> increase,
underuse -> hold, loss -> decrease, a probe cluster -> jump to what the link carried."""

from __future__ import annotations

from studyrooms.media.bwe import OVERUSING, UNDERUSING, SendSideBwe, TrendlineEstimator


def feed(bwe: SendSideBwe, seconds: float, send_bps: float, link_bps: float | None, *, t0: float = 0.0,
         loss_every: int = 0, cluster: int = -1, size: int = 1200, state: dict | None = None) -> float:
    """Packets of ``size`` sent at ``send_bps`` through a bottleneck of ``link_bps`` (None: no limit,
    20 ms one-way); feedback every 50 ms. Returns the time reached (``state["sent"]``: packets)."""
    state = state if state is not None else {}
    queue_free = state.get("queue_free", 0.0)
    n = state.get("n", 0)
    interval = size * 8 / send_bps
    t = t0
    batch: list = []
    next_fb = t0 + 0.05
    while t < t0 + seconds:
        n += 1
        if link_bps:
            start = max(t, queue_free)
            queue_free = start + size * 8 / link_bps
            arrival = queue_free + 0.02
        else:
            arrival = t + 0.02
        lost = loss_every and n % loss_every == 0
        batch.append((t, size, cluster, None if lost else arrival))
        t += interval
        if t >= next_fb:
            bwe.on_packet_results(batch, t)
            batch = []
            next_fb += 0.05
    if batch:
        bwe.on_packet_results(batch, t)
    state.update(queue_free=queue_free, sent=n - state.get("n", 0), n=n)
    return t


def test_growing_queue_is_overuse_and_the_estimate_drops_below_the_link():
    bwe = SendSideBwe(2_000_000)
    feed(bwe, 3.0, send_bps=2_000_000, link_bps=1_000_000)
    assert bwe.trendline.state == OVERUSING or bwe.estimate_bps < 1_000_000
    assert bwe.estimate_bps < 1_000_000  # 0.85 x what got through


def test_steady_delay_lets_the_estimate_grow_up_to_1_5x_acked():
    bwe = SendSideBwe(500_000)
    feed(bwe, 5.0, send_bps=480_000, link_bps=None)
    assert bwe.trendline.state not in (OVERUSING, UNDERUSING)
    assert 520_000 < bwe.estimate_bps <= 1.5 * 480_000 + 10_000 + 1


def test_draining_queue_is_underuse_and_holds():
    trend = TrendlineEstimator()
    t = 0.0
    for i in range(40):  # arrival spacing shrinks: the queue drains
        t += 20.0
        state = trend.update(recv_delta_ms=12.0, send_delta_ms=20.0, arrival_ms=t)
    assert state == UNDERUSING


def test_loss_above_ten_percent_cuts_the_estimate():
    bwe = SendSideBwe(1_000_000)
    feed(bwe, 3.0, send_bps=800_000, link_bps=None, loss_every=4)  # 25 % loss
    assert bwe.loss_fraction > 0.2
    assert bwe.estimate_bps < 800_000


def test_probe_cluster_raises_the_estimate_to_what_arrived():
    bwe = SendSideBwe(600_000)
    state: dict = {}
    t = feed(bwe, 1.0, send_bps=500_000, link_bps=3_000_000, state=state)
    bwe.probe_started(1)
    t = feed(bwe, 0.06, send_bps=2_400_000, link_bps=3_000_000, t0=t, cluster=1, state=state)
    bwe.probe_finished(1, state["sent"])
    feed(bwe, 0.2, send_bps=500_000, link_bps=3_000_000, t0=t, state=state)
    result = bwe.evaluate_probe(1, t + 0.3)
    assert 2_000_000 < result < 2_800_000
    assert bwe.estimate_bps >= 2_000_000


def test_probe_on_a_narrow_link_reports_the_link():
    bwe = SendSideBwe(600_000)
    state: dict = {}
    t = feed(bwe, 1.0, send_bps=400_000, link_bps=1_000_000, state=state)
    bwe.probe_started(2)
    t = feed(bwe, 0.06, send_bps=3_000_000, link_bps=1_000_000, t0=t, cluster=2, state=state)
    bwe.probe_finished(2, state["sent"])
    feed(bwe, 0.3, send_bps=300_000, link_bps=1_000_000, t0=t, state=state)
    result = bwe.evaluate_probe(2, t + 0.4)
    assert 700_000 < result <= 1_000_000
