"""Send-side bandwidth estimation from transport-wide feedback (the parts of GoogCC an SFU needs).

Per transport, fed with the packet results joined from TransportFeedback and our send record
(:class:`studyrooms.media.twcc.TwccStamper`):

* **delay-based** — packets are grouped by send time (5 ms bursts); for consecutive groups the
  delay variation ``(arrival delta - send delta)`` is accumulated, smoothed, and a least-squares
  *trendline* over the last 20 groups gives the queueing-delay slope. An adaptive threshold turns
  the slope into *overusing* / *underusing* / *normal* (:class:`TrendlineEstimator`).
* **AIMD rate control** (:class:`AimdRateControl`) — overuse: decrease to 0.85 x the acknowledged
  (received) bitrate; normal: increase, multiplicatively (~8 %/s) far from the last congestion
  point, additively near it; never more than 1.5 x acknowledged + 10 kbps; underuse: hold.
* **loss-based** — over ~0.5 s windows, loss above 10 % cuts the estimate by half the loss
  fraction; below 2 % the loss cap grows back by 8 % per window.
* **probe results** — packets sent during a probe cluster (see the probe pacer in ``sfu``) give a
  send rate and a receive rate; ``min`` of the two raises the estimate at once when the detector
  is not overusing, so the estimate can reach what the link carries without waiting for AIMD.
  As in GoogCC a cluster counts only when >= 80 % of its packets arrived and they did not
  arrive more than 2x faster than they were sent. Two bounds keep a short cluster from overstating the link:
  the result is at most the rate the cluster was asked to measure (media sent in the window and
  whole RTX packets overshoot small bursts), and within ``CONGESTION_MEMORY_S`` of a congestion
  decrease (delay overuse or loss above 10 %) it is at most ``PROBE_AFTER_CONGESTION`` x the
  current estimate (or the throughput delivered at the congestion point, if more): the estimate
  climbs back 1.5x per good probe instead of jumping to whatever one cluster read. (Not 1.5x the
  throughput delivered now: that holds the estimate just under what the next video needs, and
  what is delivered only grows once the estimate lets it.) A token-bucket shaper or
  policer (``tc tbf``, a DSL/LTE policer) lets a 25 ms cluster through at line rate from its
  saved tokens, so without the second bound a probe on a saturated 150 kbit/s link read
  ~580 kbit/s and moved video up a spatial layer the link could not carry (issue 10).

All times are seconds (floats); the receiver's arrival clock is only used for differences.
"""

from __future__ import annotations

import math
from collections import deque

GROUP_LENGTH_S = 0.005
TREND_WINDOW = 20
SMOOTHING = 0.9
THRESHOLD_GAIN = 4.0
OVERUSE_TIME_MS = 10.0
K_UP, K_DOWN = 0.0087, 0.039
BETA = 0.85
LOSS_HIGH, LOSS_LOW = 0.10, 0.02
LOSS_WINDOW_S = 0.5
ACKED_WINDOW_S = 0.5
PROBE_MIN_PACKETS = 5
PROBE_MIN_RECEIVED = 0.8  # GoogCC: a cluster with fewer of its packets back says nothing
PROBE_MAX_RECV_SEND_RATIO = 2.0  # GoogCC: arrived more than 2x faster than sent: bunched, not a measurement
PROBE_AFTER_CONGESTION = 1.5
CONGESTION_MEMORY_S = 10.0
DECREASE_INTERVAL_S = 0.2

NORMAL, OVERUSING, UNDERUSING = "normal", "overusing", "underusing"


class TrendlineEstimator:
    """Delay-gradient trendline with GoogCC's adaptive-threshold overuse detector."""

    def __init__(self) -> None:
        self.state = NORMAL
        self.trend = 0.0
        self.modified_trend = 0.0
        self.threshold = 12.5
        self._num_deltas = 0
        self._first_arrival_ms = -1.0
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._history: deque[tuple[float, float]] = deque(maxlen=TREND_WINDOW)
        self._time_over_using = -1.0
        self._overuse_counter = 0
        self._prev_trend = 0.0
        self._last_threshold_update = -1.0

    def update(self, recv_delta_ms: float, send_delta_ms: float, arrival_ms: float) -> str:
        self._num_deltas = min(self._num_deltas + 1, 1000)
        if self._first_arrival_ms < 0:
            self._first_arrival_ms = arrival_ms
        self._accumulated += recv_delta_ms - send_delta_ms
        self._smoothed = SMOOTHING * self._smoothed + (1 - SMOOTHING) * self._accumulated
        self._history.append((arrival_ms - self._first_arrival_ms, self._smoothed))
        if len(self._history) == TREND_WINDOW:
            self.trend = _slope(self._history)
        self._detect(send_delta_ms, arrival_ms)
        return self.state

    def _detect(self, send_delta_ms: float, now_ms: float) -> None:
        if self._num_deltas < 2:
            self.state = NORMAL
            return
        mt = min(self._num_deltas, 60) * self.trend * THRESHOLD_GAIN
        self.modified_trend = mt
        if mt > self.threshold:
            if self._time_over_using < 0:
                self._time_over_using = send_delta_ms / 2
            else:
                self._time_over_using += send_delta_ms
            self._overuse_counter += 1
            if self._time_over_using > OVERUSE_TIME_MS and self._overuse_counter > 1:
                if self.trend >= self._prev_trend:
                    self._time_over_using = 0.0
                    self._overuse_counter = 0
                    self.state = OVERUSING
        elif mt < -self.threshold:
            self._time_over_using = -1.0
            self._overuse_counter = 0
            self.state = UNDERUSING
        else:
            self._time_over_using = -1.0
            self._overuse_counter = 0
            self.state = NORMAL
        self._prev_trend = self.trend
        self._update_threshold(mt, now_ms)

    def _update_threshold(self, mt: float, now_ms: float) -> None:
        if self._last_threshold_update < 0:
            self._last_threshold_update = now_ms
        if abs(mt) > self.threshold + 15.0:  # a spike: do not adapt to it
            self._last_threshold_update = now_ms
            return
        k = K_DOWN if abs(mt) < self.threshold else K_UP
        dt = min(now_ms - self._last_threshold_update, 100.0)
        self.threshold = min(600.0, max(6.0, self.threshold + k * (abs(mt) - self.threshold) * dt))
        self._last_threshold_update = now_ms


def _slope(points) -> float:
    n = len(points)
    sx = sum(p[0] for p in points) / n
    sy = sum(p[1] for p in points) / n
    num = sum((x - sx) * (y - sy) for x, y in points)
    den = sum((x - sx) ** 2 for x, _ in points)
    return num / den if den > 0 else 0.0


class AimdRateControl:
    """Additive-increase / multiplicative-decrease on the detector's signal."""

    def __init__(self, start_bps: int, min_bps: int, max_bps: int) -> None:
        self.bitrate = float(start_bps)
        self.min_bps = min_bps
        self.max_bps = max_bps
        self._avg_max_kbps = -1.0
        self._var_max = 0.4
        self._last_change = -1.0
        self._last_decrease = -math.inf
        self.decreases = 0
        self.state = "increase"

    def set_estimate(self, bps: float, now: float) -> None:
        self.bitrate = min(self.max_bps, max(self.min_bps, bps))
        self._last_change = now

    def update(self, signal: str, acked_bps: float, now: float) -> float:
        if signal == OVERUSING:
            if now - self._last_decrease >= DECREASE_INTERVAL_S:
                base = acked_bps if acked_bps > 0 else self.bitrate
                new = min(self.bitrate, BETA * base)
                if acked_bps > 0:
                    self._update_max(acked_bps / 1000.0)
                self.bitrate = max(self.min_bps, new)
                self._last_decrease = now
                self.decreases += 1
            self.state = "hold"
            self._last_change = now
            return self.bitrate
        if signal == UNDERUSING:
            self.state = "hold"
            self._last_change = now
            return self.bitrate
        if self.state == "hold":
            self.state = "increase"
            self._last_change = now
            return self.bitrate
        dt = min(max(now - self._last_change, 0.0), 1.0) if self._last_change >= 0 else 0.0
        self._last_change = now
        kbps = self.bitrate / 1000.0
        if self._avg_max_kbps >= 0 and kbps > self._avg_max_kbps + 3 * math.sqrt(self._var_max * self._avg_max_kbps):
            self._avg_max_kbps = -1.0  # far above the old congestion point: forget it
        if self._avg_max_kbps >= 0:  # near the last congestion point: additive (~1 packet per RTT)
            inc = dt * 1200 * 8 / 0.2
        else:
            inc = max(self.bitrate * (1.08 ** dt - 1.0), 1000.0 * dt)
        new = self.bitrate + inc
        if acked_bps > 0:
            cap = 1.5 * acked_bps + 10_000
            if new > cap:
                new = max(self.bitrate, cap)
        self.bitrate = min(self.max_bps, max(self.min_bps, new))
        return self.bitrate

    def _update_max(self, kbps: float) -> None:
        alpha = 0.05
        if self._avg_max_kbps < 0:
            self._avg_max_kbps = kbps
        else:
            self._avg_max_kbps = (1 - alpha) * self._avg_max_kbps + alpha * kbps
        norm = max(self._avg_max_kbps, 1.0)
        self._var_max = min(2.5, max(0.4, (1 - alpha) * self._var_max + alpha * (self._avg_max_kbps - kbps) ** 2 / norm))


class SendSideBwe:
    """The estimate of one transport (see the module docstring).

    ``on_packet_results`` takes ``[(send_s, size, cluster, arrival_s or None), ...]`` in
    transport-wide sequence order (one TransportFeedback's worth)."""

    def __init__(self, start_bps: int, min_bps: int = 30_000, max_bps: int = 30_000_000) -> None:
        self.trendline = TrendlineEstimator()
        self.aimd = AimdRateControl(start_bps, min_bps, max_bps)
        self.min_bps = min_bps
        self.max_bps = max_bps
        self.loss_cap = math.inf
        self.loss_fraction = 0.0
        self._loss_lost = 0
        self._loss_total = 0
        self._loss_window_start = -1.0
        self._last_loss_decrease = -math.inf
        self._acked: deque[tuple[float, int]] = deque()
        self._acked_bytes = 0
        self.acked_bps = 0.0
        self._group: list[float] | None = None  # [first_send, last_send, last_arrival]
        self._prev_group: list[float] | None = None
        self._clusters: dict[int, list[tuple[float, int, float]]] = {}
        self._cluster_sent: dict[int, int] = {}
        self.last_probe_bps = 0
        self.last_probe_raw_bps = 0  # before the bounds (stats: how far a cluster overstated)
        self.congestion_at = -math.inf  # the last delay- or loss-based decrease ...
        self.congestion_acked_bps = 0.0  # ... and the throughput acknowledged then
        self._probe_targets: dict[int, int] = {}
        self._last_now = 0.0
        self.feedbacks = 0
        self.packets_lost = 0
        self.packets_acked = 0

    @property
    def estimate_bps(self) -> int:
        return int(max(self.min_bps, min(self.aimd.bitrate, self.loss_cap)))

    @property
    def delay_state(self) -> str:
        return self.trendline.state

    def on_packet_results(self, results, now: float) -> None:
        self.feedbacks += 1
        self._last_now = now
        lost = received = 0
        for send_s, size, cluster, arrival in results:
            if arrival is None:
                lost += 1
                continue
            received += 1
            self._on_arrival(send_s, arrival, size)
            if cluster >= 0 and cluster in self._cluster_sent:
                self._clusters.setdefault(cluster, []).append((send_s, size, arrival))
        self.packets_lost += lost
        self.packets_acked += received
        signal = self.trendline.state
        decreases = self.aimd.decreases
        self.aimd.update(signal, self.acked_bps, now)
        if self.aimd.decreases != decreases:
            self._congested(now)
        self._update_loss(lost, lost + received, now)

    def _congested(self, now: float) -> None:
        self.congestion_at = now
        self.congestion_acked_bps = self.acked_bps

    def _on_arrival(self, send_s: float, arrival_s: float, size: int) -> None:
        acked = self._acked
        acked.append((arrival_s, size))
        self._acked_bytes += size
        while acked and acked[0][0] < arrival_s - ACKED_WINDOW_S:
            self._acked_bytes -= acked.popleft()[1]
        span = arrival_s - acked[0][0]
        if span >= 0.1:  # bytes after the first packet over the time they took to arrive
            self.acked_bps = (self._acked_bytes - acked[0][1]) * 8 / span
        g = self._group
        if g is None:
            self._group = [send_s, send_s, arrival_s]
            return
        if send_s - g[0] <= GROUP_LENGTH_S:
            if send_s > g[1]:
                g[1] = send_s
            if arrival_s > g[2]:
                g[2] = arrival_s
            return
        prev = self._prev_group
        if prev is not None:
            send_delta = (g[1] - prev[1]) * 1000.0
            recv_delta = (g[2] - prev[2]) * 1000.0
            if send_delta >= 0 and abs(recv_delta - send_delta) < 3000:
                self.trendline.update(recv_delta, send_delta, g[2] * 1000.0)
        self._prev_group = g
        self._group = [send_s, send_s, arrival_s]

    def _update_loss(self, lost: int, total: int, now: float) -> None:
        if self._loss_window_start < 0:
            self._loss_window_start = now
        self._loss_lost += lost
        self._loss_total += total
        if now - self._loss_window_start < LOSS_WINDOW_S or self._loss_total < 20:
            return
        loss = self._loss_lost / self._loss_total
        self.loss_fraction = loss
        self._loss_lost = self._loss_total = 0
        self._loss_window_start = now
        current = self.estimate_bps
        if loss > LOSS_HIGH:
            if now - self._last_loss_decrease >= 0.3:
                self.loss_cap = max(self.min_bps, current * (1 - 0.5 * loss))
                self._last_loss_decrease = now
                self._congested(now)
        elif loss < LOSS_LOW and self.loss_cap != math.inf:
            self.loss_cap *= 1.08
            if self.loss_cap > 1.5 * self.aimd.bitrate:
                self.loss_cap = math.inf

    # ------------------------------------------------------------------ probing
    def probe_started(self, cluster: int, target_bps: int = 0) -> None:
        """A cluster starts; ``target_bps`` (0: unknown) is the rate it is sent to measure."""
        self._cluster_sent[cluster] = 0
        self._probe_targets[cluster] = target_bps
        if len(self._cluster_sent) > 8:
            old = next(iter(self._cluster_sent))
            self._cluster_sent.pop(old, None)
            self._clusters.pop(old, None)
            self._probe_targets.pop(old, None)

    def probe_finished(self, cluster: int, packets_sent: int) -> None:
        if cluster in self._cluster_sent:
            self._cluster_sent[cluster] = packets_sent

    def evaluate_probe(self, cluster: int, now: float) -> int:
        """The cluster's result in bps (0 when there is not enough feedback); applied at once."""
        sent = self._cluster_sent.get(cluster, 0)
        got = self._clusters.get(cluster) or []
        if sent < PROBE_MIN_PACKETS or len(got) < PROBE_MIN_RECEIVED * sent:
            return 0
        self._cluster_sent.pop(cluster, None)
        self._clusters.pop(cluster, None)
        target = self._probe_targets.pop(cluster, 0)
        by_send = sorted(got, key=lambda p: p[0])
        by_arrival = sorted(got, key=lambda p: p[2])
        send_interval = by_send[-1][0] - by_send[0][0]
        recv_interval = by_arrival[-1][2] - by_arrival[0][2]
        if send_interval <= 0.001 or recv_interval <= 0.001 or send_interval > 1.0 or recv_interval > 1.0:
            return 0
        send_bps = sum(p[1] for p in by_send[:-1]) * 8 / send_interval
        recv_bps = sum(p[1] for p in by_arrival[1:]) * 8 / recv_interval
        if recv_bps > PROBE_MAX_RECV_SEND_RATIO * send_bps:
            return 0
        result = min(send_bps, recv_bps)
        if recv_bps < 0.9 * send_bps:  # the link saturated: a bit under what arrived
            result = 0.95 * recv_bps
        self.last_probe_raw_bps = int(result)
        if target > 0:
            result = min(result, target)
        if now - self.congestion_at < CONGESTION_MEMORY_S:
            result = min(result, PROBE_AFTER_CONGESTION * max(self.congestion_acked_bps, self.estimate_bps))
        self.last_probe_bps = int(result)
        if self.trendline.state != OVERUSING and result > self.aimd.bitrate:
            self.aimd.set_estimate(result, now)
            if self.loss_cap != math.inf and self.loss_fraction < LOSS_LOW:
                self.loss_cap = math.inf
        return int(result)

    def pending_probes(self) -> list[int]:
        return [c for c, n in self._cluster_sent.items() if n > 0]

    def stats(self) -> dict:
        return {
            "estimateBps": self.estimate_bps,
            "delayBasedBps": int(self.aimd.bitrate),
            "lossCapBps": None if self.loss_cap == math.inf else int(self.loss_cap),
            "ackedBps": int(self.acked_bps),
            "delayState": self.trendline.state,
            "trend": round(self.trendline.modified_trend, 3),
            "threshold": round(self.trendline.threshold, 3),
            "lossFraction": round(self.loss_fraction, 4),
            "lastProbeBps": self.last_probe_bps,
            "lastProbeRawBps": self.last_probe_raw_bps,
            "congestedAgoS": None if self.congestion_at == -math.inf else round(self._last_now - self.congestion_at, 1),
            "feedbacks": self.feedbacks,
        }
