"""RoomForwarding: what each receiver of a room is forwarded (last-N video, speaker-selected audio,
receive constraints), decided by the room and applied to its media workers.

Decisions (docs/protocol.md "Large rooms"):

- **Video, per receiver**: the others' videos ranked by :func:`~.speakers.rank_videos` (screen
  sharers, the receiver's on-stage participants, speaker recency, join order); the first N
  participants are forwarded, N = the receiver's ``lastN`` capped by ``rooms.last_n`` (-1: no cap).
  On-stage participants and screen shares get the best layer; the other forwarded videos are capped
  at the receiver's ``maxHeight``.
- **Audio, per room**: when the room has more (unmuted) audio producers than ``rooms.max_audio_streams``,
  only the selected ones (:class:`~.speakers.AudioSelection`) are forwarded to anyone; producers
  that never reported an audio level cannot be judged and are always forwarded.

- **Speakers, per room**: the dominant speaker and the speaker order come from the levels of all
  the room's routers; each video consumer's ``speaker`` / ``speakerRecency`` tell its worker's
  bandwidth allocator (the per-router detector is not used for that).

Applying them: every consumer's ``forwardable`` / ``maxHeight`` / ``onStage`` / ``speaker`` /
``speakerRecency`` is cached in the participant's
consumer bookkeeping; :meth:`refresh` computes the wanted values, sends only the differences in one
``set_consumers_forwarding`` call per worker (a server-side pause: consumers stay created, no
signaling round trip) and a ``forwarding-changed`` notification to each receiver whose forwarded
set changed. The Room calls it under its lock after every operation that can change a decision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..protocol import messages as m
from .speakers import AudioSelection, SpeakerHistory, SpeakerTracker, rank_videos

if TYPE_CHECKING:
    from .participant import Participant
    from .room import Room

logger = logging.getLogger("studyrooms.forwarding")

UNSET: Any = object()
#: a consumer's worker inputs before the room sent any (the worker's defaults)
DEFAULTS = {"forwardable": True, "maxHeight": None, "onStage": False, "speaker": False, "speakerRecency": 0}


@dataclass
class ReceiveConstraints:
    last_n: int | None = None  # None: the server's rooms.last_n
    on_stage: list[str] = field(default_factory=list)
    max_height: int | None = None
    sent: tuple | None = None  # (video, onStage) last notified


class RoomForwarding:
    def __init__(self, room: "Room") -> None:
        self.room = room
        rooms = room.settings.rooms
        self.tracker = SpeakerTracker()
        self.audio = AudioSelection(rooms.max_audio_streams, hangover_s=rooms.audio_hangover_s)
        self.history = SpeakerHistory(rooms.speaker_dwell_s)
        self.constraints: dict[str, ReceiveConstraints] = {}
        self.selected_audio: frozenset = frozenset()
        self.dominant: str | None = None  # participant id
        self.levels_changed = False
        #: the speaker order the workers' bandwidth allocators rank by: participant -> a counter
        #: value, higher = took the floor more recently (only the mover's consumers change)
        self.recency: dict[str, int] = {}
        self._recency_clock = 0

    # --- inputs ---------------------------------------------------------------------------------

    def set_constraints(self, participant_id: str, *, last_n: Any = UNSET, on_stage: Any = UNSET,
                        max_height: Any = UNSET) -> None:
        c = self.constraints.setdefault(participant_id, ReceiveConstraints())
        if last_n is not UNSET:
            c.last_n = last_n
        if on_stage is not UNSET:
            c.on_stage = list(dict.fromkeys(on_stage or ()))
        if max_height is not UNSET:
            c.max_height = max_height

    def forget_participant(self, participant_id: str) -> None:
        self.constraints.pop(participant_id, None)
        self.history.remove(participant_id)
        self.recency.pop(participant_id, None)
        if self.dominant == participant_id:
            self.dominant = None

    def forget_producer(self, producer_id: str) -> None:
        self.tracker.remove(producer_id)
        self.audio.remove(producer_id)

    def on_levels(self, levels: Any, now: float) -> str | None | object:
        """One router's ``audio-levels`` report; returns the new dominant participant (None: nobody)
        when it changed, else UNSET."""
        if not isinstance(levels, dict):
            return UNSET
        owners = self.room._producer_owner
        known = len(self.tracker.reported)
        for producer_id, level in list(levels.items())[:1000]:
            if producer_id in owners:
                self.tracker.add(producer_id, level, now)
        producer, _volume = self.tracker.dominant(now)
        selected = self.audio.update(self.tracker.volumes(now), now)
        dominant = owners.get(producer) if producer is not None else None
        moved = self.history.update(dominant, now)
        if moved:
            self._recency_clock += 1
            self.recency[self.history.order[0]] = self._recency_clock
        #: whether this report changed an input of the decisions (else refresh() has nothing to do)
        self.levels_changed = (moved or selected != self.selected_audio or len(self.tracker.reported) != known
                               or dominant != self.dominant)
        self.selected_audio = selected
        if dominant != self.dominant:
            self.dominant = dominant
            return dominant
        return UNSET

    # --- decisions ------------------------------------------------------------------------------

    def last_n(self, participant_id: str) -> int:
        """The receiver's effective N (-1: unlimited)."""
        cap = self.room.settings.rooms.last_n
        asked = self.constraints.get(participant_id, ReceiveConstraints()).last_n
        if asked is None:
            return cap
        return asked if cap < 0 else min(asked, cap)

    def _video_owners(self) -> tuple[list[str], list[str]]:
        """(participants with a video producer in join order, screen sharers)."""
        with_video, screen = [], []
        for p in self.room.participants.values():
            kinds = [v for v in p.producers.values() if v["kind"] == "video"]
            if kinds:
                with_video.append(p.id)
            if any(v["source"] == "screen" for v in kinds):
                screen.append(p.id)
        return with_video, screen

    def video_plan(self, receiver: "Participant", owners: tuple[list[str], list[str]] | None = None
                   ) -> tuple[list[str], list[str]]:
        """(forwarded participants best first, the receiver's on-stage participants present)."""
        with_video, screen = owners or self._video_owners()
        c = self.constraints.get(receiver.id, ReceiveConstraints())
        stage = [s for s in c.on_stage if s in self.room.participants and s != receiver.id]
        ranked = rank_videos(receiver.id, with_video, screen=screen, on_stage=stage, history=self.history.order)
        n = self.last_n(receiver.id)
        return (ranked if n < 0 else ranked[:n]), stage

    def _audio_limited(self) -> bool:
        """Whether the room has more audio producers than it forwards at once."""
        limit = self.room.settings.rooms.max_audio_streams
        if limit < 0:
            return False
        audio = sum(1 for p in self.room.participants.values() for v in p.producers.values()
                    if v["kind"] == "audio" and not v.get("paused"))  # muted mics send nothing
        return audio > limit

    def audio_forwarded(self, producer_id: str, limited: bool | None = None) -> bool:
        if limited is None:
            limited = self._audio_limited()
        return not limited or producer_id not in self.tracker.reported or producer_id in self.selected_audio

    def wanted(self, receiver: "Participant", consumer: dict, plan: tuple[list[str], list[str]],
               screen: list[str], audio_limited: bool) -> dict[str, Any]:
        """The worker inputs of one of the receiver's consumers: forwardable, maxHeight, onStage,
        and for video the room's speaker decision (speaker, speakerRecency) the allocator ranks by."""
        producer_id = consumer["producerId"]
        if consumer.get("kind") == "audio":
            return {"forwardable": self.audio_forwarded(producer_id, audio_limited), "maxHeight": None,
                    "onStage": False}
        owner = self.room._producer_owner.get(producer_id)
        video, stage = plan
        speaker = {"speaker": owner is not None and owner == self.dominant,
                   "speakerRecency": self.recency.get(owner, 0)}
        if owner not in video:
            return {"forwardable": False, "maxHeight": None, "onStage": False, **speaker}
        c = self.constraints.get(receiver.id)
        best = owner in stage or owner in screen or c is None
        return {"forwardable": True, "maxHeight": None if best else c.max_height, "onStage": owner in stage,
                **speaker}

    # --- applying -------------------------------------------------------------------------------

    async def refresh(self) -> None:
        room = self.room
        if room.closed:
            return
        owners = self._video_owners()
        audio_limited = self._audio_limited()
        per_worker: dict[str | None, dict[str, dict]] = {}
        notes: list[tuple["Participant", dict]] = []
        for p in list(room.participants.values()):
            plan = self.video_plan(p, owners)
            lookup = (set(plan[0]), plan[1])
            for cid, c in p.consumers.items():
                # onStage / speaker / speakerRecency: the worker's bandwidth allocator ranks by them
                want = self.wanted(p, c, lookup, owners[1], audio_limited)
                change = {k: v for k, v in want.items() if c.get(k, DEFAULTS[k]) != v}
                if change:
                    c.update(change)
                    per_worker.setdefault(room._object_worker.get(cid), {})[cid] = change
            state = (tuple(plan[0]), tuple(plan[1]))
            c = self.constraints.setdefault(p.id, ReceiveConstraints())
            if c.sent != state and (c.sent is not None or any(state)):
                c.sent = state
                notes.append((p, m.ForwardingChanged(video=list(plan[0]), on_stage=list(plan[1])).wire()))
        for worker_id, consumers in per_worker.items():
            await room._worker_call("set_consumers_forwarding", {"consumers": consumers}, quiet=True,
                                    worker_id=worker_id)
        for p, data in notes:
            await room._notify([p], "forwarding-changed", data)

    def consume_options(self, receiver: "Participant", producer_id: str, kind: str) -> dict:
        """``forwardable`` / ``maxHeight`` for a consumer about to be created (so it starts right)."""
        owners = self._video_owners()
        return self.wanted(receiver, {"producerId": producer_id, "kind": kind}, self.video_plan(receiver, owners),
                           owners[1], self._audio_limited())
