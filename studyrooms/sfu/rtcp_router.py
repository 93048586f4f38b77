"""RTCP of one transport: feedback from the remote side routed to our producers/consumers, and the
periodic reports we send (mediasoup's Transport::ReceiveRtcpPacket + the RTCP timer).

Incoming (remote -> us):
  SR (200) about a producer stream      -> RecvStream.on_sender_report (for RR's LSR/DLSR)
  RR (201) blocks about consumer SSRCs  -> Consumer.on_receiver_report (RTT, loss, score)
  RTPFB NACK (205/1) for a consumer     -> Consumer.on_nack (retransmission)
  RTPFB TransportFeedback (205/15)      -> ``on_transport_feedback`` (the WebRtcTransport's estimator)
  PSFB PLI (206/1) / FIR (206/4)        -> Consumer.request_key_frame (-> producer, throttled)
  PSFB REMB (206/15)                    -> the remote's estimate of what it can receive
Outgoing, every ``interval_s`` (jittered): an SR + SDES per consumer, an RR per producer stream and,
when ``max_incoming_bitrate_bps`` is set, a REMB capping what the remote sends us. NACKs toward
producers are sent by the producers themselves as soon as a gap is seen, and retried from here.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

from ..media import rtcp as rtcp_bytes

if TYPE_CHECKING:
    from .consumer import Consumer
    from .transport import Transport

logger = logging.getLogger("studyrooms.rtcp")

RTCP_INTERVAL_S = 1.0
NACK_INTERVAL_S = 0.04
SFU_RTCP_SSRC = 0x53465531  # sender SSRC of feedback the SFU originates ("SFU1")

PT_SR, PT_RR, PT_SDES, PT_BYE, PT_APP, PT_RTPFB, PT_PSFB = 200, 201, 202, 203, 204, 205, 206


class RtcpRouter:
    def __init__(self, transport: "Transport", interval_s: float = RTCP_INTERVAL_S) -> None:
        self.transport = transport
        self.interval_s = interval_s
        self.consumers_by_ssrc: dict[int, "Consumer"] = {}
        self._timer = None
        self._nack_timer = None
        self.remote_remb_bps: int | None = None
        self.on_transport_feedback = None  # (data, offset, length) -> None, set by WebRtcTransport
        # counters
        self.malformed = 0
        self.nacks_received = 0
        self.plis_received = 0
        self.firs_received = 0
        self.remb_received = 0
        self.twcc_received = 0
        self.sr_sent = 0
        self.rr_sent = 0
        self.remb_sent = 0

    # ------------------------------------------------------------------ registry
    def add_consumer(self, consumer: "Consumer") -> None:
        for ssrc in consumer.all_ssrcs():
            self.consumers_by_ssrc[ssrc] = consumer

    def remove_consumer(self, consumer: "Consumer") -> None:
        for ssrc in consumer.all_ssrcs():
            if self.consumers_by_ssrc.get(ssrc) is consumer:
                del self.consumers_by_ssrc[ssrc]

    # ------------------------------------------------------------------ incoming
    def receive(self, data: bytes) -> None:
        transport = self.transport
        now = transport.clock.now()
        seen = False
        for packet_type, fmt, offset, length in rtcp_bytes.iter_rtcp(data):
            seen = True
            if packet_type == PT_RTPFB:
                if fmt == 1:
                    parsed = rtcp_bytes.parse_nack(data, offset, length)
                    if parsed is None:
                        self.malformed += 1
                        continue
                    consumer = self.consumers_by_ssrc.get(parsed[1])
                    if consumer is not None:
                        self.nacks_received += 1
                        consumer.on_nack(parsed[2], parsed[1])
                elif fmt == 15:
                    self.twcc_received += 1
                    if self.on_transport_feedback is not None:
                        self.on_transport_feedback(data, offset, length)
            elif packet_type == PT_PSFB:
                if fmt == 1 or fmt == 4:
                    ssrcs = (
                        rtcp_bytes.parse_pli(data, offset, length)
                        if fmt == 1
                        else rtcp_bytes.parse_fir(data, offset, length)
                    )
                    if not ssrcs:
                        self.malformed += 1
                        continue
                    if isinstance(ssrcs, int):
                        ssrcs = (ssrcs,)
                    for ssrc in ssrcs:
                        consumer = self.consumers_by_ssrc.get(ssrc)
                        if consumer is not None:
                            if fmt == 1:
                                self.plis_received += 1
                            else:
                                self.firs_received += 1
                            consumer.on_key_frame_request(fmt == 4, ssrc)
                elif fmt == 15:
                    remb = rtcp_bytes.parse_remb(data, offset, length)
                    if remb is None:
                        continue
                    self.remb_received += 1
                    self.remote_remb_bps = remb[0]
            elif packet_type == PT_RR:
                self._on_report_blocks(rtcp_bytes.parse_rr_blocks(data, offset, length), now)
            elif packet_type == PT_SR:
                parsed = rtcp_bytes.parse_sr(data, offset, length)
                if parsed is None:
                    self.malformed += 1
                    continue
                ssrc, ntp_sec, ntp_frac, rtp_ts = parsed[0], parsed[1], parsed[2], parsed[3]
                entry = transport.listener.ssrc_table.get(ssrc)
                if entry is not None and entry[1] >= 0:
                    entry[0].on_sender_report(entry[1], ntp_sec, ntp_frac, rtp_ts, now)
                if len(parsed) > 6:
                    self._on_report_blocks(parsed[6], now)
        if not seen:
            self.malformed += 1

    def _on_report_blocks(self, blocks, now: float) -> None:
        if not blocks:
            return
        for block in blocks:
            consumer = self.consumers_by_ssrc.get(block[0])
            if consumer is not None:
                consumer.on_receiver_report(block, now)

    # ------------------------------------------------------------------ outgoing
    def start(self) -> None:
        if self._timer is None and not self.transport.closed:
            self._timer = self.transport.clock.call_later(
                self.interval_s * random.uniform(0.5, 1.0), self._on_timer
            )

    def stop(self) -> None:
        for timer in (self._timer, self._nack_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._nack_timer = None

    def schedule_nack_retry(self) -> None:
        """A producer saw a gap: make sure its NACK retries get sent until answered."""
        if self._nack_timer is None and not self.transport.closed:
            self._nack_timer = self.transport.clock.call_later(NACK_INTERVAL_S, self._on_nack_timer)

    def _on_nack_timer(self) -> None:
        self._nack_timer = None
        transport = self.transport
        if transport.closed or not transport.media_ready:
            return
        now = transport.clock.now()
        pending = False
        for producer in tuple(transport.producers.values()):
            pending = producer.send_nacks(now) or pending
        if pending:
            self.schedule_nack_retry()

    def _on_timer(self) -> None:
        self._timer = None
        transport = self.transport
        if transport.closed:
            return
        try:
            self.send_reports()
        except Exception:  # noqa: BLE001 - a bad report must never stop the timer
            logger.exception("transport %s: RTCP reports failed", transport.id)
        self._timer = transport.clock.call_later(self.interval_s * random.uniform(0.5, 1.5), self._on_timer)

    def send_reports(self) -> None:
        transport = self.transport
        if not transport.media_ready:
            return
        clock = transport.clock
        now, wall = clock.now(), clock.wall()
        for consumer in tuple(transport.consumers.values()):
            report = consumer.sender_report(wall, now)
            if report:
                transport.send_rtcp(report)
                self.sr_sent += 1
        blocks: list[bytes] = []
        media_ssrcs: list[int] = []
        for producer in tuple(transport.producers.values()):
            for block, ssrc in producer.report_blocks(now):
                blocks.append(block)
                media_ssrcs.append(ssrc)
        for start in range(0, len(blocks), 31):  # RC is 5 bits
            transport.send_rtcp(rtcp_bytes.build_rr(SFU_RTCP_SSRC, blocks[start : start + 31]))
            self.rr_sent += 1
        limit = transport.max_incoming_bitrate_bps
        if limit and media_ssrcs:
            transport.send_rtcp(rtcp_bytes.build_remb(SFU_RTCP_SSRC, int(limit), media_ssrcs))
            self.remb_sent += 1

    def stats(self) -> dict:
        return {
            "nacksReceived": self.nacks_received,
            "plisReceived": self.plis_received,
            "firsReceived": self.firs_received,
            "rembReceived": self.remb_received,
            "remoteRembBitrate": self.remote_remb_bps,
            "srSent": self.sr_sent,
            "rrSent": self.rr_sent,
            "rembSent": self.remb_sent,
            "rtcpMalformed": self.malformed,
        }
