"""BandwidthAllocator: what one receiver gets (one per recv WebRtcTransport; ARCHITECTURE habit 14).

Replaces per-consumer REMB shares. Every ``INTERVAL_S`` (and at once on events: a consumer added,
resumed, closed, re-prioritised, a large estimate change) it splits the transport's estimate
(``TransportBwe.available_bitrate_bps``) over the transport's video consumers:

1. **Budget** = estimate - what the audio consumers receive. Audio is never dropped for video.
2. **Order** (most important first), per consumer: explicit ``priority`` (1..255, higher first;
   ``set-consumer-priority``), then group — screen share, on stage, active speaker, the rest — then
   speaker recency (who spoke last first), then age.
3. **Ladder** per consumer: (spatial, temporal) rungs by bitrate. Camera: the lowest encoding at
   each temporal layer, then each higher encoding at full frame rate; screen share: every encoding
   at every temporal layer. Temporal layers come from the producer's ``scalabilityMode``
   (VP8 TID dropping); rung bitrates are measured per spatial x temporal layer (the producer
   meters every ingress packet by its VP8 TID: ``Producer.temporal_bitrates``); until measured,
   the encoding's rate times libwebrtc's temporal split (1 layer 100 %; 2: 60/100 %; 3:
   40/60/100 %). Caps: ``set-preferred-layers``
   (upper bound, as in mediasoup), ``max_height`` (encodings whose keyframes show a larger height
   are left out), ``forwardable`` False (not forwarded at all).
4. **Fit** (:meth:`BandwidthAllocator._fit`): leads (screen share, on stage, explicit priority
   above 1), in order, go as high as fits up to their preferred rung (``LEAD_PREFERRED_HEIGHT``);
   then everyone else gets their lowest rung while they fit; from the first that does not,
   everyone after it is paused (the lowest priorities go first); then, in order, each goes as high
   as the rest of the budget allows. The first video always flows at its lowest rung.
5. **Damping**: a decrease applies at once; an increase goes one rung at a time, at most every
   ``UPGRADE_INTERVAL_S`` per consumer and not within ``UPGRADE_HOLD_S`` of its last decrease. When
   the ideal allocation is above the estimate a probe is requested (``TransportBwe.request_probe``)
   so the estimate can rise before a layer goes up ("upgrade after a successful probe").
   Keyframe requests on a switch go through the producer's throttle.

With only REMB (receivers without transport-cc) or no estimate yet, no consumer is paused for
bandwidth: the lowest rung is always kept.

Interface for receive constraints (last-N, on-stage, max height; issue 11): per consumer the
allocator reads :class:`AllocationInput` (``allocator.inputs(consumer_id)``): ``on_stage`` (group
"on stage"), ``max_height`` (int or None), ``forwardable`` (False = outside last-N: paused with
reason "not-forwardable"), ``speaker`` (group "active speaker") and ``speaker_recency`` (the room's
speaker order). The room decides speakers room-wide (over all its routers, rooms/forwarding.py) and
sends all of these with ``consume`` / ``set_consumers_forwarding``; ``Consumer.set_forwarding`` sets
them and calls :meth:`schedule` — nothing else is needed.
Decisions per consumer are in ``allocator.decisions`` (``{consumerId: {spatialLayer, temporalLayer,
paused, reason, bitrate}}``) and in the consumer's ``dump()``/``get_stats()``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .consumer import Consumer
    from .webrtc_transport import WebRtcTransport

logger = logging.getLogger("studyrooms.allocator")

INTERVAL_S = 0.5
UPGRADE_INTERVAL_S = 1.0
UPGRADE_HOLD_S = 3.0
PROBE_HEADROOM = 1.15
ACTIVE_WINDOW_S = 2.0
TEMPORAL_SPLIT = {1: (1.0,), 2: (0.6, 1.0), 3: (0.4, 0.6, 1.0), 4: (0.25, 0.4, 0.6, 1.0)}
DEFAULT_LAYER_BPS = (150_000, 500_000, 1_200_000)
GROUPS = ("screen", "on-stage", "speaker", "other")
LEAD_GROUPS = ("screen", "on-stage")
LEAD_PREFERRED_HEIGHT = 360


@dataclass
class AllocationInput:
    """Receive constraints of one consumer (issue 11 sets these)."""

    on_stage: bool = False
    max_height: int | None = None
    forwardable: bool = True
    speaker: bool = False  # the producer's participant is the room's active speaker
    speaker_recency: int = 0  # the room's speaker order: higher = held the floor more recently, 0 never


class _State:
    __slots__ = ("rung", "last_up", "last_down", "reason", "added")

    def __init__(self, added: float) -> None:
        self.rung = -2  # -2: never allocated; -1: paused for bandwidth; else ladder index
        self.last_up = -1e9
        self.last_down = -1e9
        self.reason = "new"
        self.added = added


class BandwidthAllocator:
    def __init__(self, transport: "WebRtcTransport") -> None:
        self.transport = transport
        self.clock = transport.clock
        self._inputs: dict[str, AllocationInput] = {}
        self._states: dict[str, _State] = {}
        self._timer: Any = None
        self._soon: Any = None
        self.decisions: dict[str, dict[str, Any]] = {}
        self.runs = 0
        self.budget_bps = 0
        self.desired_bps = 0
        self.allocated_bps = 0
        self.closed = False

    # ------------------------------------------------------------------ inputs
    def inputs(self, consumer_id: str) -> AllocationInput:
        inp = self._inputs.get(consumer_id)
        if inp is None:
            inp = self._inputs[consumer_id] = AllocationInput()
        return inp

    def remove(self, consumer_id: str) -> None:
        self._inputs.pop(consumer_id, None)
        self._states.pop(consumer_id, None)
        self.decisions.pop(consumer_id, None)
        self.schedule(0.0)

    # ------------------------------------------------------------------ scheduling
    def start(self) -> None:
        if self._timer is None and not self.closed:
            self._timer = self.clock.call_later(INTERVAL_S, self._on_timer)

    def schedule(self, delay_s: float = 0.0) -> None:
        """Run soon (coalesced): events call this instead of allocating inline."""
        if self._soon is None and not self.closed:
            self._soon = self.clock.call_later(delay_s, self._on_soon)

    def _on_soon(self) -> None:
        self._soon = None
        self._run_safe()

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed or self.transport.closed:
            return
        self._run_safe()
        self._timer = self.clock.call_later(INTERVAL_S, self._on_timer)

    def _run_safe(self) -> None:
        try:
            self.run()
        except Exception:  # noqa: BLE001 - a bad allocation must never stop the timer
            logger.exception("transport %s: allocation failed", self.transport.id)

    def close(self) -> None:
        self.closed = True
        for t in (self._timer, self._soon):
            if t is not None:
                t.cancel()
        self._timer = self._soon = None

    # ------------------------------------------------------------------ the allocation
    def run(self) -> None:
        transport = self.transport
        if transport.closed:
            return
        self.runs += 1
        now = self.clock.now()
        bwe = transport.bwe
        estimate = bwe.available_bitrate_bps()
        may_pause = bwe.source == "transport-cc"
        audio = 0
        videos: list["Consumer"] = []
        for c in transport.consumers.values():
            if c.kind == "audio":
                if not c.paused and not c.producer_paused:
                    audio += c.send_stream.bitrate_bps(now)
            elif getattr(c, "send_stream", None) is not None:
                videos.append(c)
        budget = max(0, estimate - audio)
        self.budget_bps = budget
        entries = []
        for c in videos:
            state = self._states.get(c.id)
            if state is None:
                state = self._states[c.id] = _State(now)
            inp = self.inputs(c.id)
            entries.append((c, state, inp, self._group(c, inp), inp.speaker_recency))
        entries.sort(key=lambda e: (-e[0].priority, GROUPS.index(e[3]), -e[4], e[1].added))

        # ladders; consumers that want nothing (paused by the client, producer paused, not forwardable)
        plans = []
        for c, state, inp, group, _ in entries:
            if c.paused or c.producer_paused or not transport.media_ready:
                self._record(c, state, None, "paused-by-client" if c.paused else "producer-paused", group)
                continue
            if not inp.forwardable:
                self._apply(c, state, -1, [], now, "not-forwardable", group)
                continue
            ladder, cap_reason = self._ladder(c, inp, now)
            if not ladder:
                self._record(c, state, None, "no-active-layer", group)
                continue
            lead = group in LEAD_GROUPS or c.priority > 1
            plans.append([c, state, ladder, -1, cap_reason, group, lead,
                          self._lead_preferred(c, ladder) if lead else 0])

        self._fit(plans, budget, may_pause)

        desired = sum(p[2][-1][2] for p in plans) + audio
        self.desired_bps = desired
        allocated = 0
        want_more = False
        for c, state, ladder, target, cap_reason, group, _, _ in plans:
            if target < 0:
                reason = "paused-bandwidth"
            elif target < len(ladder) - 1:
                reason = "bandwidth"
            else:
                reason = cap_reason
            applied = self._apply(c, state, target, ladder, now, reason, group)
            if applied >= 0:
                allocated += ladder[applied][2]
            if applied < len(ladder) - 1:
                want_more = True
        self.allocated_bps = allocated
        if want_more and desired > estimate * 0.95:
            bwe.request_probe(int(desired * PROBE_HEADROOM))
        elif plans and not bwe.initial_probe_done and bwe.has_feedback:
            # GoogCC-style initial probe: find the link's room before audio and layer rates grow
            # into the start estimate (a new receiver would otherwise drop a layer it just got)
            bwe.request_probe(int(max(desired * PROBE_HEADROOM, 3 * estimate)))

    def _fit(self, plans: list[list[Any]], budget: int, may_pause: bool) -> None:
        """Choose a target rung (plan[3]; -1 = paused) per plan; plans are in priority order.

        1. Leads (screen share, on stage, explicit priority above the default), in order, go as
           high as fits up to their preferred rung (``LEAD_PREFERRED_HEIGHT``) but not above their
           lowest spatial layer at full frame rate.
        2. Everyone else, in order, gets the lowest rung while it fits; from the first that does
           not, everyone after it is paused.
        3. Leads, in order, go on up to their preferred rung as far as what is left allows.
        4. In order, each goes as high as what is left allows.
        (Step 1 stops at the lowest spatial layer so that a lead's higher resolution never pauses
        another camera's lowest layer: with the whole preferred rung first, an estimate between
        ~400 and ~500 kbit/s kept the thumbnails paused for 17 s at the start of a call, issue 10.)
        The first plan always flows (its lowest rung even over budget): what is sent is what the
        estimate can grow from. Without a transport-cc estimate nobody is paused."""
        left = budget
        if not may_pause:
            for plan in plans:
                plan[3] = 0
                left -= plan[2][0][2]
        for index, plan in enumerate(plans):
            if not plan[6]:
                break
            ladder = plan[2]
            if plan[3] < 0:
                if ladder[0][2] > left and index > 0:
                    continue
                plan[3] = 0
                left -= ladder[0][2]
            left = self._raise(plan, min(plan[7], self._lowest_spatial_top(ladder)), left)
        exhausted = False  # once one does not fit, everyone after it is paused too
        for index, plan in enumerate(plans):
            if plan[6] or plan[3] >= 0:
                exhausted = exhausted or plan[3] < 0  # a lead that did not fit
                continue
            cost = plan[2][0][2]
            if not exhausted and cost <= left or index == 0:
                plan[3] = 0
                left -= cost
            else:
                exhausted = True
        for plan in plans:
            if not plan[6]:
                break
            if plan[3] >= 0:
                left = self._raise(plan, plan[7], left)
        for plan in plans:
            if plan[3] < 0:
                continue
            ladder = plan[2]
            spent = ladder[plan[3]][2]
            best = plan[3]
            for i in range(plan[3] + 1, len(ladder)):
                if ladder[i][2] - spent <= left:
                    best = i
            left -= ladder[best][2] - spent
            plan[3] = best

    @staticmethod
    def _raise(plan: list[Any], upto: int, left: int) -> int:
        """Move ``plan`` up to the best rung <= ``upto`` that what is ``left`` pays for; the rest."""
        ladder = plan[2]
        spent = ladder[plan[3]][2]
        best = plan[3]
        for i in range(plan[3] + 1, upto + 1):
            if ladder[i][2] - spent <= left:
                best = i
        plan[3] = best
        return left - (ladder[best][2] - spent)

    @staticmethod
    def _lowest_spatial_top(ladder: list[tuple[int, int, int]]) -> int:
        """Index of the last rung on the ladder's lowest spatial layer (its full frame rate)."""
        lowest = ladder[0][0]
        top = 0
        for i, (s, _, _) in enumerate(ladder):
            if s == lowest:
                top = i
        return top

    @staticmethod
    def _lead_preferred(c: "Consumer", ladder: list[tuple[int, int, int]]) -> int:
        """The rung a lead consumer is given before anyone else's lowest: the best rung whose
        encoding is at most LEAD_PREFERRED_HEIGHT high (by keyframes; the middle of three
        encodings when heights are unknown); a screen share's top rung."""
        if c.producer.source == "screen":
            return len(ladder) - 1
        heights = c.producer.layer_heights()
        top_spatial = max(s for s, _, _ in ladder)
        best = 0
        for i, (s, _, _) in enumerate(ladder):
            h = heights[s] if s < len(heights) else None
            if (h and h <= LEAD_PREFERRED_HEIGHT) or (not h and s <= max(0, min(1, top_spatial))) or i == 0:
                best = i
        return best

    @staticmethod
    def _group(c: "Consumer", inp: AllocationInput) -> str:
        if c.producer.source == "screen":
            return "screen"
        if inp.on_stage:
            return "on-stage"
        if inp.speaker:
            return "speaker"
        return "other"

    def _ladder(self, c: "Consumer", inp: AllocationInput, now: float) -> tuple[list[tuple[int, int, int]], str]:
        """[(spatial, temporal, bps), ...] lowest first, and why the top rung is where it is."""
        producer = c.producer
        reason = "best-layer"
        if c.type == "simulcast":
            active = producer.active_stream_indexes(now, ACTIVE_WINDOW_S)
        else:
            active = [0] if producer.streams and producer.streams[0] is not None else []
        if not active:
            return [], reason
        spatial = [i for i in active if i <= c.preferred_spatial_layer]
        if len(spatial) < len(active):
            reason = "preferred-layers"
        if not spatial:
            spatial = [min(active)]
        if inp.max_height:
            heights = producer.layer_heights()
            fit = [i for i in spatial if not heights[i] or heights[i] <= inp.max_height]
            if len(fit) < len(spatial):
                reason = "max-height"
            spatial = fit or [spatial[0]]
        temporal = c.temporal_layer_count
        top_t = temporal - 1
        if c.preferred_temporal_layer >= 0 and c.preferred_temporal_layer < top_t:
            top_t = c.preferred_temporal_layer
            reason = "preferred-layers"
        split = TEMPORAL_SPLIT.get(temporal, (1.0,) * temporal)
        rates = {s: self._layer_rate(c, s, now) for s in spatial}
        if producer.source == "screen":
            rungs = [(s, t) for s in spatial for t in range(top_t + 1)]
        else:
            rungs = [(spatial[0], t) for t in range(top_t)] + [(s, top_t) for s in spatial]
        measured = {s: self._temporal_rates(c, s, temporal, now) for s in spatial}
        ladder = [(s, t, measured[s][t] if measured[s] else int(rates[s] * split[min(t, len(split) - 1)]))
                  for s, t in rungs]
        # keep the ladder increasing (a lower encoding may briefly measure above a higher one)
        out: list[tuple[int, int, int]] = []
        for s, t, bps in ladder:
            if out and bps <= out[-1][2]:
                bps = out[-1][2] + 1
            out.append((s, t, bps))
        return out, reason

    @staticmethod
    def _temporal_rates(c: "Consumer", index: int, layers: int, now: float) -> list[int] | None:
        """Measured bitrates of TIDs 0..t of an encoding (the producer reads every packet's VP8
        TID), or None (then libwebrtc's split of the encoding's rate is assumed)."""
        if layers < 2:
            return None
        measure = getattr(c.producer, "temporal_bitrates", None)
        rates = measure(index, now) if measure is not None else None
        return rates if rates is not None and len(rates) >= layers else None

    @staticmethod
    def _layer_rate(c: "Consumer", index: int, now: float) -> int:
        stream = c.producer.streams[index] if index < len(c.producer.streams) else None
        rate = stream.bitrate_bps(now) if stream is not None else 0
        if rate > 0:
            return rate
        enc = (c.producer.rtp_parameters.get("encodings") or [{}])
        if index < len(enc) and enc[index].get("maxBitrate"):
            return int(enc[index]["maxBitrate"])
        return DEFAULT_LAYER_BPS[min(index, len(DEFAULT_LAYER_BPS) - 1)]

    def _apply(self, c: "Consumer", state: _State, target: int, ladder: list, now: float, reason: str,
               group: str) -> int:
        """Damped move from the current rung toward ``target``; returns the rung applied."""
        current = state.rung
        if current >= len(ladder):  # the ladder shrank (an encoding stopped)
            current = len(ladder) - 1
        if current == -2 or target <= current:
            new = target
            if current >= 0 and target < current:
                state.last_down = now
        elif now - state.last_down < UPGRADE_HOLD_S or now - state.last_up < UPGRADE_INTERVAL_S:
            new = current
            reason = "upgrade-hold"
        else:
            new = current + 1
            state.last_up = now
            if new < target:
                reason = "stepping-up"
        state.rung = new
        state.reason = reason
        if new < 0:
            c.apply_allocation(-1, -1, reason)
        else:
            s, t, _ = ladder[new]
            c.apply_allocation(s, t, reason)
        self._record(c, state, ladder[new] if new >= 0 else None, reason, group)
        return new

    def _record(self, c: "Consumer", state: _State, rung, reason: str, group: str) -> None:
        self.decisions[c.id] = {
            "spatialLayer": rung[0] if rung else None,
            "temporalLayer": rung[1] if rung else None,
            "bitrate": rung[2] if rung else 0,
            "paused": rung is None,
            "reason": reason,
            "group": group,
            "priority": c.priority,
        }

    def dump(self) -> dict[str, Any]:
        return {
            "budgetBitrate": self.budget_bps,
            "desiredBitrate": self.desired_bps,
            "allocatedBitrate": self.allocated_bps,
            "runs": self.runs,
            "consumers": dict(self.decisions),
        }

