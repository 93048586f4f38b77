"""Room: one study room's control point (plain object, hosted by a RoomService).

Every operation of the room runs under the room's lock, so operations (and worker events) are
serialised per room. The lock is never held while clients are notified: notifications decided under
it are sent right after it is released (:class:`~studyrooms.rooms.outbox.OutboxLock`), so a client
that stopped answering cannot stall the room. Media objects live in the room's router on a media worker, reached only through
:class:`~studyrooms.rooms.ports.WorkerPort`; the room keeps the bookkeeping (who owns what) and
sends the notifications of protocol.md through :class:`~studyrooms.rooms.ports.NotifierPort`.

Audio-only policy (``RoomSettings.audio_only_threshold``, default 40): once the occupancy exceeds
the threshold, the join ack says ``recommendAudioOnly: true``; the join that crosses the threshold
sends ``recommend-audio-only`` to everyone in the room, later joins send it to the joiner, and a
participant who starts a *video* producer while the room is over the threshold gets it too.

A room that outgrows one media worker spreads over several (mediasoup's pipeToRouter): a joiner
whose room's workers all carry ``rooms.max_consumers_per_worker`` consumers or more gets a router
on another worker; producers are piped (PipeTransports between the two routers, docs/worker-api.md)
to where their consumers are, once per producer and worker, and the pipe follows its origin's
pause, resume and close. A pipe between workers on different nodes carries SRTP (both ends get
``enableSrtp`` and each other's key, AEAD_AES_256_GCM); plain RTP only inside one node
(``media.pipe_srtp``).

Worker events must be delivered to :meth:`on_worker_event` asynchronously (never awaited from inside
a ``WorkerPort.request`` call), since they wait for the room's lock.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any, Callable, Iterable

from ..clock import Clock, TimerHandle
from ..config import Settings
from ..errors import (
    ForbiddenError,
    InternalError,
    InvalidRequestError,
    InvalidStateError,
    NotFoundError,
    RateLimitedError,
    ResourceExhaustedError,
    RoomFullError,
)
from ..ids import new_id
from ..protocol import messages as m
from ..protocol import requests as rq
from .forwarding import UNSET as UNSET_DOMINANT
from .forwarding import RoomForwarding
from .op_batch import OpBatch
from .outbox import Notification, OutboxLock, send_in_order
from .participant import Participant
from .ports import DirectoryPort, NotifierPort, WorkerPort
from .recovery import RoomRecovery

logger = logging.getLogger("studyrooms.room")

#: A producer (or a send transport) is reported over budget when its bitrate exceeds the transport's
#: ``max_incoming_bitrate_bps`` by more than this factor (bursts, keyframes, RTCP overhead).
BUDGET_TOLERANCE = 1.1
#: Workers tried for a new router when the chosen one fails (it may have died since placement).
PLACEMENT_ATTEMPTS = 3


class Room(RoomRecovery):
    def __init__(
        self,
        room_id: str,
        settings: Settings,
        directory: DirectoryPort,
        notifier: NotifierPort,
        clock: Clock,
        *,
        id_factory: Callable[[], str] = new_id,
        on_empty: Callable[["Room"], None] | None = None,
    ) -> None:
        self.id = room_id
        self.settings = settings
        self.directory = directory
        self.notifier = notifier
        self.clock = clock
        self.closed = False
        self.created_at = clock.now()
        self.participants: dict[str, Participant] = {}
        self.worker_id: str | None = None
        self.router_id: str | None = None
        self.rtp_capabilities: dict | None = None
        self.pending_joins = 0  # joins on their way in (the service counts them; they keep the room)
        self._worker: WorkerPort | None = None
        #: worker id -> {"routerId", "port"}: the home router (first) and any the room spread to
        self.routers: dict[str, dict] = {}
        self._object_worker: dict[str, str] = {}  # transport/producer/consumer id -> worker id
        self._piped: dict[tuple[str, str], str] = {}  # (producer id, target worker) -> pipe consumer id
        self._pipe_consumers: dict[str, tuple[str, str]] = {}  # pipe consumer id -> (producer, target)
        self._pipe_links: dict[tuple[str, str], tuple[str, str]] = {}  # (from, to) -> pipe transport ids
        self._pipe_info: dict[tuple[str, str], dict] = {}  # (from, to) -> both ends' parameters (dump)
        self._lock = OutboxLock(self._send_notifications)  # notifications wait for its release
        self._batch = OpBatch(self._lock)  # _BATCHED operations: many per hold of the lock
        self._pipe_lock = asyncio.Lock()  # batched consumes may need the same pipe at once
        self._ids = id_factory
        self._on_empty = on_empty
        self._empty_timer: TimerHandle | None = None
        # object id -> owning participant id
        self._transport_owner: dict[str, str] = {}
        self._producer_owner: dict[str, str] = {}
        self._consumer_owner: dict[str, str] = {}
        # transport id -> (time, bytes in, bytes out) at the previous get-stats (for bitrates)
        self._byte_marks: dict[str, tuple[float, int, int]] = {}
        self._over_budget: set[str] = set()  # producer ids already logged as over budget
        #: last-N video, speaker-selected audio and receive constraints (rooms/forwarding.py)
        self.forwarding = RoomForwarding(self)

    # --- queries --------------------------------------------------------------------------------

    @property
    def is_empty(self) -> bool:
        return not self.participants

    def participant_by_sid(self, sid: str, route: str | None = None) -> Participant | None:
        for p in self.participants.values():
            if p.sid == sid and (route is None or p.route == route):
                return p
        return None

    def stats(self) -> dict:
        ps = self.participants.values()
        workers = [{"workerId": w, "routerId": r["routerId"]} for w, r in self.routers.items()]
        return m.RoomStats(
            room_id=self.id,
            participant_count=len(self.participants),
            transport_count=sum(len(p.transports) for p in ps),
            producer_count=sum(len(p.producers) for p in ps),
            consumer_count=sum(len(p.consumers) for p in ps),
            workers=workers,
        ).wire()

    def dump(self) -> dict:
        return {
            "roomId": self.id,
            "closed": self.closed,
            "workerId": self.worker_id,
            "routerId": self.router_id,
            "participants": [p.dump() for p in self.participants.values()],
            "routers": {w: r["routerId"] for w, r in self.routers.items()},
            "pipes": [{"from": a, "to": b, **info} for (a, b), info in self._pipe_info.items()],
        }

    @property
    def over_threshold(self) -> bool:
        return len(self.participants) > self.settings.rooms.audio_only_threshold

    # --- join / leave ---------------------------------------------------------------------------

    async def join(self, sid: str, route: str, user_id: str, display_name: str) -> tuple[Participant, dict]:
        async with self._lock:
            if self.closed:
                raise InvalidStateError("room is closing, join again")
            if self.participant_by_sid(sid, route) is not None:
                raise InvalidStateError("this socket already joined the room")
            if len(self.participants) >= self.settings.rooms.capacity:
                raise RoomFullError(f"room {self.id} is full ({self.settings.rooms.capacity} participants)")
            if self.router_id is None:
                await self._open_router()
            worker_id = await self._worker_for_joiner()
            self._cancel_empty_timer()
            p = Participant(
                id=self._ids(),
                display_name=display_name,
                user_id=user_id,
                sid=sid,
                route=route,
                joined_at=self.clock.wall(),
                worker_id=worker_id,
            )
            others = list(self.participants.values())
            self.participants[p.id] = p
            ack = self._join_ack(p)
            await self._notify(others, "participant-joined", p.info())
            if self.over_threshold:
                threshold = self.settings.rooms.audio_only_threshold
                crossed = len(self.participants) == threshold + 1
                data = m.RecommendAudioOnly(participant_count=len(self.participants), threshold=threshold).wire()
                await self._notify([*others, p] if crossed else [p], "recommend-audio-only", data)
            logger.info("room %s: %s joined (%d)", self.id, p.id, len(self.participants))
            return p, ack

    def _join_ack(self, p: Participant) -> dict:
        others = [o for o in self.participants.values() if o is not p]
        return m.JoinRoomResponse(
            participant_id=p.id,
            room_id=self.id,
            participants=[m.ParticipantInfo(participant_id=o.id, display_name=o.display_name) for o in others],
            producers=[
                m.ProducerInfo(producer_id=pid, participant_id=o.id, kind=v["kind"], source=v["source"])
                for o in others
                for pid, v in o.producers.items()
            ],
            rtp_capabilities=self.rtp_capabilities or {},
            recommend_audio_only=self.over_threshold,
        ).wire()

    # --- session resume (docs/protocol.md "Session resume") -------------------------------------

    def resumable(self, key_hash: str, user_id: str) -> str | None:
        """The participant whose resume key hashes to ``key_hash`` and whose token identity is
        ``user_id`` (a key is bound to its identity and room), or None."""
        for p in self.participants.values():
            if p.resume_hash is not None and hmac.compare_digest(p.resume_hash, key_hash) and p.user_id == user_id:
                return p.id
        return None

    async def detach(self, participant_id: str, sid: str, route: str) -> bool:
        """The participant's socket ``route``/``sid`` went without leave-room: keep the participant
        and its media objects (they keep flowing), send it nothing until a socket is bound again.
        False when it is gone or already bound to another socket (a resume came first)."""
        async with self._lock:
            p = self.participants.get(participant_id)
            if p is None or (p.sid, p.route) != (sid, route):
                return False
            p.detached_at = self.clock.now()
            logger.info("room %s: %s detached (socket %s/%s gone), media kept", self.id, p.id, p.route, p.sid)
            return True

    async def resume(self, participant_id: str, sid: str, route: str) -> tuple[Participant, dict]:
        """Bind the participant to a new socket; its media objects are untouched. The ack is the
        join ack (the room as it is now); the last forwarding state and the active speaker are
        sent again (notifications of the detached time were not delivered)."""
        async with self._lock:
            p = self.participants.get(participant_id)
            if p is None or self.closed:
                raise NotFoundError("participant not in the room")
            gap = self.clock.now() - p.detached_at if p.detached_at is not None else 0.0
            p.sid, p.route, p.detached_at = sid, route, None
            ack = self._join_ack(p)
            constraints = self.forwarding.constraints.get(p.id)
            if constraints is not None:
                constraints.sent = None  # forwarding-changed again (refresh sends the current state)
            await self.forwarding.refresh()
            if p.missed_reset is not None:
                await self._notify([p], "media-reset", p.missed_reset)
                p.missed_reset = None
            if self.forwarding.dominant is not None:
                await self._notify([p], "active-speaker", m.ActiveSpeaker(participant_id=self.forwarding.dominant).wire())
            logger.info("room %s: %s resumed on %s/%s after %.1f s", self.id, p.id, route, sid, gap)
            return p, ack

    async def _open_router(self, exclude: Iterable[str] = ()) -> str:
        """A router for this room on the least-loaded worker (not one of ``exclude``); a worker that
        fails to answer (e.g. it just died) is skipped, up to ``PLACEMENT_ATTEMPTS`` tries."""
        exclude = set(exclude)
        for attempt in range(1, PLACEMENT_ATTEMPTS + 1):
            worker_id = await self.directory.place_router(self.id, tuple(exclude))
            worker = self.directory.worker(worker_id)
            try:
                reply = await worker.request("create_router", {})
                break
            except InternalError as exc:
                await self.directory.release_router(self.id, worker_id)
                if attempt == PLACEMENT_ATTEMPTS:
                    raise
                logger.warning("room %s: worker %s failed to create a router (%s); trying another",
                               self.id, worker_id, exc.message)
                exclude.add(worker_id)
            except BaseException:
                await self.directory.release_router(self.id, worker_id)
                raise
        self.routers[worker_id] = {"routerId": reply["routerId"], "port": worker}
        if self.router_id is None:  # the home router
            self.worker_id, self._worker = worker_id, worker
            self.router_id = reply["routerId"]
            self.rtp_capabilities = reply.get("rtpCapabilities") or {}
        else:
            logger.info("room %s: spread to worker %s (router %s)", self.id, worker_id, reply["routerId"])
        return worker_id

    async def _worker_for_joiner(self) -> str:
        """The room's router with the least-loaded worker; a new router on another worker when all of
        the room's workers carry ``max_consumers_per_worker`` consumers or more.

        Admission control: a worker whose event loop is measured busier than
        ``rooms.worker_cpu_limit`` (``loopCpu`` of its stats) takes nobody more; when neither the
        room's workers nor any other can take the joiner, the join is refused with
        ``resource-exhausted`` rather than degrading the call for everyone in it."""
        if len(self.routers) == 1 and not self.participants:
            return next(iter(self.routers))
        limit = self.settings.rooms.max_consumers_per_worker
        cpu_limit = self.settings.rooms.worker_cpu_limit
        loads: dict[str, int] = {}
        cpus: dict[str, float] = {}
        for worker_id, router in self.routers.items():
            try:
                stats = await router["port"].request("get_stats", {})
            except Exception as exc:  # noqa: BLE001 - an unreachable worker is not a candidate
                logger.warning("room %s: load of worker %s unknown: %r", self.id, worker_id, exc)
                continue
            loads[worker_id] = int(stats.get("consumerCount", 0))
            cpus[worker_id] = float(stats.get("loopCpu") or 0.0)
        if not loads:
            raise InvalidStateError("the room's media workers are unavailable")
        open_ = [w for w in loads if cpus[w] < cpu_limit]
        best = min(open_, key=lambda w: loads[w]) if open_ else None
        if best is not None and loads[best] < limit:
            return best
        try:
            return await self._open_router(exclude=self.routers)
        except ResourceExhaustedError:
            if best is not None:
                return best  # no other worker: stay (over the soft consumer limit) rather than refuse
            busiest = max(cpus.values())
            logger.warning("room %s: join refused, media workers at capacity (loop CPU %.0f%%, limit %.0f%%)",
                           self.id, 100 * busiest, 100 * cpu_limit)
            raise ResourceExhaustedError(
                f"the media server is at capacity (its load {busiest:.0%} is over the {cpu_limit:.0%} limit): "
                "joining now would degrade the call for everyone in it; try again later"
            ) from None

    async def leave(self, participant_id: str) -> None:
        async with self._lock:
            p = self.participants.get(participant_id)
            if p is None:
                return
            for tid in list(p.transports):
                await self._worker_call("close_transport", {"transportId": tid}, quiet=True,
                                        worker_id=self._object_worker.get(tid))
            for cid in list(p.consumers):
                self._forget_consumer(p, cid)
            for prod_id in list(p.producers):
                await self._producer_gone(p, prod_id, tell_owner=False)
            for tid in list(p.transports):
                self._transport_owner.pop(tid, None)
                self._object_worker.pop(tid, None)
                self._byte_marks.pop(tid, None)
            p.transports.clear()
            p.connected.clear()
            del self.participants[p.id]
            self.forwarding.forget_participant(p.id)
            await self.forwarding.refresh()
            await self._notify(self.participants.values(), "participant-left", p.info())
            logger.info("room %s: %s left (%d)", self.id, p.id, len(self.participants))
            self.schedule_empty_close()

    # --- empty room -----------------------------------------------------------------------------

    def schedule_empty_close(self) -> None:
        """If nobody is in the room, close it after ``empty_room_timeout_s`` (a join cancels)."""
        if self.closed or self.participants or self._empty_timer is not None:
            return
        self._empty_timer = self.clock.call_later(self.settings.rooms.empty_room_timeout_s, self._empty_timeout)

    def _cancel_empty_timer(self) -> None:
        if self._empty_timer is not None:
            self._empty_timer.cancel()
            self._empty_timer = None

    def _empty_timeout(self) -> None:
        self._empty_timer = None
        if self.closed or self.participants or self.pending_joins:
            return
        if self._on_empty is not None:
            self._on_empty(self)  # the host forgets the room now and calls close()

    async def close(self) -> None:
        """Close the room: its router (and so every media object) and the router's placement."""
        async with self._lock:
            if self.closed:
                return
            self.closed = True
            self._cancel_empty_timer()
            self.participants.clear()
            self._transport_owner.clear()
            self._producer_owner.clear()
            self._consumer_owner.clear()
            self._byte_marks.clear()
            for worker_id, router in list(self.routers.items()):
                await self._worker_call("close_router", {"routerId": router["routerId"]}, quiet=True,
                                        worker_id=worker_id)
                try:
                    await self.directory.release_router(self.id, worker_id)
                except Exception:  # noqa: BLE001 - closing must finish
                    logger.exception("room %s: release_router failed", self.id)
            self.routers.clear()
            self._object_worker.clear()
            self._piped.clear()
            self._pipe_consumers.clear()
            self._pipe_links.clear()
            self._pipe_info.clear()
            logger.info("room %s closed", self.id)

    # --- requests of a joined participant -------------------------------------------------------

    async def handle(self, participant_id: str, method: str, req: Any) -> dict:
        """Run one protocol request (already validated into its protocol model) for a participant."""
        op = self._OPS.get(method)
        if op is None:
            raise InvalidRequestError(f"{method} is not a room operation")
        if method in self._BATCHED:  # independent of other participants' requests (rooms/op_batch.py)
            return await self._batch.run(participant_id, lambda: self._run_op(participant_id, op, method, req))
        async with self._lock:
            return await self._run_op(participant_id, op, method, req)

    async def _run_op(self, participant_id: str, op: Callable[..., Any], method: str, req: Any) -> dict:
        """Under the room's lock."""
        p = self.participants.get(participant_id)
        if p is None or self.closed:
            raise InvalidStateError("not in this room")
        result = await op(self, p, req)
        if method in self._REFRESH_AFTER:
            await self.forwarding.refresh()
        return result

    async def _get_rtp_capabilities(self, p: Participant, req: rq.GetRtpCapabilitiesRequest) -> dict:
        return dict(self.rtp_capabilities or {})

    async def _create_transport(self, p: Participant, req: rq.CreateTransportRequest) -> dict:
        limits = self.settings.limits
        limit = limits.max_send_transports if req.direction == "send" else limits.max_recv_transports
        if p.transport_count(req.direction) >= limit:
            raise RateLimitedError(f"at most {limit} {req.direction} transports per participant")
        data: dict = {
            "routerId": self.routers[p.worker_id]["routerId"] if p.worker_id in self.routers else self.router_id,
            "direction": req.direction,
            "appData": {"roomId": self.id, "participantId": p.id},
        }
        if self.settings.media.max_incoming_bitrate_bps and req.direction == "send":
            data["maxIncomingBitrate"] = self.settings.media.max_incoming_bitrate_bps
        reply = await self._worker_call("create_webrtc_transport", data, worker_id=p.worker_id)
        reply = {**reply, "direction": req.direction}
        self._object_worker[reply["id"]] = p.worker_id or self.worker_id
        p.transports[reply["id"]] = req.direction
        self._transport_owner[reply["id"]] = p.id
        self._byte_marks[reply["id"]] = (self.clock.now(), 0, 0)
        return reply

    async def _connect_transport(self, p: Participant, req: rq.ConnectTransportRequest) -> dict:
        self._own(p.transports, self._transport_owner, req.transport_id, "transport")
        if req.transport_id in p.connected:
            raise InvalidStateError("transport already connected")
        await self._worker_call(
            "connect_webrtc_transport",
            {"transportId": req.transport_id, "dtlsParameters": req.dtls_parameters.wire()},
            worker_id=self._object_worker.get(req.transport_id),
        )
        p.connected.add(req.transport_id)
        return m.TransportConnectedResponse(transport_id=req.transport_id).wire()

    async def _produce(self, p: Participant, req: rq.ProduceRequest) -> dict:
        direction = self._own(p.transports, self._transport_owner, req.transport_id, "transport")
        if direction != "send":
            raise InvalidStateError("produce needs a send transport")
        if len(p.producers) >= self.settings.limits.max_producers:
            raise RateLimitedError(f"at most {self.settings.limits.max_producers} producers per participant")
        source = req.source()
        reply = await self._worker_call(
            "produce",
            {
                "transportId": req.transport_id,
                "kind": req.kind,
                "rtpParameters": req.rtp_parameters.wire(),
                "appData": {"source": source, "participantId": p.id, "roomId": self.id},
            },
            worker_id=self._object_worker.get(req.transport_id),
        )
        producer_id = reply["id"]
        self._object_worker[producer_id] = self._object_worker.get(req.transport_id) or self.worker_id
        p.producers[producer_id] = {
            "kind": req.kind,
            "source": source,
            "transportId": req.transport_id,
            "paused": False,
        }
        self._producer_owner[producer_id] = p.id
        info = m.NewProducer(producer_id=producer_id, participant_id=p.id, kind=req.kind, source=source).wire()
        await self._notify(self._others(p), "new-producer", info)
        if req.kind == "video" and self.over_threshold:
            data = m.RecommendAudioOnly(
                participant_count=len(self.participants), threshold=self.settings.rooms.audio_only_threshold
            ).wire()
            await self._notify([p], "recommend-audio-only", data)
        return m.ProducedResponse(producer_id=producer_id).wire()

    async def _consume(self, p: Participant, req: rq.ConsumeRequest) -> dict:
        direction = self._own(p.transports, self._transport_owner, req.transport_id, "transport")
        if direction != "recv":
            raise InvalidStateError("consume needs a recv transport")
        owner_id = self._producer_owner.get(req.producer_id)
        if owner_id is None:
            raise NotFoundError("producer not found")
        if len(p.consumers) >= self.settings.limits.max_consumers:
            raise RateLimitedError(f"at most {self.settings.limits.max_consumers} consumers per participant")
        target = self._object_worker.get(req.transport_id) or self.worker_id
        await self._ensure_piped(req.producer_id, target)
        owner = self._owner(self._producer_owner, req.producer_id)
        kind = owner.producers[req.producer_id]["kind"] if owner is not None else "video"
        forwarding = self.forwarding.consume_options(p, req.producer_id, kind)
        data = {
            "transportId": req.transport_id,
            "producerId": req.producer_id,
            "rtpCapabilities": req.rtp_capabilities.wire(),
            "paused": True,
            "appData": {"participantId": p.id, "roomId": self.id},
            "forwardable": forwarding["forwardable"],
        }
        if forwarding["maxHeight"] is not None:
            data["maxHeight"] = forwarding["maxHeight"]
        if forwarding["onStage"]:
            data["onStage"] = True
        if forwarding.get("speaker"):
            data["speaker"] = True
        if forwarding.get("speakerRecency"):
            data["speakerRecency"] = forwarding["speakerRecency"]
        reply = await self._worker_call("consume", data, worker_id=target)
        consumer_id = reply["id"]
        self._object_worker[consumer_id] = target
        p.consumers[consumer_id] = {
            "producerId": req.producer_id,
            "transportId": req.transport_id,
            "kind": reply.get("kind"),
            "paused": True,
            **forwarding,
        }
        self._consumer_owner[consumer_id] = p.id
        return reply

    async def _consumer_op(self, p: Participant, req: rq.ConsumerRequest, method: str, paused: bool) -> dict:
        self._own(p.consumers, self._consumer_owner, req.consumer_id, "consumer")
        await self._worker_call(method, {"consumerId": req.consumer_id},
                                worker_id=self._object_worker.get(req.consumer_id))
        p.consumers[req.consumer_id]["paused"] = paused
        return {}

    async def _resume_consumer(self, p: Participant, req: rq.ResumeConsumerRequest) -> dict:
        return await self._consumer_op(p, req, "resume_consumer", False)

    async def _pause_consumer(self, p: Participant, req: rq.PauseConsumerRequest) -> dict:
        return await self._consumer_op(p, req, "pause_consumer", True)

    async def _producer_op(self, p: Participant, req: rq.ProducerRequest, method: str, paused: bool) -> dict:
        self._own(p.producers, self._producer_owner, req.producer_id, "producer")
        await self._worker_call(method, {"producerId": req.producer_id},
                                worker_id=self._object_worker.get(req.producer_id))
        p.producers[req.producer_id]["paused"] = paused
        return {}

    async def _pause_producer(self, p: Participant, req: rq.PauseProducerRequest) -> dict:
        return await self._producer_op(p, req, "pause_producer", True)

    async def _resume_producer(self, p: Participant, req: rq.ResumeProducerRequest) -> dict:
        return await self._producer_op(p, req, "resume_producer", False)

    async def _close_producer(self, p: Participant, req: rq.CloseProducerRequest) -> dict:
        self._own(p.producers, self._producer_owner, req.producer_id, "producer")
        await self._worker_call("close_producer", {"producerId": req.producer_id},
                                worker_id=self._object_worker.get(req.producer_id))
        await self._producer_gone(p, req.producer_id, tell_owner=False)
        return {}

    async def _set_preferred_layers(self, p: Participant, req: rq.SetPreferredLayersRequest) -> dict:
        self._own(p.consumers, self._consumer_owner, req.consumer_id, "consumer")
        data: dict = {"consumerId": req.consumer_id, "spatialLayer": req.spatial_layer}
        if req.temporal_layer is not None:
            data["temporalLayer"] = req.temporal_layer
        await self._worker_call("set_consumer_preferred_layers", data,
                                worker_id=self._object_worker.get(req.consumer_id))
        return {}

    async def _set_receive_constraints(self, p: Participant, req: rq.SetReceiveConstraintsRequest) -> dict:
        """Omitted fields keep their value, ``null`` resets one to the default."""
        given = req.model_fields_set
        changes: dict = {}
        if "on_stage" in given:
            for pid in req.on_stage or ():
                if pid == p.id:
                    raise InvalidRequestError("onStage: a participant cannot put themselves on stage")
                if pid not in self.participants:
                    raise NotFoundError(f"onStage: participant {pid} is not in this room")
            changes["on_stage"] = req.on_stage or []
        if "last_n" in given:
            changes["last_n"] = req.last_n
        if "max_height" in given:
            changes["max_height"] = req.max_height
        self.forwarding.set_constraints(p.id, **changes)
        return {}

    async def _set_consumer_priority(self, p: Participant, req: rq.SetConsumerPriorityRequest) -> dict:
        self._own(p.consumers, self._consumer_owner, req.consumer_id, "consumer")
        await self._worker_call("set_consumer_priority", {"consumerId": req.consumer_id, "priority": req.priority},
                                worker_id=self._object_worker.get(req.consumer_id))
        return {}

    async def _restart_ice(self, p: Participant, req: rq.RestartIceRequest) -> dict:
        self._own(p.transports, self._transport_owner, req.transport_id, "transport")
        reply = await self._worker_call("restart_ice", {"transportId": req.transport_id},
                                        worker_id=self._object_worker.get(req.transport_id))
        return m.RestartIceResponse(ice_parameters=reply["iceParameters"]).wire()

    async def _get_stats(self, p: Participant, req: rq.GetStatsRequest) -> dict:
        participants = [await self._bandwidth(o) for o in list(self.participants.values())]
        return {**self.stats(), "participants": participants}

    async def _bandwidth(self, p: Participant) -> dict:
        """One participant's traffic from the worker's transport and producer stats; flags (and logs
        once) what exceeds the per-send-transport cap ``media.max_incoming_bitrate_bps``."""
        cap = self.settings.media.max_incoming_bitrate_bps
        tids, pids = list(p.transports), list(p.producers)
        replies = await asyncio.gather(
            *(self._worker_call("get_transport_stats", {"transportId": t}, quiet=True,
                                worker_id=self._object_worker.get(t)) for t in tids),
            *(self._worker_call("get_producer_stats", {"producerId": i}, quiet=True,
                                worker_id=self._object_worker.get(i)) for i in pids),
        )
        now = self.clock.now()
        bytes_in = bytes_out = bitrate_in = bitrate_out = 0
        available: int | None = None
        probing = False
        allocation: list[m.ConsumerAllocation] = []
        for tid, stats in zip(tids, replies[: len(tids)]):
            alloc = stats.get("allocation")
            if isinstance(alloc, dict):  # a transport with video consumers: the downlink
                available = int(stats.get("availableOutgoingBitrate") or 0) or None
                probing = bool(stats.get("probing"))
                for cid, d in (alloc.get("consumers") or {}).items():
                    if cid in p.consumers:
                        allocation.append(m.ConsumerAllocation(consumer_id=cid, **{
                            k: d.get(k) for k in ("spatialLayer", "temporalLayer", "paused", "reason", "priority",
                                                  "group", "bitrate")}))
            rx, tx = int(stats.get("bytesReceived") or 0), int(stats.get("bytesSent") or 0)
            at, rx0, tx0 = self._byte_marks.get(tid, (now, rx, tx))
            bytes_in, bytes_out = bytes_in + rx, bytes_out + tx
            if now - at > 0:
                bitrate_in += int((rx - rx0) * 8 / (now - at))
                bitrate_out += int((tx - tx0) * 8 / (now - at))
            if tid in p.transports:
                self._byte_marks[tid] = (now, rx, tx)
        limit = cap * BUDGET_TOLERANCE if cap else None
        producers, per_transport = [], {}
        for pid, reply in zip(pids, replies[len(tids):]):
            info = p.producers.get(pid)
            if info is None:
                continue
            streams = reply.get("stats") or []
            bitrate = sum(int(s.get("bitrate") or 0) for s in streams if isinstance(s, dict))
            per_transport[info["transportId"]] = per_transport.get(info["transportId"], 0) + bitrate
            over = limit is not None and bitrate > limit
            if over and pid not in self._over_budget:
                self._over_budget.add(pid)
                logger.warning(
                    "room %s: producer %s of %s sends %d bps, over its budget of %d bps",
                    self.id, pid, p.id, bitrate, cap,
                )
            producers.append(
                m.ProducerBandwidth(
                    producer_id=pid, kind=info["kind"], source=info["source"], bitrate=bitrate, over_budget=over
                )
            )
        over_budget = any(pr.over_budget for pr in producers) or (
            limit is not None and any(total > limit for total in per_transport.values())
        )
        return m.ParticipantBandwidth(
            participant_id=p.id,
            display_name=p.display_name,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            bitrate_in=max(0, bitrate_in),
            bitrate_out=max(0, bitrate_out),
            max_incoming_bitrate=cap,
            over_budget=over_budget,
            producers=producers,
            available_outgoing_bitrate=available,
            probing=probing,
            video_allocation=allocation,
        ).wire()

    _OPS: dict[str, Callable[..., Any]] = {
        "get-rtp-capabilities": _get_rtp_capabilities,
        "create-transport": _create_transport,
        "connect-transport": _connect_transport,
        "produce": _produce,
        "consume": _consume,
        "resume-consumer": _resume_consumer,
        "pause-consumer": _pause_consumer,
        "pause-producer": _pause_producer,
        "resume-producer": _resume_producer,
        "close-producer": _close_producer,
        "set-preferred-layers": _set_preferred_layers,
        "set-receive-constraints": _set_receive_constraints,
        "set-consumer-priority": _set_consumer_priority,
        "restart-ice": _restart_ice,
        "get-stats": _get_stats,
    }
    #: operations after which the forwarding decisions are re-evaluated
    #: operations on the requester's own objects only: run side by side across participants
    _BATCHED = frozenset({"consume", "resume-consumer", "pause-consumer"})
    _REFRESH_AFTER = frozenset({"produce", "pause-producer", "resume-producer", "close-producer",
                                "set-receive-constraints"})

    # --- worker events --------------------------------------------------------------------------

    def owns(self, data: dict) -> bool:
        """Whether a worker event (by routerId or object ids) concerns this room."""
        router_id = data.get("routerId")
        if router_id is not None and any(r["routerId"] == router_id for r in self.routers.values()):
            return True
        return (
            data.get("consumerId") in self._consumer_owner
            or data.get("producerId") in self._producer_owner
            or data.get("transportId") in self._transport_owner
        )

    async def on_worker_event(self, name: str, data: dict) -> None:
        """Translate a media worker event (docs/worker-api.md) into bookkeeping and notifications."""
        async with self._lock:
            if self.closed:
                return
            if data.get("consumerId") in self._pipe_consumers:
                await self._on_pipe_event(name, data["consumerId"])
                return
            if name == "consumer-closed":
                p = self._owner(self._consumer_owner, data.get("consumerId"))
                if p is not None:
                    producer_id = p.consumers[data["consumerId"]]["producerId"]
                    self._forget_consumer(p, data["consumerId"])
                    await self._notify(
                        [p], "consumer-closed",
                        m.ConsumerClosed(consumer_id=data["consumerId"], producer_id=producer_id).wire(),
                    )
            elif name in ("consumer-paused", "consumer-resumed"):
                p = self._owner(self._consumer_owner, data.get("consumerId"))
                if p is not None:
                    await self._notify([p], name, {"consumerId": data["consumerId"]})
            elif name == "consumer-layers-changed":
                p = self._owner(self._consumer_owner, data.get("consumerId"))
                if p is not None:
                    payload = m.ConsumerLayersChanged(
                        consumer_id=data["consumerId"],
                        spatial_layer=data.get("spatialLayer"),
                        temporal_layer=data.get("temporalLayer"),
                    ).wire()
                    await self._notify([p], name, payload)
            elif name == "producer-closed":
                p = self._owner(self._producer_owner, data.get("producerId"))
                if p is not None:
                    await self._producer_gone(p, data["producerId"], tell_owner=True)
            elif name == "transport-closed":
                p = self._owner(self._transport_owner, data.get("transportId"))
                if p is not None:
                    await self._transport_gone(p, data["transportId"])
            elif name == "audio-levels":  # merged over the room's routers: speakers, audio, last-N order
                now = self.clock.now()
                dominant = self.forwarding.on_levels(data.get("levels"), now)
                if self.forwarding.levels_changed:
                    await self.forwarding.refresh()
                if dominant is not UNSET_DOMINANT:
                    volume = self.forwarding.tracker.dominant(now)[1] if dominant is not None else -127
                    payload = m.ActiveSpeaker(participant_id=dominant, volume=int(round(volume))).wire()
                    await self._notify(self.participants.values(), "active-speaker", payload)
            if name in ("producer-closed", "transport-closed"):
                await self.forwarding.refresh()
            # active-speaker (per router; the room decides from the merged levels instead),
            # producer-score and unknown events: nothing to tell clients

    # --- bookkeeping helpers --------------------------------------------------------------------

    def _others(self, p: Participant) -> list[Participant]:
        return [o for o in self.participants.values() if o is not p]

    def _own(self, mine: dict, owners: dict[str, str], object_id: str, what: str) -> Any:
        if object_id in mine:
            return mine[object_id]
        if object_id in owners:
            raise ForbiddenError(f"{what} belongs to another participant")
        raise NotFoundError(f"{what} not found")

    def _owner(self, owners: dict[str, str], object_id: Any) -> Participant | None:
        pid = owners.get(object_id) if isinstance(object_id, str) else None
        return self.participants.get(pid) if pid is not None else None

    def _forget_consumer(self, p: Participant, consumer_id: str) -> None:
        p.consumers.pop(consumer_id, None)
        self._consumer_owner.pop(consumer_id, None)
        self._object_worker.pop(consumer_id, None)

    async def _producer_gone(self, p: Participant, producer_id: str, *, tell_owner: bool) -> None:
        """A producer is closed: its consumers go (``consumer-closed`` to their owners), then
        ``producer-closed`` to the others (and the owner when the close did not come from them)."""
        p.producers.pop(producer_id, None)
        self._producer_owner.pop(producer_id, None)
        self._over_budget.discard(producer_id)
        self.forwarding.forget_producer(producer_id)
        await self._unpipe(producer_id, self._object_worker.pop(producer_id, None))
        for other in self._others(p):
            for cid, c in list(other.consumers.items()):
                if c["producerId"] == producer_id:
                    self._forget_consumer(other, cid)
                    await self._notify(
                        [other], "consumer-closed", m.ConsumerClosed(consumer_id=cid, producer_id=producer_id).wire()
                    )
        for cid, c in list(p.consumers.items()):  # a participant consuming their own producer
            if c["producerId"] == producer_id:
                self._forget_consumer(p, cid)
        targets = self.participants.values() if tell_owner else self._others(p)
        await self._notify(targets, "producer-closed", m.ProducerClosed(producer_id=producer_id, participant_id=p.id).wire())

    async def _transport_gone(self, p: Participant, transport_id: str) -> None:
        for cid, c in list(p.consumers.items()):
            if c["transportId"] == transport_id:
                self._forget_consumer(p, cid)
                await self._notify([p], "consumer-closed", m.ConsumerClosed(consumer_id=cid, producer_id=c["producerId"]).wire())
        for prod_id, v in list(p.producers.items()):
            if v["transportId"] == transport_id:
                await self._producer_gone(p, prod_id, tell_owner=True)
        p.transports.pop(transport_id, None)
        p.connected.discard(transport_id)
        self._transport_owner.pop(transport_id, None)
        self._object_worker.pop(transport_id, None)
        self._byte_marks.pop(transport_id, None)

    # --- pipes between the room's workers -------------------------------------------------------

    async def _ensure_piped(self, producer_id: str, target: str) -> None:
        """Make ``producer_id`` consumable on ``target``'s router (mediasoup's pipeToRouter)."""
        home = self._object_worker.get(producer_id)
        if home is None or home == target or (producer_id, target) in self._piped:
            return
        async with self._pipe_lock:  # batched consumes of one producer: one pipe
            if (producer_id, target) not in self._piped:
                await self._pipe(producer_id, home, target)

    async def _pipe(self, producer_id: str, home: str, target: str) -> None:
        link = self._pipe_links.get((home, target))
        if link is None:
            src, dst = self.routers[home], self.routers[target]
            srtp = self._pipe_srtp(src["port"], dst["port"])
            extra = {"enableSrtp": True} if srtp else {}
            a = await src["port"].request("create_pipe_transport", {"routerId": src["routerId"], **extra})
            b = await dst["port"].request("create_pipe_transport", {"routerId": dst["routerId"], **extra})
            await src["port"].request("connect_pipe_transport", {
                "transportId": a["id"], "ip": b["tuple"]["localIp"], "port": b["tuple"]["localPort"],
                **({"srtpParameters": b["srtpParameters"]} if srtp else {})})
            await dst["port"].request("connect_pipe_transport", {
                "transportId": b["id"], "ip": a["tuple"]["localIp"], "port": a["tuple"]["localPort"],
                **({"srtpParameters": a["srtpParameters"]} if srtp else {})})
            link = self._pipe_links[(home, target)] = (a["id"], b["id"])
            self._pipe_info[(home, target)] = {"srtp": srtp, "local": a, "remote": b}
            logger.info("room %s: pipe %s -> %s (%s)", self.id, home, target, "SRTP" if srtp else "plain RTP")
        consumer = await self.routers[home]["port"].request(
            "consume", {"transportId": link[0], "producerId": producer_id, "paused": False})
        owner = self._owner(self._producer_owner, producer_id)
        info = owner.producers.get(producer_id, {}) if owner is not None else {}
        try:
            await self.routers[target]["port"].request("produce", {
                "transportId": link[1], "producerId": producer_id, "kind": consumer["kind"],
                "rtpParameters": consumer["rtpParameters"], "paused": bool(consumer.get("producerPaused")),
                "appData": {"source": info.get("source"), "roomId": self.id, "pipe": True},
            })
        except BaseException:
            await self._worker_call("close_consumer", {"consumerId": consumer["id"]}, quiet=True, worker_id=home)
            raise
        self._piped[(producer_id, target)] = consumer["id"]
        self._pipe_consumers[consumer["id"]] = (producer_id, target)
        logger.info("room %s: producer %s piped from %s to %s", self.id, producer_id, home, target)

    def _pipe_srtp(self, src: WorkerPort, dst: WorkerPort) -> bool:
        """SRTP on a pipe between two workers unless both are known to share a node (``node`` of the
        ports; in-process ports have none: one process, one node), or on every pipe (``always``)."""
        if self.settings.media.pipe_srtp == "always":
            return True
        return getattr(src, "node", None) != getattr(dst, "node", None)

    async def _unpipe(self, producer_id: str, home: str | None) -> None:
        """The origin producer is gone: close its pipe producers (their consumers follow)."""
        for (pid, target), consumer_id in list(self._piped.items()):
            if pid != producer_id:
                continue
            del self._piped[(pid, target)]
            self._pipe_consumers.pop(consumer_id, None)
            await self._worker_call("close_producer", {"producerId": producer_id}, quiet=True, worker_id=target)
            if home is not None:
                await self._worker_call("close_consumer", {"consumerId": consumer_id}, quiet=True, worker_id=home)

    async def _on_pipe_event(self, name: str, consumer_id: str) -> None:
        producer_id, target = self._pipe_consumers[consumer_id]
        if name == "consumer-closed":  # the origin went (e.g. its transport closed): so does the pipe
            self._pipe_consumers.pop(consumer_id, None)
            self._piped.pop((producer_id, target), None)
            await self._worker_call("close_producer", {"producerId": producer_id}, quiet=True, worker_id=target)
        elif name in ("consumer-paused", "consumer-resumed"):
            method = "pause_producer" if name == "consumer-paused" else "resume_producer"
            await self._worker_call(method, {"producerId": producer_id}, quiet=True, worker_id=target)

    async def _worker_call(
        self, method: str, data: dict, *, quiet: bool = False, worker_id: str | None = None
    ) -> dict:
        """A call on one of the room's workers: ``worker_id``'s (where the object lives), else home."""
        router = self.routers.get(worker_id) if worker_id is not None else None
        worker = router["port"] if router is not None else self._worker
        if worker is None:
            raise InvalidStateError("room has no router")
        if not quiet:
            return await worker.request(method, data)
        try:
            return await worker.request(method, data)
        except Exception as exc:  # noqa: BLE001 - cleanup goes on (the object may be gone already)
            logger.debug("room %s: %s failed: %r", self.id, method, exc)
            return {}

    async def _notify(self, targets: Iterable[Participant], event: str, data: dict) -> None:
        """Notify ``targets``: after the room's lock is released when it is held (habit 15), now
        otherwise."""
        targets = list(targets)
        if not targets or self._lock.post(targets, event, data):
            return
        await self._send_notifications([(targets, event, data)])

    async def _send_notifications(self, batch: list[Notification]) -> None:
        failures = await send_in_order(
            batch, self._deliver, key=lambda t: t.id
        )
        for target, event, exc in failures:
            logger.warning("room %s: %s to %s failed: %r", self.id, event, target.id, exc)

    async def _deliver(self, target: Participant, event: str, data: dict) -> None:
        if target.detached_at is None:
            await self.notifier.notify(target.route, target.sid, event, data)
        elif event == "media-reset":  # no socket now: resume sends it again (its media is gone)
            target.missed_reset = data
        # (other notifications of the detached time: resume's ack and re-sent state cover them)
