"""Transport-wide congestion control bytes (draft-holmer-rmcat-transport-wide-cc-extensions-01).

Three pieces, all per transport and free of asyncio:

* :class:`TwccStamper` — egress. ``stamp(data, now)`` writes the next transport-wide sequence number
  into the packet's reserved 2-byte slot and records ``(send time, size, probe cluster)`` under that
  sequence number in a ring (the "send record" the estimator joins feedback with). The slot is the
  element ``RecvStream`` reserves at ingress: a one-byte-header element with id ``TWCC_SLOT_ID``
  and a 2-byte value, placed right after the 9-byte MID slot (or first when there is no MID
  slot), so its position is found with two byte compares and no parse. Packets without the slot
  are sent unstamped (counted). This is the whole per-packet cost; a compiled fan-out mirrors
  :func:`twcc_slot_offset` + :meth:`TwccStamper.record`.
* :func:`parse_feedback` — a TransportFeedback packet (RTCP RTPFB FMT 15) from a receiver into
  ``(base_seq, [(seq, arrival_us or -1), ...])``.
* :class:`TwccRecorder` — ingress. Records the transport-wide seq and arrival time of packets from
  a sender and builds TransportFeedback packets for it (so a browser's own send-side estimator works
  against us).
"""

from __future__ import annotations

import struct

from studyrooms.media.rtp import Buf

TWCC_SLOT_ID = 5  # the router's transport-wide-cc extension id (mediasoup's preferred id)
TWCC_SLOT_HEADER = (TWCC_SLOT_ID << 4) | 1  # one-byte header form: id 5, length 2
MID_SLOT_HEADER_LEN = 9  # 1 header byte + 8 value bytes (see RecvStream)
RING = 1 << 14  # send records kept (16384 packets: seconds of history at several Mbps)
RING_MASK = RING - 1

_FB_HEAD = struct.Struct("!BBHIIHHI")  # header, sender ssrc, media ssrc, base seq, count, ref|fbcount
_H = struct.Struct("!H")
_h = struct.Struct("!h")
DELTA_UNIT_US = 250
REF_UNIT_US = 64000


def twcc_slot_offset(data: Buf) -> int:
    """Offset of the reserved transport-wide seq value in ``data``, or -1 when it has no slot:
    a one-byte (0xBEDE) block whose first element is the 2-byte slot, or whose first 9 bytes are
    the MID slot and then the 2-byte slot (the layout RecvStream gives every forwarded packet)."""
    b0 = data[0]
    if not b0 & 0x10:
        return -1
    hdr_end = 12 + ((b0 & 0x0F) << 2)
    if len(data) < hdr_end + 8 or data[hdr_end] != 0xBE or data[hdr_end + 1] != 0xDE:
        return -1
    if data[hdr_end + 4] == TWCC_SLOT_HEADER:
        return hdr_end + 5
    # the MID slot is 9 bytes whatever the MID's length (a short MID is followed by zero padding)
    p = hdr_end + 4 + MID_SLOT_HEADER_LEN
    if p + 3 <= len(data) and data[p] == TWCC_SLOT_HEADER:
        return p + 1
    return -1


class TwccStamper:
    """Egress transport-wide sequence numbers and the send record (see the module docstring).

    One unbounded counter gives both the next seq (its low 16 bits) and the number stamped, and
    one tuple per packet is the record: the fewest stores on the per-packet path (round 3
    profile, ``benchmarks.bwe_profile``)."""

    __slots__ = ("count", "initial", "records", "cluster", "unstamped")

    def __init__(self, initial_seq: int = 1) -> None:
        self.initial = self.count = initial_seq & 0xFFFF
        self.records: list[tuple[float, int, int] | None] = [None] * RING  # (sent_at, size, cluster)
        self.cluster = -1  # probe cluster id packets sent now belong to (-1: none)
        self.unstamped = 0

    @property
    def seq(self) -> int:
        """The next seq to use."""
        return self.count & 0xFFFF

    @property
    def stamped(self) -> int:
        return self.count - self.initial

    def record(self, size: int, now: float) -> int:
        """Take the next transport-wide seq for a packet of ``size`` bytes sent at ``now``."""
        count = self.count
        self.count = count + 1
        seq = count & 0xFFFF
        self.records[seq & RING_MASK] = (now, size, self.cluster)
        return seq

    def stamp(self, data: bytes, now: float) -> bytes | bytearray:
        """``data`` with its slot filled (a bytearray copy), or ``data`` unchanged when it has no slot.
        (:func:`twcc_slot_offset` + :meth:`record`, inlined: this runs for every packet sent.)"""
        b0 = data[0]
        n = len(data)
        off = -1
        if b0 & 0x10:
            h = 12 + ((b0 & 0x0F) << 2)
            if h + 8 <= n and data[h] == 0xBE and data[h + 1] == 0xDE:
                if h + 16 <= n and data[h + 13] == TWCC_SLOT_HEADER:
                    off = h + 14
                elif data[h + 4] == TWCC_SLOT_HEADER:
                    off = h + 5
        if off < 0:
            self.unstamped += 1
            return data
        count = self.count
        self.count = count + 1
        seq = count & 0xFFFF
        self.records[seq & RING_MASK] = (now, n, self.cluster)
        # one copy (a bytearray: SRTP protect reads any buffer) instead of two slices and a join
        out = bytearray(data)
        out[off] = seq >> 8
        out[off + 1] = seq & 0xFF
        return out

    def lookup(self, seq: int) -> tuple[float, int, int] | None:
        """``(sent_at, size, cluster)`` of a recent seq, ``None`` if unknown or overwritten."""
        rec = self.records[seq & RING_MASK]
        if rec is None:
            return None
        next_seq = self.count & 0xFFFF
        # a record is only valid for the seq that last wrote it: older than RING packets is gone
        if ((next_seq - seq) & 0xFFFF) > RING or seq == next_seq:
            return None
        return rec


# ---------------------------------------------------------------------------------------------
# TransportFeedback parsing (receiver -> us)


def parse_feedback(data: Buf, offset: int, length: int) -> tuple[int, int, list[tuple[int, int]]] | None:
    """``(media_ssrc, feedback_count, [(seq, arrival_us or -1), ...])`` of a TransportFeedback
    (RTPFB FMT 15); arrival times are in microseconds on the receiver's clock (reference time x
    64 ms + deltas; the 24-bit reference time is returned unwrapped as is). ``None`` if malformed."""
    end = offset + length
    if offset < 0 or length < 20 or end > len(data) or data[offset] & 0xC0 != 0x80:
        return None
    if data[offset + 1] != 205 or data[offset] & 0x1F != 15:
        return None
    _hdr, _pt, _len, _sender, media, base, count, ref = _FB_HEAD.unpack_from(data, offset)
    ref_time = ref >> 8
    fb_count = ref & 0xFF
    if count == 0:
        return media, fb_count, []
    symbols: list[int] = []
    p = offset + 20
    while len(symbols) < count:
        if p + 2 > end:
            return None
        chunk = (data[p] << 8) | data[p + 1]
        p += 2
        if not chunk & 0x8000:  # run length
            symbol = (chunk >> 13) & 0x3
            run = chunk & 0x1FFF
            if run == 0:
                return None
            symbols.extend([symbol] * min(run, count - len(symbols)))
        elif not chunk & 0x4000:  # status vector, 14 one-bit symbols
            for k in range(13, -1, -1):
                symbols.append((chunk >> k) & 1)
        else:  # status vector, 7 two-bit symbols
            for k in range(12, -1, -2):
                symbols.append((chunk >> k) & 3)
    del symbols[count:]
    t = ref_time * REF_UNIT_US
    out: list[tuple[int, int]] = []
    seq = base
    for s in symbols:
        if s == 1:
            if p + 1 > end:
                return None
            t += data[p] * DELTA_UNIT_US
            p += 1
            out.append((seq, t))
        elif s == 2:
            if p + 2 > end:
                return None
            t += _h.unpack_from(data, p)[0] * DELTA_UNIT_US
            p += 2
            out.append((seq, t))
        elif s == 0:
            out.append((seq, -1))
        else:
            return None  # reserved symbol
        seq = (seq + 1) & 0xFFFF
    return media, fb_count, out


# ---------------------------------------------------------------------------------------------
# TransportFeedback generation (us -> a sender)


class TwccRecorder:
    """Arrival times of one remote sender's transport-wide seqs; :meth:`build` turns what arrived
    since the last feedback into TransportFeedback packets (2-bit status vector chunks)."""

    __slots__ = ("_arrivals", "_next_base", "_fb_count", "_max_seq_ext", "_cycles", "_last_raw",
                 "received", "feedback_sent", "media_ssrc", "ext_id")

    MAX_PACKETS_PER_FEEDBACK = 500

    def __init__(self) -> None:
        self._arrivals: dict[int, int] = {}  # extended seq -> arrival us
        self._next_base = -1  # extended seq the next feedback starts at
        self._fb_count = 0
        self._cycles = 0
        self._last_raw = -1
        self._max_seq_ext = -1
        self.received = 0
        self.feedback_sent = 0
        self.media_ssrc = 0
        self.ext_id = 0  # the sender's transport-wide-cc extension id (0: it sends none)

    def on_rtp(self, data: Buf, now: float) -> None:
        """Every plaintext RTP packet from the sender (before any routing, so padding-only probes
        and packets of streams not yet known are reported too): find the extension, record."""
        b0 = data[0]
        if not b0 & 0x10:
            return
        n = len(data)
        p = 12 + ((b0 & 0x0F) << 2)
        if p + 4 > n:
            return
        profile = (data[p] << 8) | data[p + 1]
        end = p + 4 + (((data[p + 2] << 8) | data[p + 3]) << 2)
        if end > n:
            return
        p += 4
        xid_want = self.ext_id
        if profile == 0xBEDE:
            while p < end:
                h = data[p]
                if h == 0:
                    p += 1
                    continue
                xid = h >> 4
                ln = (h & 0x0F) + 1
                if xid == 15 or p + 1 + ln > end:
                    return
                if xid == xid_want:
                    if ln == 2:
                        self.on_packet((data[p + 1] << 8) | data[p + 2], now, (data[8] << 24) | (data[9] << 16)
                                       | (data[10] << 8) | data[11])
                    return
                p += 1 + ln
        elif profile & 0xFFF0 == 0x1000:
            while p + 2 <= end:
                xid = data[p]
                if xid == 0:
                    p += 1
                    continue
                ln = data[p + 1]
                if p + 2 + ln > end:
                    return
                if xid == xid_want:
                    if ln == 2:
                        self.on_packet((data[p + 2] << 8) | data[p + 3], now, (data[8] << 24) | (data[9] << 16)
                                       | (data[10] << 8) | data[11])
                    return
                p += 2 + ln

    def on_packet(self, seq: int, now: float, ssrc: int) -> None:
        """A packet carrying transport-wide seq ``seq`` arrived at ``now`` (hot path)."""
        last = self._last_raw
        if last >= 0:
            d = (seq - last) & 0xFFFF
            if d < 0x8000:
                if seq < last:
                    self._cycles += 0x10000
                ext = self._cycles + seq
                self._last_raw = seq
            else:  # older (reordered)
                ext = self._cycles + seq - (0x10000 if seq > last else 0)
        else:
            ext = seq
            self._last_raw = seq
        if ext > self._max_seq_ext:
            self._max_seq_ext = ext
        arrivals = self._arrivals
        if ext not in arrivals and ext >= self._next_base:
            arrivals[ext] = int(now * 1_000_000)
        self.received += 1
        self.media_ssrc = ssrc
        if len(arrivals) > 4 * self.MAX_PACKETS_PER_FEEDBACK:  # nobody asks for feedback: bound memory
            for k in sorted(arrivals)[: len(arrivals) - 2 * self.MAX_PACKETS_PER_FEEDBACK]:
                del arrivals[k]

    def build(self, sender_ssrc: int) -> list[bytes]:
        """TransportFeedback packets for what arrived since the last call (empty if nothing)."""
        arrivals = self._arrivals
        if not arrivals:
            return []
        out: list[bytes] = []
        seqs = sorted(arrivals)
        base = self._next_base if self._next_base >= 0 else seqs[0]
        base = max(base, seqs[-1] - 0x7FFF)
        seqs = [s for s in seqs if s >= base]
        i = 0
        while i < len(seqs):
            # one feedback: from base, at most MAX packets, deltas must fit 16 bits
            start = base
            first_arrival = arrivals[seqs[i]]
            ref = first_arrival // REF_UNIT_US
            t = ref * REF_UNIT_US
            statuses: list[int] = []
            deltas = bytearray()
            j = i
            seq = start
            while j < len(seqs) and seq - start < self.MAX_PACKETS_PER_FEEDBACK:
                if seqs[j] != seq:
                    statuses.append(0)
                    seq += 1
                    continue
                at = arrivals[seqs[j]]
                delta = (at - t) // DELTA_UNIT_US
                if 0 <= delta <= 255:
                    statuses.append(1)
                    deltas.append(delta)
                elif -32768 <= delta <= 32767:
                    statuses.append(2)
                    deltas += _h.pack(delta)
                else:
                    break
                t += delta * DELTA_UNIT_US
                j += 1
                seq += 1
            while statuses and statuses[-1] == 0:
                statuses.pop()
            if not statuses:
                break
            chunks = bytearray()
            for k in range(0, len(statuses), 7):
                group = statuses[k : k + 7]
                group += [0] * (7 - len(group))
                v = 0xC000
                for idx, s in enumerate(group):
                    v |= s << (12 - 2 * idx)
                chunks += _H.pack(v)
            body = chunks + deltas
            body += bytes(-len(body) & 3)
            words = (20 + len(body)) // 4 - 1
            head = _FB_HEAD.pack(
                0x80 | 15, 205, words, sender_ssrc & 0xFFFFFFFF, self.media_ssrc & 0xFFFFFFFF,
                start & 0xFFFF, len(statuses), ((ref & 0xFFFFFF) << 8) | self._fb_count,
            )
            self._fb_count = (self._fb_count + 1) & 0xFF
            out.append(head + bytes(body))
            self.feedback_sent += 1
            base = start + len(statuses)
            i = j
        for k in [k for k in arrivals if k < base]:
            del arrivals[k]
        self._next_base = base
        return out
