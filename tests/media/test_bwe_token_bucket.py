"""The estimator in a closed loop with a token-bucket bottleneck (issue 10's netns failure, replayed
on a synthetic arrival series): a receiver behind ``tc tbf rate 150kbit burst 16kb latency 300ms``.

The bucket hides the limit at first (16 KB go through at line rate), then a queue builds at a
constant drain rate (growing delay), then its tail drops. A sender that behaves like the SFU's
allocator (a camera ladder, one rung up per second, down at once, probe clusters when it wants more)
must bring the estimate below the link within a bounded time and then must not climb back to a
spatial layer the link cannot carry, even though each short probe cluster still passes at line rate
from the tokens the bucket saved while the sender stayed under the link.
"""

from __future__ import annotations

from studyrooms.media.bwe import SendSideBwe

AUDIO_BPS = 40_000
RUNGS = (50_000, 75_000, 150_000, 365_000, 800_000)  # camera: 0/0 0/1 0/2 1/2 2/2 (measured rates)
SPATIAL_1 = 3  # index of the first rung on spatial layer 1
FEEDBACK_S = 0.1


class TokenBucket:
    """tc tbf: ``rate_bps``; ``burst`` bytes of tokens; a FIFO that drops what would wait longer than
    ``latency_s`` beyond the burst (tbf's limit = rate x latency + burst); the far side is 1 ms away."""

    def __init__(self, rate_bps: float, burst: int = 16 * 1024, latency_s: float = 0.3) -> None:
        self.rate = rate_bps / 8
        self.burst = burst
        self.limit = self.rate * latency_s + burst
        self.tokens = float(burst)
        self.tokens_at = 0.0
        self.free_at = 0.0

    def send(self, t: float, size: int) -> float | None:
        start = max(t, self.free_at)
        tokens = min(self.burst, self.tokens + self.rate * (start - self.tokens_at))
        depart = start if tokens >= size else start + (size - tokens) / self.rate
        if (depart - t) * self.rate > self.limit:
            return None  # tail drop
        self.tokens = max(0.0, tokens - size)
        self.tokens_at = depart
        self.free_at = depart
        return depart + 0.001


class Open:
    def send(self, t: float, size: int) -> float | None:
        return t + 0.001


def run(link_at, seconds: float) -> dict:
    """``link_at(t)`` -> the bottleneck in use at ``t``. Returns per-0.5 s samples."""
    bwe = SendSideBwe(600_000)
    packets: list[list] = []  # [send_t, size, cluster, arrival]
    rung, last_down, last_up = 1, -10.0, -10.0
    next_alloc = next_fb = 0.0
    next_audio = next_frame = 0.0
    next_probe_ok, cluster, probe_bursts, probe_bytes, next_burst = 0.0, 0, 0, 0, 0.0
    samples = []
    t = 0.0
    reported = 0
    while t < seconds:
        link = link_at(t)
        if t >= next_audio:
            packets.append([t, 120, cluster if probe_bursts else -1, link.send(t, 120)])
            next_audio += 0.02
        if t >= next_frame:  # a 30 fps frame, sent as it comes (the SFU forwards, it does not pace)
            frame = int(RUNGS[rung] / 8 / 30)
            while frame > 0:
                size = min(1100, frame)
                packets.append([t, size, cluster if probe_bursts else -1, link.send(t, size)])
                frame -= size
            next_frame += 1 / 30
        if probe_bursts and t >= next_burst:  # a 5 ms burst of the cluster: whole RTX-sized packets
            left = probe_bytes
            while left > 0:
                size = min(1100, left + 255)
                packets.append([t, size, cluster, link.send(t, size)])
                left -= size
            probe_bursts -= 1
            next_burst = t + 0.005
            if not probe_bursts:
                bwe.probe_finished(cluster, 5)
        if t >= next_fb:  # TransportFeedback: everything up to the newest arrival, lost ones as lost
            newest = max((p[3] for p in packets[reported:] if p[3] is not None and p[3] <= t), default=None)
            if newest is not None:
                upto = max(i for i in range(reported, len(packets)) if packets[i][3] == newest) + 1
                batch = [(p[0], p[1], p[2], p[3] if p[3] is not None and p[3] <= t else None)
                         for p in packets[reported:upto]]
                reported = upto
                bwe.on_packet_results(batch, t)
                for c in bwe.pending_probes():
                    bwe.evaluate_probe(c, t)
            next_fb += FEEDBACK_S
        if t >= next_alloc:  # the allocator: highest rung that fits, one up per second, down at once
            budget = bwe.estimate_bps - AUDIO_BPS
            fit = max([i for i, r in enumerate(RUNGS) if r <= budget], default=0)
            if fit < rung:
                rung, last_down = fit, t
            elif fit > rung and t - last_up >= 1.0 and t - last_down >= 3.0:
                rung, last_up = rung + 1, t
            if rung < len(RUNGS) - 1 and not probe_bursts and t >= next_probe_ok:
                target = int(min((RUNGS[-1] + AUDIO_BPS) * 1.15, 2 * bwe.estimate_bps))
                cluster += 1
                bwe.probe_started(cluster, target)
                probe_bursts, probe_bytes, next_burst = 5, int(target / 8 * 0.005), t
                next_probe_ok = t + 1.0
            samples.append((round(t, 3), bwe.estimate_bps, rung))
            next_alloc += 0.5
        t = round(t + 0.001, 6)
    return {"samples": samples, "bwe": bwe}


def test_a_token_bucket_link_brings_the_estimate_down_and_keeps_video_off_layers_it_cannot_carry():
    shaped = TokenBucket(150_000)
    step = 8.0
    out = run(lambda t: Open() if t < step else shaped, step + 25.0)
    samples = out["samples"]
    before = [s for s in samples if step - 2 <= s[0] < step]
    assert all(rung >= SPATIAL_1 for _, _, rung in before), before  # the open link carried spatial 1
    # the estimate falls below the link rate within a bounded time after the limit starts
    below = next((t for t, est, _ in samples if t >= step and est < 150_000), None)
    assert below is not None and below - step <= 4.0, samples
    # and from then on probes through the bucket's saved tokens do not lift it to a spatial layer the
    # link cannot carry, nor the estimate far above the link
    after = [s for s in samples if s[0] >= below]
    assert all(rung < SPATIAL_1 for _, _, rung in after), after
    assert max(est for _, est, _ in after) <= 2 * 150_000, after


def test_when_the_limit_lifts_probes_bring_the_estimate_back_up():
    shaped = TokenBucket(150_000)
    out = run(lambda t: shaped if t < 10.0 else Open(), 30.0)
    samples = out["samples"]
    top = next((t for t, _, rung in samples if t >= 10.0 and rung == len(RUNGS) - 1), None)
    assert top is not None and top - 10.0 <= 15.0, samples
