"""RtpListener: which producer stream an incoming RTP packet belongs to (mediasoup's RtpListener).

Lookup order: SSRC table (the fast path: one dict lookup per packet); for an unknown SSRC, the
MID header extension names the producer and the RID (or repaired RID for RTX) names the encoding;
the SSRC is then learned so later packets take the fast path. Browsers sending simulcast announce
no SSRCs, only RIDs.

An entry is ``(producer, key)``: ``key >= 0`` is the index of a media encoding, ``key < 0`` is the
RTX stream of encoding ``~key``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..media.rtp import iter_extensions, parse_rtp

if TYPE_CHECKING:
    from .producer import Producer

MAX_LEARNED_SSRCS = 64  # per producer: a peer cycling SSRCs must not grow our tables without bound


class RtpListener:
    __slots__ = ("ssrc_table", "mid_table", "_producers", "_learned")

    def __init__(self) -> None:
        self.ssrc_table: dict[int, tuple["Producer", int]] = {}
        self.mid_table: dict[str, "Producer"] = {}
        self._producers: list["Producer"] = []
        self._learned: dict[str, int] = {}

    def add_producer(self, producer: "Producer") -> None:
        for index, stream in enumerate(producer.stream_params):
            if stream.ssrc:
                self._claim(stream.ssrc, producer, index)
            if stream.rtx_ssrc:
                self._claim(stream.rtx_ssrc, producer, ~index)
        mid = producer.rtp_parameters.get("mid")
        if mid:
            if mid in self.mid_table and self.mid_table[mid] is not producer:
                from ..errors import InvalidRequestError

                raise InvalidRequestError(f"mid {mid!r} already used by another producer on this transport")
            self.mid_table[mid] = producer
        self._producers.append(producer)

    def _claim(self, ssrc: int, producer: "Producer", key: int) -> None:
        current = self.ssrc_table.get(ssrc)
        if current is not None and current[0] is not producer:
            from ..errors import InvalidRequestError

            raise InvalidRequestError(f"ssrc {ssrc} already used by another producer on this transport")
        self.ssrc_table[ssrc] = (producer, key)

    def remove_producer(self, producer: "Producer") -> None:
        for ssrc in [s for s, (p, _) in self.ssrc_table.items() if p is producer]:
            del self.ssrc_table[ssrc]
        for mid in [m for m, p in self.mid_table.items() if p is producer]:
            del self.mid_table[mid]
        if producer in self._producers:
            self._producers.remove(producer)
        self._learned.pop(producer.id, None)

    def lookup(self, data: bytes) -> tuple["Producer", int] | None:
        if len(data) < 12:
            return None
        entry = self.ssrc_table.get(int.from_bytes(data[8:12], "big"))
        if entry is not None:
            return entry
        return self._learn(data)

    def _learn(self, data: bytes) -> tuple["Producer", int] | None:
        parsed = parse_rtp(data)
        if parsed is None or not self._producers:
            return None
        ssrc = parsed[4]
        ext_offset, ext_length, ext_profile = parsed[6], parsed[7], parsed[8]
        if not ext_profile:
            return None
        for producer in self._producers:
            ids = producer.listener_ext_ids  # (mid id, rid id, rrid id) in the client's numbering
            mid = rid = rrid = None
            for ext_id, off, length in iter_extensions(data, ext_offset, ext_length, ext_profile):
                if ext_id == ids[0]:
                    mid = bytes(data[off : off + length]).decode("ascii", "replace")
                elif ext_id == ids[1]:
                    rid = bytes(data[off : off + length]).decode("ascii", "replace")
                elif ext_id == ids[2]:
                    rrid = bytes(data[off : off + length]).decode("ascii", "replace")
            if mid is not None and self.mid_table.get(mid) is not producer:
                continue
            key = producer.key_for_rid(rid, rrid)
            if key is None and mid is not None and len(producer.stream_params) == 1:
                key = 0  # one encoding announced by MID only (e.g. SSRC changed after a restart)
            if key is None:
                continue
            learned = self._learned.get(producer.id, 0)
            if learned >= MAX_LEARNED_SSRCS:
                return None
            self._learned[producer.id] = learned + 1
            self.ssrc_table[ssrc] = (producer, key)
            producer.stream_learned(key, ssrc)
            return producer, key
        return None

    def dump(self) -> dict[str, Any]:
        return {
            "ssrcTable": {str(s): p.id for s, (p, _) in self.ssrc_table.items()},
            "midTable": {m: p.id for m, p in self.mid_table.items()},
        }
