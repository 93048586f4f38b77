"""SendStream: one per consumer (mediasoup RtpStreamSend + SimpleConsumer rewriting).

``send()`` rewrites, in the router-normalised packet buffer (shared by every consumer of the
producer), the fields this consumer owns: SSRC, payload type, sequence number, timestamp and the
MID slot; then it snapshots the packet as ``bytes`` (what the caller SRTP-protects).

Retransmission history, indexed by output sequence number: when the caller passes ``snapshot`` (an
immutable copy of the ingress packet taken once per ingress packet, shared by every consumer), the
ring keeps only ``(snapshot, out_seq, out_ts, mid offset)`` and a retransmission rebuilds this
consumer's header on it: the packet bytes are stored once per producer instead of once per
consumer (~30 KB of history per consumer instead of ~300 KB). Without it the ring keeps the sent
bytes themselves.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from studyrooms.clock import Clock
from studyrooms.media import rtcp
from studyrooms.media.rate import RateMeter
from studyrooms.media.rtp import HH, PT_SEQ_TS_SSRC
from studyrooms.media.score import ScoreHistory, interval_score

DEFAULT_RTT_MS = 100.0
MID_SLOT_LEN = 8
MID_ELEMENT_LEN = 1 + MID_SLOT_LEN

# [last buffer, its length, its payload octets]: shared by all SendStreams of this process


class SendStream:
    """Send side of one consumer stream. See the module docstring."""

    __slots__ = (
        "_clock", "_initial_seq", "_initial_ts", "_max_sent_at", "_mid_elem", "_mid_elem_id",
        "_mid_len_nibble", "_mid_value", "_n", "_now", "_rate", "_rate_next", "_resent", "_ring",
        "_rr_prev_highest", "_rr_prev_lost", "_rtx_seq", "_score", "_seq_off", "_source_ssrc", "_sr_sent",
        "_started", "_sync_required", "_ts_off", "bytes", "clock_rate", "cname", "codec", "dropped_gated",
        "firs_received", "fraction_lost", "jitter", "keyframe_gating", "kind", "max_seq", "max_ts", "mid",
        "nack_misses", "nack_packets_received", "nacks_received", "octets", "packets", "packets_lost",
        "payload_type", "plis_received", "retransmitted", "rtt_ms", "rtx_enabled", "rtx_payload_type",
        "rtx_ssrc", "srs_sent", "ssrc", "syncs"
    )

    def __init__(
        self,
        *,
        ssrc: int,
        payload_type: int,
        clock_rate: int,
        kind: str,
        codec: str,
        mid: str | None,
        rtx_ssrc: int | None = None,
        rtx_payload_type: int | None = None,
        buffer_packets: int = 600,
        keyframe_gating: bool | None = None,
        cname: str = "",
        clock: Clock,
        mid_ext_id: int | None = None,
        initial_seq: int | None = None,
        initial_ts: int | None = None,
    ) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type & 0x7F
        self.clock_rate = clock_rate
        self.kind = kind
        self.codec = codec.lower().rsplit("/", 1)[-1]
        self.mid = mid
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self.rtx_enabled = rtx_ssrc is not None and rtx_payload_type is not None
        # audio never gates; video gates unless told not to
        self.keyframe_gating = kind == "video" and (keyframe_gating is None or bool(keyframe_gating))
        self.cname = cname
        self._clock = clock
        self._now = clock.now

        mid_bytes = (mid or "").encode("ascii", "replace")
        if not 1 <= len(mid_bytes) <= MID_SLOT_LEN:
            mid_bytes = b""  # no MID (or one that cannot fit the slot): zero value, length 8
        self._mid_value = mid_bytes + bytes(MID_SLOT_LEN - len(mid_bytes))
        self._mid_len_nibble = (len(mid_bytes) - 1) if mid_bytes else MID_SLOT_LEN - 1
        self._mid_elem_id = mid_ext_id if mid_ext_id and 0 < mid_ext_id < 15 else 0
        self._mid_elem = bytes(((self._mid_elem_id << 4) | self._mid_len_nibble,)) + self._mid_value

        self._n = max(1, int(buffer_packets))
        self._ring: list[Any] = [None] * self._n  # bytes, or (snapshot, out_seq, out_ts, mid offset)
        self._resent: dict[int, tuple[Any, float]] = {}  # seq -> (ring entry, resent at)

        self._initial_seq = secrets.randbits(16) if initial_seq is None else initial_seq & 0xFFFF
        self._initial_ts = initial_ts
        self._rtx_seq = secrets.randbits(16)
        self._sync_required = True
        self._source_ssrc = -1
        self._seq_off = 0
        self._ts_off = 0
        self._started = False
        self.max_seq = 0  # highest output seq sent
        self.max_ts = 0  # output timestamp of that packet
        self._max_sent_at = 0.0

        # RTCP state
        self._sr_sent: dict[int, float] = {}  # compact NTP of our SRs -> monotonic send time
        self._rr_prev_highest = -1
        self._rr_prev_lost = 0
        self.rtt_ms = 0.0
        self.fraction_lost = 0
        self.packets_lost = 0
        self.jitter = 0
        self._score = ScoreHistory(10)

        # counters
        self.packets = 0
        self.bytes = 0
        self.octets = 0  # payload octets (SR octet count)
        self.dropped_gated = 0
        self.retransmitted = 0
        self.nacks_received = 0
        self.nack_packets_received = 0
        self.nack_misses = 0
        self.plis_received = 0
        self.firs_received = 0
        self.srs_sent = 0
        self.syncs = 0
        self._rate = RateMeter()
        self._rate_next = -math.inf

    # ------------------------------------------------------------------------------------------
    # forwarding

    def request_sync(self) -> None:
        """After resume / layer switch: drop until a keyframe (video) and re-base offsets so the
        output stays continuous."""
        self._sync_required = True

    @property
    def sync_required(self) -> bool:
        return self._sync_required

    def send(
        self, pkt: bytearray, mid_value_offset: int, seq: int, ts: int, keyframe: bool, source_ssrc: int,
        payload_len: int = -1, now: float = -1.0, snapshot: bytes | None = None,
    ) -> bytes | None:
        """Rewrite ``pkt`` in place for this consumer and return the bytes to protect and send;
        ``None`` while gated (waiting for a keyframe). ``payload_len`` and ``now`` (the ingress
        packet's payload size and arrival time, known once per ingress packet) spare every
        consumer recomputing them; they are derived here when not given."""
        if now < 0:
            now = self._now()
        if self._sync_required or source_ssrc != self._source_ssrc:
            # a new source (or a straggler of an old one) is gated like a sync request, without
            # poisoning the current sync state
            if self.keyframe_gating and not keyframe:
                self.dropped_gated += 1
                return None
            self._rebase(seq, ts, now)
            self._source_ssrc = source_ssrc
            self._sync_required = False
        out_seq = (seq + self._seq_off) & 0xFFFF
        out_ts = (ts + self._ts_off) & 0xFFFFFFFF
        PT_SEQ_TS_SSRC.pack_into(pkt, 1, (pkt[1] & 0x80) | self.payload_type, out_seq, out_ts, self.ssrc)
        if mid_value_offset > 0:
            h = mid_value_offset - 1
            if pkt[h] >> 4 != self._mid_elem_id:
                self._mid_elem_id = pkt[h] >> 4
                self._mid_elem = bytes(((self._mid_elem_id << 4) | self._mid_len_nibble,)) + self._mid_value
            pkt[h : h + MID_ELEMENT_LEN] = self._mid_elem
        data = bytes(pkt)
        if self._n > 1:
            self._ring[out_seq % self._n] = (
                data if snapshot is None else (snapshot, out_seq, out_ts, mid_value_offset)
            )
        n = len(data)
        self.packets += 1
        if now >= self._rate_next:
            self._rate_next = self._rate.sample(self.bytes, now)
        self.bytes += n
        # payload octets for the SR: the packet minus header, extension block and padding
        if payload_len >= 0:
            self.octets += payload_len
        else:
            b0 = data[0]
            hl = 12 + ((b0 & 0x0F) << 2)
            if b0 & 0x10:
                hl += 4 + (((data[hl + 2] << 8) | data[hl + 3]) << 2)
            if b0 & 0x20:
                hl += data[n - 1]
            self.octets += n - hl if n > hl else 0
        if 0 < ((out_seq - self.max_seq) & 0xFFFF) < 0x8000 or not self._started:
            self._started = True
            self.max_seq = out_seq
            self.max_ts = out_ts
            self._max_sent_at = now
        return data

    def skip_packet(self, seq: int) -> None:
        """The newest packet of the current source is deliberately not sent (temporal layer
        dropped): the packets after it move down by one so the receiver sees no gap."""
        if self._sync_required or not self._started:
            return
        self._seq_off = (self._seq_off - 1) & 0xFFFF

    def _rebase(self, seq: int, ts: int, now: float) -> None:
        self.syncs += 1
        if self._started:
            out_seq = (self.max_seq + 1) & 0xFFFF
            step = int(round((now - self._max_sent_at) * self.clock_rate))
            if step < 1:
                step = 1
            out_ts = (self.max_ts + step) & 0xFFFFFFFF
        else:
            out_seq = self._initial_seq
            out_ts = ts if self._initial_ts is None else self._initial_ts & 0xFFFFFFFF
        self._seq_off = (out_seq - seq) & 0xFFFF
        self._ts_off = (out_ts - ts) & 0xFFFFFFFF

    # ------------------------------------------------------------------------------------------
    # retransmission

    def on_nack(self, seqs: list[int]) -> list[bytes]:
        """Packets to retransmit for a NACK (RTX-wrapped when RTX is negotiated). A seq resent
        within the last RTT (100 ms while unknown) is skipped, as mediasoup does."""
        self.nacks_received += 1
        self.nack_packets_received += len(seqs)
        now = self._now()
        min_gap = (self.rtt_ms if self.rtt_ms > 0 else DEFAULT_RTT_MS) / 1000.0
        ring = self._ring
        resent = self._resent
        n = self._n
        out: list[bytes] = []
        for s in seqs:
            s &= 0xFFFF
            entry = ring[s % n]
            if entry is None or self._entry_seq(entry) != s:
                self.nack_misses += 1
                continue
            prev = resent.get(s)
            if prev is not None and prev[0] is entry and now - prev[1] < min_gap:
                continue
            resent[s] = (entry, now)
            data = entry if type(entry) is bytes else self._rebuild(entry)
            out.append(self._rtx_wrap(data) if self.rtx_enabled else data)
            self.retransmitted += 1
        if len(resent) > n:
            resent.clear()
        return out

    @staticmethod
    def _entry_seq(entry: Any) -> int:
        return ((entry[2] << 8) | entry[3]) if type(entry) is bytes else entry[1]

    def _rebuild(self, entry: tuple) -> bytes:
        """This consumer's packet from a shared ingress snapshot (header fields as when sent)."""
        snapshot, out_seq, out_ts, mid_value_offset = entry
        buf = bytearray(snapshot)
        PT_SEQ_TS_SSRC.pack_into(buf, 1, (buf[1] & 0x80) | self.payload_type, out_seq, out_ts, self.ssrc)
        if mid_value_offset > 0:
            h = mid_value_offset - 1
            buf[h : h + MID_ELEMENT_LEN] = bytes(((buf[h] & 0xF0) | self._mid_len_nibble,)) + self._mid_value
        return bytes(buf)

    def _rtx_wrap(self, data: bytes) -> bytes:
        """RFC 4588: same header (extensions kept) with RTX SSRC/PT/seq, payload = OSN + original
        payload; the original padding is not carried."""
        n = len(data)
        b0 = data[0]
        pos = 12 + ((b0 & 0x0F) << 2)
        if b0 & 0x10:
            pos += 4 + (HH.unpack_from(data, pos)[1] << 2)
        pend = n - data[n - 1] if b0 & 0x20 else n
        out = bytearray(data[:pos])
        out[0] = b0 & 0xDF
        rseq = self._rtx_seq
        self._rtx_seq = (rseq + 1) & 0xFFFF
        PT_SEQ_TS_SSRC.pack_into(
            out,
            1,
            (data[1] & 0x80) | (self.rtx_payload_type or 0),
            rseq,
            (data[4] << 24) | (data[5] << 16) | (data[6] << 8) | data[7],
            self.rtx_ssrc or 0,
        )
        out += data[2:4]
        out += data[pos:pend]
        return bytes(out)

    def build_rtx_probe(self, depth: int, max_size: int) -> bytes | None:
        """A bandwidth probe carrying real media, as libwebrtc sends when history exists: the RTX
        (RFC 4588: RTX SSRC/PT/seq, OSN in the first two payload bytes) of the packet ``depth``
        behind the newest one sent, its extension block (MID, tw-seq slot) kept. ``None`` without
        RTX or history, when that packet is gone, or when its RTX would exceed ``max_size``."""
        if not self.rtx_enabled or not self._started or self._n <= 1:
            return None
        seq = (self.max_seq - depth) & 0xFFFF
        entry = self._ring[seq % self._n]
        if entry is None or self._entry_seq(entry) != seq:
            return None
        if (len(entry) if type(entry) is bytes else len(entry[0])) + 2 > max_size:
            return None
        return self._rtx_wrap(entry if type(entry) is bytes else self._rebuild(entry))

    def build_rtx_padding(self, pad_len: int = 255) -> bytes | None:
        """A padding-only RTX packet (bandwidth probe): RTX SSRC/PT/seq, the last media timestamp,
        a one-byte extension block with this consumer's MID element and an empty transport-wide
        seq slot (id 5, stamped by the transport), then ``pad_len`` (1..255) padding octets.
        ``None`` without RTX or before the first packet."""
        if not self.rtx_enabled or not self._started:
            return None
        pad_len = min(255, max(1, pad_len))
        ext = bytearray()
        if self._mid_elem_id:
            ext += self._mid_elem
        ext += b"\x51\x00\x00"  # transport-wide-cc slot (router id 5, 2 bytes)
        ext += bytes(-len(ext) & 3)
        out = bytearray(12)
        out[0] = 0xB0  # V=2, P=1, X=1
        rseq = self._rtx_seq
        self._rtx_seq = (rseq + 1) & 0xFFFF
        PT_SEQ_TS_SSRC.pack_into(out, 1, self.rtx_payload_type or 0, rseq, self.max_ts, self.rtx_ssrc or 0)
        out += HH.pack(0xBEDE, len(ext) >> 2)
        out += ext
        out += bytes(pad_len - 1)
        out.append(pad_len)
        return bytes(out)

    def get_buffered(self, seq: int) -> bytes | None:
        """The stored packet for an output seq (tests, diagnostics)."""
        entry = self._ring[(seq & 0xFFFF) % self._n]
        if entry is None or self._entry_seq(entry) != (seq & 0xFFFF):
            return None
        return entry if type(entry) is bytes else self._rebuild(entry)

    # ------------------------------------------------------------------------------------------
    # RTCP

    def on_pli(self) -> None:
        self.plis_received += 1

    def on_fir(self) -> None:
        self.firs_received += 1

    def build_sr(self, now_wall: float, now: float) -> bytes | None:
        """SR (+ SDES CNAME) for this stream; ``None`` before the first packet."""
        if not self._started:
            return None
        ntp_sec, ntp_frac = rtcp.ntp_from_wall(now_wall)
        rtp_ts = (self.max_ts + int(round((now - self._max_sent_at) * self.clock_rate))) & 0xFFFFFFFF
        sr = rtcp.build_sr(self.ssrc, ntp_sec, ntp_frac, rtp_ts, self.packets, self.octets)
        compact = rtcp.ntp_compact(ntp_sec, ntp_frac)
        sent = self._sr_sent
        sent[compact] = now
        if len(sent) > 8:
            del sent[next(iter(sent))]
        self.srs_sent += 1
        if self.cname:
            return sr + rtcp.build_sdes_cname(self.ssrc, self.cname)
        return sr

    def on_receiver_report(
        self,
        fraction_lost: int,
        cumulative_lost: int,
        highest_seq: int,
        jitter: int,
        lsr: int,
        dlsr: int,
        now: float,
    ) -> None:
        """Update RTT (LSR/DLSR against the SRs we sent), loss and score from a report block."""
        sent_at = self._sr_sent.get(lsr) if lsr else None
        if sent_at is not None:
            rtt = (now - sent_at - dlsr / 65536.0) * 1000.0
            if rtt >= 0:
                self.rtt_ms = rtt
        self.fraction_lost = fraction_lost
        self.jitter = jitter
        self.packets_lost = cumulative_lost
        if self._rr_prev_highest >= 0:
            expected = (highest_seq - self._rr_prev_highest) & 0xFFFFFFFF
            if 0 < expected < 0x80000000:
                lost = cumulative_lost - self._rr_prev_lost
                self._score.add(interval_score(expected, lost))
        else:  # first report: only the fraction lost is meaningful
            self._score.add(interval_score(256, fraction_lost))
        self._rr_prev_highest = highest_seq
        self._rr_prev_lost = cumulative_lost

    @property
    def score(self) -> int:
        return self._score.score

    def bitrate_bps(self, now: float) -> int:
        return self._rate.rate_bps(self.bytes, now)

    def to_stats(self, now: float) -> dict[str, Any]:
        """mediasoup-like outbound-rtp stats."""
        return {
            "type": "outbound-rtp",
            "timestamp": now * 1000.0,
            "ssrc": self.ssrc,
            "rtxSsrc": self.rtx_ssrc,
            "kind": self.kind,
            "mimeType": f"{self.kind}/{self.codec}",
            "packetCount": self.packets,
            "byteCount": self.bytes,
            "bitrate": self.bitrate_bps(now),
            "packetsLost": self.packets_lost,
            "fractionLost": self.fraction_lost,
            "packetsDiscarded": self.dropped_gated,
            "packetsRetransmitted": self.retransmitted,
            "nackCount": self.nacks_received,
            "nackPacketCount": self.nack_packets_received,
            "pliCount": self.plis_received,
            "firCount": self.firs_received,
            "jitter": self.jitter,
            "roundTripTime": self.rtt_ms,
            "score": self.score,
        }
