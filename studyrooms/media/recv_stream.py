"""RecvStream: one per producer encoding (mediasoup RtpStreamRecv + NackGenerator + ingress mangling).

``receive(data)`` validates a plaintext RTP packet, tracks sequence numbers (RFC 3550 A.1 with
mediasoup's dropout/misorder limits), jitter (A.8), bitrate and losses (for NACK), and returns a
NEW bytearray normalised for the router: router payload type, a one-byte (0xBEDE) extension block
holding only mapped extensions under router ids, with an 8-byte MID slot first when requested
(consumers write their own MID there in place), then a 2-byte transport-wide-cc slot when requested
(the egress transport stamps its own sequence number there, see ``media/twcc.py``), CSRCs and
padding kept. The sender's own transport-wide seq is never forwarded (the ingress transport
records it for its feedback before the packet gets here, see ``TwccRecorder.on_rtp``).
"""

from __future__ import annotations

import math
from operator import itemgetter
from typing import Any, Mapping

from studyrooms.clock import Clock
from studyrooms.media import rtcp
from studyrooms.media.keyframe import keyframe_detector
from studyrooms.media.rate import RateMeter
from studyrooms.media.rtp import HDR, HH, U32
from studyrooms.media.score import ScoreHistory, interval_score

MAX_DROPOUT = 3000
MAX_MISORDER = 1500
SEQ_MOD = 1 << 16
_TABLE_SIZE = 4096  # received-bitmap window (> MAX_MISORDER)
_TABLE_MASK = _TABLE_SIZE - 1

DEFAULT_RTT_MS = 100.0
MIN_NACK_INTERVAL_S = 0.02
MAX_NACK_RETRIES = 10
MAX_NACK_AGE = 1000  # packets behind the highest seq after which a loss is forgotten
MAX_NACK_PACKETS = 1000

MID_SLOT_LEN = 8
_PAD = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")
_BEDE = 0xBEDE
_MAX_PLANS = 16


class RecvStream:
    """Receive side of one producer encoding. See the module docstring."""

    __slots__ = (
        "_al_id", "_bad_seq", "_base_ext", "_clock", "_cycles", "_expected_prior", "_ext_max", "_ext_table",
        "_last_kf_ext", "_last_transit", "_lsr", "_max_seq", "_mid_slot", "_nack", "_now", "_plans",
        "_pt_table", "_rate", "_rate_next", "_received", "_received_prior", "_rtx_apt", "_score", "_sr_at",
        "_started", "_table", "_jitter_q4", "_kf", "bytes", "clock_rate", "codec", "discarded",
        "duplicates", "fraction_lost", "invalid", "keyframe_required", "keyframes", "kind",
        "last_audio_level", "last_ext_seq", "last_receive_time", "missing", "snapshot", "last_keyframe", "last_marker", "last_payload_end",
        "last_payload_offset", "last_seq", "last_ts", "max_nack_age", "max_nack_retries",
        "mid_value_offset", "nack_enabled", "nack_give_ups", "nack_packets_requested", "nacks_sent",
        "packets", "packets_repaired", "reserve_mid_ext_id", "restarts", "rid", "rtt_ms", "rtx_packets",
        "rtx_padding_packets", "rtx_payload_type", "rtx_ssrc", "sr_ntp_frac", "sr_ntp_sec", "sr_received",
        "sr_rtp_ts", "ssrc", "unknown_payload_type", "_slots", "_twcc_ids"
    )

    def __init__(
        self,
        *,
        ssrc: int,
        kind: str,
        codec: str,
        clock_rate: int,
        payload_type_map: Mapping[int, int],
        ext_id_map: Mapping[int, int],
        reserve_mid_ext_id: int | None,
        audio_level_ext_id: int | None,
        rtx_ssrc: int | None = None,
        rtx_payload_type: int | None = None,
        rid: str | None = None,
        nack_enabled: bool = True,
        clock: Clock,
        rtx_apt: int | None = None,
        max_nack_age: int = MAX_NACK_AGE,
        max_nack_retries: int = MAX_NACK_RETRIES,
        reserve_twcc_ext_id: int | None = None,
    ) -> None:
        self.ssrc = ssrc
        self.kind = kind
        self.codec = codec.lower().rsplit("/", 1)[-1]
        self.clock_rate = clock_rate
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self.rid = rid
        self.nack_enabled = nack_enabled
        self._clock = clock
        self._now = clock.now

        # client PT -> router PT, as a 128-entry table (-1 = unknown); the RTX PT is never media
        pt_table = [-1] * 128
        for cpt, rpt in payload_type_map.items():
            if 0 <= cpt < 128 and cpt != rtx_payload_type:
                pt_table[cpt] = rpt & 0x7F
        self._pt_table = pt_table
        if rtx_apt is None:
            rtx_apt = next((p for p in payload_type_map if p != rtx_payload_type), -1)
        self._rtx_apt = rtx_apt
        # client ext id -> router id (0 = drop); one-byte form only carries router ids 1..14
        ext_table = bytearray(256)
        twcc_ids = bytearray(256)
        for cid, rid_ in ext_id_map.items():
            if 0 < cid < 256 and reserve_twcc_ext_id and rid_ == reserve_twcc_ext_id:
                twcc_ids[cid] = 1  # read at ingress, never copied (the slot takes its place)
            elif 0 < cid < 256 and 0 < rid_ < 15 and rid_ != reserve_mid_ext_id:
                ext_table[cid] = rid_
        self._ext_table = bytes(ext_table)
        self._twcc_ids = bytes(twcc_ids)
        self.reserve_mid_ext_id = reserve_mid_ext_id
        if reserve_mid_ext_id is not None and 0 < reserve_mid_ext_id < 15:
            header = (reserve_mid_ext_id << 4) | (MID_SLOT_LEN - 1)
            self._mid_slot: bytes = bytes((header,)) + bytes(MID_SLOT_LEN)
        else:
            self._mid_slot = b""
        if reserve_twcc_ext_id is not None and 0 < reserve_twcc_ext_id < 15:
            self._slots = self._mid_slot + bytes(((reserve_twcc_ext_id << 4) | 1, 0, 0))
        else:
            self._slots = self._mid_slot
        self._al_id = audio_level_ext_id if audio_level_ext_id else -1
        self._kf = keyframe_detector(self.codec) if kind == "video" else None

        # per-packet results
        self.last_seq = -1
        self.last_ts = -1
        self.last_marker = False
        self.last_keyframe = False
        self.last_audio_level = -1
        self.last_payload_offset = -1
        self.last_payload_end = -1
        self.mid_value_offset = -1
        self.last_ext_seq = -1
        self.last_receive_time = -1.0
        self.snapshot: bytes | None = None  # immutable copy of the last packet, set by the owner for NACK history

        # sequence tracking (RFC 3550 A.1)
        self._started = False
        self._base_ext = 0
        self._max_seq = 0
        self._cycles = 0
        self._ext_max = 0
        self._bad_seq = -1
        self._received = 0  # since (re)start, for loss statistics
        self._table = bytearray(_TABLE_SIZE)
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter_q4 = 0
        self._last_transit = -1

        # NACK generator: ext seq -> [sends, last_sent_at]
        self._nack: dict[int, list[Any]] = {}
        # Public read-only view of the losses being chased (the same dict; never rebound): a cheap
        # truthiness test on the packet path tells the producer a NACK may be due.
        self.missing = self._nack
        self.max_nack_age = max_nack_age
        self.max_nack_retries = max_nack_retries
        self.rtt_ms = DEFAULT_RTT_MS
        self._last_kf_ext = -1
        self.keyframe_required = False  # set when the NACK list overflowed (caller sends a PLI)

        # sender report state
        self._lsr = 0
        self._sr_at = -1.0
        self.sr_ntp_sec = 0
        self.sr_ntp_frac = 0
        self.sr_rtp_ts = 0
        self.sr_received = 0

        # stats
        self.packets = 0
        self.bytes = 0
        self.fraction_lost = 0
        self.keyframes = 0
        self.rtx_packets = 0
        self.rtx_padding_packets = 0
        self.nacks_sent = 0
        self.nack_packets_requested = 0
        self.packets_repaired = 0
        self.nack_give_ups = 0
        self.duplicates = 0
        self.discarded = 0
        self.invalid = 0
        self.unknown_payload_type = 0
        self.restarts = 0
        self._rate = RateMeter()
        self._rate_next = -math.inf
        self._plans: dict[int, tuple] = {}
        self._score = ScoreHistory(0)

    # ------------------------------------------------------------------------------------------
    # ingress

    def receive(self, data: bytes | bytearray) -> bytearray | None:
        """Validate, track and normalise one RTP packet of this stream (see module docstring)."""
        return self._receive(data, False)

    def receive_rtx(self, data: bytes | bytearray) -> bytearray | None:
        """RFC 4588: unwrap an RTX packet (OSN from the first two payload bytes; SSRC, PT restored)
        and process it as :meth:`receive`. ``None`` for duplicates, padding-only or invalid RTX."""
        n = len(data)
        if n < 12:
            self.invalid += 1
            return None
        b0, b1, _seq, _ts, ssrc = HDR.unpack_from(data, 0)
        if b0 & 0xC0 != 0x80 or (b1 & 0x7F) != self.rtx_payload_type or self._rtx_apt < 0:
            self.invalid += 1
            return None
        if self.rtx_ssrc is not None and ssrc != self.rtx_ssrc:
            self.invalid += 1
            return None
        pos = 12 + ((b0 & 0x0F) << 2)
        if b0 & 0x10:
            if pos + 4 > n:
                self.invalid += 1
                return None
            pos += 4 + (HH.unpack_from(data, pos)[1] << 2)
        pend = n
        if b0 & 0x20:
            pad = data[n - 1]
            if pad == 0 or pos + pad > n:
                self.invalid += 1
                return None
            pend = n - pad
        if pos > pend:
            self.invalid += 1
            return None
        self.rtx_packets += 1
        if pend - pos < 2:  # padding-only RTX (bandwidth probing)
            self.rtx_padding_packets += 1
            return None
        buf = bytearray(pend - 2)
        buf[:pos] = data[:pos]
        buf[pos:] = data[pos + 2 : pend]
        buf[0] = b0 & 0xDF
        buf[1] = (b1 & 0x80) | self._rtx_apt
        buf[2] = data[pos]
        buf[3] = data[pos + 1]
        U32.pack_into(buf, 8, self.ssrc)
        return self._receive(buf, True)

    def _receive(self, data: bytes | bytearray, rtx: bool) -> bytearray | None:
        n = len(data)
        if n < 12:
            self.invalid += 1
            return None
        b0, b1, seq, ts, _ssrc = HDR.unpack_from(data, 0)
        if b0 & 0xC0 != 0x80:
            self.invalid += 1
            return None
        rpt = self._pt_table[b1 & 0x7F]
        if rpt < 0:
            self.unknown_payload_type += 1
            return None
        hdr_end = 12 + ((b0 & 0x0F) << 2)
        if b0 & 0x10:
            if hdr_end + 4 > n:
                self.invalid += 1
                return None
            profile, words = HH.unpack_from(data, hdr_end)
            pos = hdr_end + 4 + (words << 2)
        else:
            profile = words = 0
            pos = hdr_end
        if pos > n:
            self.invalid += 1
            return None
        pend = n
        if b0 & 0x20:
            pad = data[n - 1]
            if pad == 0 or pos + pad > n:
                self.invalid += 1
                return None
            pend = n - pad

        # ---- sequence tracking: in-order fast path, everything else in _track_seq
        now = self._now()
        self.last_receive_time = now
        if self._started and seq == ((self._max_seq + 1) & 0xFFFF):
            if seq == 0:
                self._cycles += SEQ_MOD
            ext_seq = self._cycles + seq
            self._table[ext_seq & _TABLE_MASK] = 1
            self._max_seq = seq
            self._ext_max = ext_seq
            self._received += 1
        else:
            ext_seq = self._track_seq(seq, now)
            if ext_seq < 0:
                return None
        if not rtx:
            # RFC 3550 A.8 interarrival jitter, in timestamp units (kept scaled by 16)
            transit = (int(now * self.clock_rate) - ts) & 0xFFFFFFFF
            last = self._last_transit
            if last >= 0:
                d = transit - last
                if d < 0:
                    d = -d
                if d > 0x7FFFFFFF:
                    d = 0x100000000 - d
                self._jitter_q4 += d - ((self._jitter_q4 + 8) >> 4)
            self._last_transit = transit
        self.packets += 1
        if now >= self._rate_next:
            self._rate_next = self._rate.sample(self.bytes, now)
        self.bytes += n

        # ---- normalise: router PT, one-byte extension block with router ids (+ MID slot)
        out = bytearray(data)
        level = -1
        if b0 & 0x10 or self._slots:
            key = (hdr_end << 32) | (profile << 16) | words
            plan = self._plans.get(key)
            if plan is None or (plan[0] is not None and plan[0](data) != plan[1]):
                plan = self._make_plan(data, key, hdr_end, pos, profile)
            tmpl = plan[2]
            out[hdr_end:pos] = tmpl
            if tmpl:
                out[0] = b0 | 0x10
                for src, dst, ln in plan[3]:
                    out[dst : dst + ln] = data[src : src + ln]
                if plan[4] >= 0:
                    level = data[plan[4]] & 0x7F
            else:
                out[0] = b0 & 0xEF
            new_pos = hdr_end + len(tmpl)
        else:
            new_pos = pos
        out[1] = (b1 & 0x80) | rpt
        new_end = new_pos + (pend - pos)

        self.last_seq = seq
        self.last_ext_seq = ext_seq
        self.last_ts = ts
        self.last_marker = b1 >= 0x80
        self.last_audio_level = level
        self.last_payload_offset = new_pos
        self.last_payload_end = new_end
        self.mid_value_offset = hdr_end + 5 if self._mid_slot else -1
        kf = self._kf
        if kf is not None and kf(out, new_pos, new_end):
            self.last_keyframe = True
            self.keyframes += 1
            self._last_kf_ext = ext_seq
        else:
            self.last_keyframe = False
        return out

    def _make_plan(self, data: bytes | bytearray, key: int, hdr_end: int, pos: int, profile: int) -> tuple:
        """Parse an extension block once and record how to rebuild it: the bytes the parse
        inspected (headers, padding: a later packet with the same values there has the same
        layout), the output template (header, MID slot, element headers, zeroed values, padding)
        and the value copies. Returns ``(getter, expected, template, copies, level_pos)``."""
        ext_table = self._ext_table
        twcc_ids = self._twcc_ids
        al_id = self._al_id
        inspected: list[int] = []
        out_ext = bytearray(self._slots)
        copies: list[tuple[int, int, int]] = []
        level_pos = -1
        base = hdr_end + 4  # output offset of the first element
        p = hdr_end + 4 if profile else pos
        if profile == _BEDE:
            while p < pos:
                inspected.append(p)
                h = data[p]
                if h == 0:
                    p += 1
                    continue
                xid = h >> 4
                if xid == 15:
                    break
                v = p + 1
                p = v + (h & 0x0F) + 1
                if p > pos:
                    break
                rid_ = ext_table[xid]
                if twcc_ids[xid]:
                    pass  # the sender's transport-wide seq: the reserved slot takes its place
                elif rid_:
                    out_ext.append((rid_ << 4) | (h & 0x0F))
                    copies.append((v, base + len(out_ext), p - v))
                    out_ext += bytes(p - v)
                    if rid_ == al_id:
                        level_pos = v
        elif profile & 0xFFF0 == 0x1000:
            while p < pos:
                inspected.append(p)
                xid = data[p]
                if xid == 0:
                    p += 1
                    continue
                if p + 2 > pos:
                    break
                inspected.append(p + 1)
                ln = data[p + 1]
                v = p + 2
                p = v + ln
                if p > pos:
                    break
                rid_ = ext_table[xid]
                if twcc_ids[xid]:
                    pass
                elif rid_ and 0 < ln <= 16:
                    out_ext.append((rid_ << 4) | (ln - 1))
                    copies.append((v, base + len(out_ext), ln))
                    out_ext += bytes(ln)
                    if rid_ == al_id:
                        level_pos = v
        if out_ext:
            out_ext += _PAD[-len(out_ext) & 3]
            tmpl = HH.pack(_BEDE, len(out_ext) >> 2) + bytes(out_ext)
        else:
            tmpl = b""
        getter = itemgetter(*inspected) if inspected else None
        expected = getter(data) if getter is not None else None
        plan = (getter, expected, tmpl, tuple(copies), level_pos)
        plans = self._plans
        if len(plans) >= _MAX_PLANS and key not in plans:
            plans.clear()
        plans[key] = plan
        return plan

    def _track_seq(self, seq: int, now: float) -> int:
        """Update sequence state; return the extended seq, or -1 to drop (duplicate, too old,
        probation after a large jump)."""
        if not self._started:
            self._init_seq(seq)
            return seq
        table = self._table
        udelta = (seq - self._max_seq) & 0xFFFF
        if udelta == 0:
            self.duplicates += 1
            return -1
        if udelta < MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += SEQ_MOD
            ext = self._cycles + seq
            prev = self._ext_max
            if udelta > 1:
                if udelta > _TABLE_SIZE:
                    table[:] = bytes(_TABLE_SIZE)
                else:
                    for e in range(prev + 1, ext):
                        table[e & _TABLE_MASK] = 0
                if self.nack_enabled:
                    self._add_losses(max(prev + 1, ext - self.max_nack_age), ext)
            table[ext & _TABLE_MASK] = 1
            self._max_seq = seq
            self._ext_max = ext
            self._received += 1
            return ext
        if udelta <= SEQ_MOD - MAX_MISORDER:
            # a very large jump: accept only if the next packet follows it (stream restart)
            if seq == self._bad_seq:
                self.restarts += 1
                self._init_seq(seq)
                return seq
            self._bad_seq = (seq + 1) & 0xFFFF
            self.discarded += 1
            return -1
        # older packet: reordered, retransmitted or duplicate
        ext = self._ext_max - (SEQ_MOD - udelta)
        if ext < self._base_ext:
            self.discarded += 1
            return -1
        slot = ext & _TABLE_MASK
        if table[slot]:
            self.duplicates += 1
            return -1
        table[slot] = 1
        self._received += 1
        if self._nack and self._nack.pop(ext, None) is not None:
            self.packets_repaired += 1
        return ext

    def _init_seq(self, seq: int) -> None:
        self._started = True
        self._base_ext = seq
        self._max_seq = seq
        self._cycles = 0
        self._ext_max = seq
        self._bad_seq = -1
        self._received = 1
        self._expected_prior = 0
        self._received_prior = 0
        self._table[:] = bytes(_TABLE_SIZE)
        self._table[seq & _TABLE_MASK] = 1
        self._nack.clear()
        self._last_kf_ext = -1
        if self._score.score == 0 and not self._score.scores:
            self._score.score = 10

    # ------------------------------------------------------------------------------------------
    # NACK generator (mediasoup NackGenerator)

    def _add_losses(self, first: int, end: int) -> None:
        nack = self._nack
        if nack:
            oldest = end - self.max_nack_age
            for e in [e for e in nack if e < oldest]:
                del nack[e]
        for e in range(first, end):
            nack[e] = [0, -math.inf]
        if len(nack) > MAX_NACK_PACKETS:
            # like mediasoup: drop losses older than the last keyframe, else give up and ask for one
            kf = self._last_kf_ext
            if kf >= 0:
                for e in [e for e in nack if e < kf]:
                    del nack[e]
            if len(nack) > MAX_NACK_PACKETS:
                nack.clear()
                self.keyframe_required = True

    def nack_due(self, now: float) -> list[int]:
        """Sequence numbers to NACK now: new losses at once, then each again every
        max(rtt, 20 ms), at most ``max_nack_retries`` times; losses older than ``max_nack_age``
        packets are forgotten. Counts ``nacks_sent`` / ``nack_packets_requested``."""
        nack = self._nack
        if not nack or not self.nack_enabled:
            return []
        interval = self.rtt_ms / 1000.0
        if interval < MIN_NACK_INTERVAL_S:
            interval = MIN_NACK_INTERVAL_S
        oldest = self._ext_max - self.max_nack_age
        retries = self.max_nack_retries
        due: list[int] = []
        drop: list[int] = []
        for ext, info in nack.items():
            if ext < oldest:
                drop.append(ext)
                continue
            if info[0] == 0 or now - info[1] + 1e-9 >= interval:
                info[0] += 1
                info[1] = now
                due.append(ext & 0xFFFF)
                if info[0] >= retries:
                    drop.append(ext)
                    self.nack_give_ups += 1
        for ext in drop:
            del nack[ext]
        if due:
            self.nacks_sent += 1
            self.nack_packets_requested += len(due)
        return due

    def build_nack(self, sender_ssrc: int, now: float) -> bytes | None:
        """An RTCP NACK for :meth:`nack_due` (``None`` if nothing is due)."""
        seqs = self.nack_due(now)
        if not seqs:
            return None
        return rtcp.build_nack(sender_ssrc, self.ssrc, seqs)

    def has_missing(self) -> bool:
        return bool(self._nack)

    @property
    def nack_list_size(self) -> int:
        return len(self._nack)

    # ------------------------------------------------------------------------------------------
    # RTCP

    def on_sender_report(self, ntp_sec: int, ntp_frac: int, rtp_ts: int, now: float) -> None:
        """Record the producer's SR (for LSR/DLSR in our RR and NTP<->RTP mapping)."""
        self._lsr = rtcp.ntp_compact(ntp_sec, ntp_frac)
        self._sr_at = now
        self.sr_ntp_sec = ntp_sec
        self.sr_ntp_frac = ntp_frac
        self.sr_rtp_ts = rtp_ts
        self.sr_received += 1

    @property
    def highest_ext_seq(self) -> int:
        return self._ext_max if self._started else 0

    @property
    def expected_packets(self) -> int:
        return self._ext_max - self._base_ext + 1 if self._started else 0

    @property
    def packets_lost(self) -> int:
        return self.expected_packets - self._received if self._started else 0

    @property
    def jitter(self) -> int:
        """Interarrival jitter in RTP timestamp units."""
        return self._jitter_q4 >> 4

    @property
    def score(self) -> int:
        return self._score.score

    def report_block(self, now: float) -> bytes:
        """A 24-byte RR report block for this stream; also closes the reporting interval
        (fraction lost, score)."""
        expected = self.expected_packets
        exp_i = expected - self._expected_prior
        rec_i = self._received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self._received
        lost_i = exp_i - rec_i
        self.fraction_lost = (lost_i << 8) // exp_i if exp_i > 0 and lost_i > 0 else 0
        if self._started and exp_i > 0:
            self._score.add(interval_score(exp_i, lost_i))
        if self._sr_at >= 0:
            lsr = self._lsr
            dlsr = int((now - self._sr_at) * 65536) & 0xFFFFFFFF
        else:
            lsr = dlsr = 0
        return rtcp.build_report_block(
            self.ssrc, self.fraction_lost, self.packets_lost, self.highest_ext_seq, self.jitter, lsr, dlsr
        )

    def bitrate_bps(self, now: float) -> int:
        return self._rate.rate_bps(self.bytes, now)

    def to_stats(self, now: float) -> dict[str, Any]:
        """mediasoup-like inbound-rtp stats."""
        return {
            "type": "inbound-rtp",
            "timestamp": now * 1000.0,
            "ssrc": self.ssrc,
            "rtxSsrc": self.rtx_ssrc,
            "rid": self.rid,
            "kind": self.kind,
            "mimeType": f"{self.kind}/{self.codec}",
            "packetCount": self.packets,
            "byteCount": self.bytes,
            "bitrate": self.bitrate_bps(now),
            "packetsLost": self.packets_lost,
            "fractionLost": self.fraction_lost,
            "packetsDiscarded": self.discarded + self.invalid + self.unknown_payload_type,
            "packetsDuplicated": self.duplicates,
            "packetsRepaired": self.packets_repaired,
            "packetsRetransmitted": self.rtx_packets,
            "nackCount": self.nacks_sent,
            "nackPacketCount": self.nack_packets_requested,
            "keyFrames": self.keyframes,
            "jitter": self.jitter,
            "roundTripTime": self.rtt_ms,
            "score": self.score,
        }
