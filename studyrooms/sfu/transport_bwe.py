"""TransportBwe: the congestion-control side of one WebRtcTransport (mediasoup's TransportCongestionControl
client + server, on the media plane pieces of ``media/twcc.py`` and ``media/bwe.py``).

Egress (toward the remote receiver):
  * every RTP packet the transport sends passes ``WebRtcTransport.send_rtp`` -> ``stamper.stamp``
    (transport-wide seq in the reserved slot + send record) once a consumer negotiated
    transport-wide-cc;
  * TransportFeedback from the receiver -> :meth:`on_feedback` -> packet results -> the estimator
    (``available_bitrate_bps``), probe clusters evaluated;
  * :meth:`request_probe` — the allocator wants more than the estimate: a cluster paced in
    ``PROBE_BURSTS`` bursts ``PROBE_BURST_INTERVAL_S`` apart on a video consumer's RTX SSRC: RTX of
    its recently sent packets (as libwebrtc: the receiver gets real media it may use) when they fit
    what is left of a burst, padding-only RTX packets otherwise (no history, small remainders);
    every probe packet carries MID and a transport-wide seq; media sent meanwhile counts too.
Ingress (from the remote sender): transport-wide seqs read by the producers' RecvStreams land in
``recorder``; every ``FEEDBACK_INTERVAL_S`` they go back as TransportFeedback so the browser's
own send-side estimator works against us.

Without transport-cc feedback (aiortc/pymediasoup receivers) the estimate is the receiver's REMB,
and the allocator then never pauses video for bandwidth (REMB is advisory only).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from ..media.bwe import SendSideBwe
from ..media.twcc import TwccRecorder, TwccStamper, parse_feedback
from .rtcp_router import SFU_RTCP_SSRC

if TYPE_CHECKING:
    from .webrtc_transport import WebRtcTransport

logger = logging.getLogger("studyrooms.bwe")

FEEDBACK_INTERVAL_S = 0.1
PROBE_BURSTS = 5
PROBE_BURST_INTERVAL_S = 0.005  # a 20-25 ms cluster: long enough to measure, short enough not to
                                # queue a constrained link for long (libwebrtc: >= 15 ms)
PROBE_MIN_INTERVAL_S = 1.0
PROBE_MAX_INTERVAL_S = 4.0  # a probe that did not raise the estimate doubles the wait, up to this
PROBE_SUCCESS = 1.1  # the estimate grew by this factor since the last probe started: it worked
PROBE_PADDING = 255
PROBE_RTX_DEPTH = 32  # probes re-send (as RTX) the last this-many packets of the stream, in turn
PROBE_RTX = True  # False: padding-only probes (the receiver gets nothing it can use from them)
PROBE_INITIAL_FACTOR = 3.0  # the first probe (GoogCC: 3x the start estimate) ...
PROBE_MAX_FACTOR = 2.0  # ... later ones at most 2x the estimate
FEEDBACK_STALE_S = 5.0


class TransportBwe:
    def __init__(self, transport: "WebRtcTransport", *, initial_bps: int, max_bps: int) -> None:
        self.transport = transport
        self.clock = transport.clock
        self.stamper: TwccStamper | None = None  # set once a consumer negotiated transport-wide-cc
        self.recorder = TwccRecorder()
        self.estimator = SendSideBwe(initial_bps, max_bps=max_bps)
        self.initial_bps = initial_bps
        self.max_bps = max_bps
        self._feedback_timer: Any = None
        self._probe_timer: Any = None
        self._last_feedback_at = -math.inf
        self._cluster = 0
        self._probe_left = 0
        self._probe_burst_bytes = 0
        self._probe_sent = 0
        self._probe_started_at = -math.inf
        self._probe_interval = PROBE_MIN_INTERVAL_S
        self._probe_start_estimate = 0
        self.probing = False
        self.initial_probe_done = False
        self.probe_target_bps = 0
        self.probes_sent = 0
        self.probe_packets_sent = 0
        self.probe_rtx_packets_sent = 0
        self._probe_depth = 0
        self.feedback_received = 0
        self.feedback_malformed = 0

    # ------------------------------------------------------------------ egress
    def enable_stamping(self) -> None:
        if self.stamper is None:
            self.stamper = TwccStamper()

    @property
    def has_feedback(self) -> bool:
        return self.clock.now() - self._last_feedback_at < FEEDBACK_STALE_S

    @property
    def source(self) -> str:
        if self.has_feedback:
            return "transport-cc"
        if self.transport.rtcp.remote_remb_bps:
            return "remb"
        return "initial"

    def available_bitrate_bps(self) -> int:
        if self.has_feedback:
            return self.estimator.estimate_bps
        remb = self.transport.rtcp.remote_remb_bps
        if remb:
            return int(remb)
        return self.initial_bps

    def on_feedback(self, data: bytes, offset: int, length: int) -> None:
        stamper = self.stamper
        parsed = parse_feedback(data, offset, length)
        if parsed is None:
            self.feedback_malformed += 1
            return
        self.feedback_received += 1
        if stamper is None:
            return
        now = self.clock.now()
        self._last_feedback_at = now
        results = []
        lookup = stamper.lookup
        for seq, arrival_us in parsed[2]:
            rec = lookup(seq)
            if rec is not None:
                results.append((rec[0], rec[1], rec[2], arrival_us / 1e6 if arrival_us >= 0 else None))
        if not results:
            return
        before = self.estimator.estimate_bps
        self.estimator.on_packet_results(results, now)
        for cluster in self.estimator.pending_probes():
            if self.estimator.evaluate_probe(cluster, now):
                logger.debug("transport %s: probe %d -> %d bps", self.transport.id, cluster,
                             self.estimator.last_probe_bps)
        after = self.estimator.estimate_bps
        allocator = self.transport.allocator
        if allocator is not None and (after < 0.85 * before or after > 1.15 * before):
            allocator.schedule(0.0)

    # ------------------------------------------------------------------ probing
    def request_probe(self, target_bps: int) -> bool:
        """Send a probe cluster at about ``target_bps`` (capped at 3x the estimate the first time,
        2x later); False when one is running, the last one is too recent (1 s, doubling up to 4 s
        while probes do not raise the estimate) or nothing can carry it."""
        now = self.clock.now()
        if self.stamper is None or self.probing or not self.has_feedback:
            return False
        estimate = self.estimator.estimate_bps
        if self._probe_start_estimate and now - self._probe_started_at >= PROBE_MIN_INTERVAL_S:
            # judge the last probe once (its feedback is in): back off while probes find nothing
            if estimate >= PROBE_SUCCESS * self._probe_start_estimate:
                self._probe_interval = PROBE_MIN_INTERVAL_S
            else:
                self._probe_interval = min(PROBE_MAX_INTERVAL_S, 2 * self._probe_interval)
            self._probe_start_estimate = 0
        if now - self._probe_started_at < self._probe_interval:
            return False
        factor = PROBE_MAX_FACTOR if self.initial_probe_done else PROBE_INITIAL_FACTOR
        target = int(min(target_bps, factor * estimate, self.max_bps))
        if target <= 0 or self._probe_stream() is None:
            return False
        self._probe_start_estimate = estimate
        self._cluster += 1
        self.initial_probe_done = True
        self.probing = True
        self.probe_target_bps = target
        self._probe_started_at = now
        self._probe_left = PROBE_BURSTS
        self._probe_burst_bytes = int(target / 8 * PROBE_BURST_INTERVAL_S)
        self._probe_sent = 0
        self.stamper.cluster = self._cluster
        self.estimator.probe_started(self._cluster, target)
        self.probes_sent += 1
        self._probe_burst()
        return True

    def _probe_stream(self):
        for consumer in self.transport.consumers.values():
            if consumer.kind == "video" and not consumer.closed and getattr(consumer, "send_stream", None) \
                    and consumer.send_stream.rtx_enabled and consumer.send_stream.packets:
                return consumer.send_stream
        return None

    def _probe_burst(self) -> None:
        self._probe_timer = None
        transport = self.transport
        stream = self._probe_stream()
        if transport.closed or stream is None or self.stamper is None:
            self._end_probe()
            return
        # media sent in this burst window counts toward the cluster: probe for the rest, with RTX
        # of recently sent packets that fit what is left of the burst, else padding-only RTX
        sent = 0
        while sent < self._probe_burst_bytes:
            left = self._probe_burst_bytes - sent
            packet = stream.build_rtx_probe(self._probe_depth, left + PROBE_PADDING) if PROBE_RTX else None
            self._probe_depth = (self._probe_depth + 1) % PROBE_RTX_DEPTH
            if packet is not None:
                self.probe_rtx_packets_sent += 1
            else:
                packet = stream.build_rtx_padding(min(PROBE_PADDING, max(1, left)))
                if packet is None:
                    break
            transport.send_rtp(packet)
            sent += len(packet)
            self._probe_sent += 1
            self.probe_packets_sent += 1
        self._probe_left -= 1
        if self._probe_left <= 0:
            self._end_probe()
            return
        self._probe_timer = self.clock.call_later(PROBE_BURST_INTERVAL_S, self._probe_burst)

    def _end_probe(self) -> None:
        if self.stamper is not None and self.stamper.cluster == self._cluster:
            self.stamper.cluster = -1
        self.estimator.probe_finished(self._cluster, self._probe_sent)
        self.probing = False

    # ------------------------------------------------------------------ ingress feedback
    def start(self) -> None:
        if self._feedback_timer is None:
            self._feedback_timer = self.clock.call_later(FEEDBACK_INTERVAL_S, self._on_feedback_timer)

    def _on_feedback_timer(self) -> None:
        self._feedback_timer = None
        transport = self.transport
        if transport.closed:
            return
        rx = transport.fast_rx
        if rx is not None:
            rx.drain_twcc(self.recorder)
        if self.recorder.received and transport.media_ready:
            for packet in self.recorder.build(SFU_RTCP_SSRC):
                transport.send_rtcp(packet)
        self._feedback_timer = self.clock.call_later(FEEDBACK_INTERVAL_S, self._on_feedback_timer)

    def stop(self) -> None:
        for timer in (self._feedback_timer, self._probe_timer):
            if timer is not None:
                timer.cancel()
        self._feedback_timer = self._probe_timer = None
        self.probing = False

    # ------------------------------------------------------------------ introspection
    def stats(self) -> dict[str, Any]:
        stamper = self.stamper
        return {
            "availableOutgoingBitrate": self.available_bitrate_bps(),
            "bweSource": self.source,
            "probing": self.probing,
            "probeTargetBitrate": self.probe_target_bps if self.probing else 0,
            "probeClustersSent": self.probes_sent,
            "probeIntervalS": self._probe_interval,
            "probePacketsSent": self.probe_packets_sent,
            "probeRtxPacketsSent": self.probe_rtx_packets_sent,
            "transportFeedbackReceived": self.feedback_received,
            "transportFeedbackMalformed": self.feedback_malformed,
            "transportFeedbackSent": self.recorder.feedback_sent,
            "twccStamped": stamper.stamped if stamper is not None else 0,
            "twccUnstamped": stamper.unstamped if stamper is not None else 0,
            "bwe": self.estimator.stats(),
        }
