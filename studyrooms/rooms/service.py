"""RoomService: hosts many rooms (one per room host) and serves the protocol's requests.

A *session* is the identity of one client socket, built by the signaling server from the token::

    {"sid": str,            # Socket.IO sid (unique per signaling server)
     "route": str,          # which signaling server holds the socket (NotifierPort route)
     "userId": str,         # from the token
     "displayName": str,    # the token's ``name`` claim: when set, it is what others see (join-room's
                            # displayName is used only for tokens without a name)
     "rooms": list[str]}    # rooms the token allows, or ["*"] for any room

Requests are the Socket.IO events of protocol.md with their (camelCase) payloads; they are validated
again here with the protocol models (cheap, and the service may be reached over Ray). A socket is in
at most one room at a time; the service maps ``(route, sid) -> (room, participant)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from typing import Callable

from ..clock import Clock, SystemClock, TimerHandle
from ..config import Settings
from ..errors import (ForbiddenError, InvalidRequestError, InvalidStateError, NotFoundError, RateLimitedError,
                      ResourceExhaustedError)
from ..ids import new_id
from ..protocol import parse_request
from ..protocol import requests as rq
from .. import observability as obs
from .limits import TokenBucket
from .ports import DirectoryPort, NotifierPort
from .room import Room
from .turn import join_extras

logger = logging.getLogger("studyrooms.room")


class RoomService:
    def __init__(
        self,
        settings: Settings,
        directory: DirectoryPort,
        notifier: NotifierPort,
        clock: Clock | None = None,
        host_id: str = "local",
        *,
        id_factory: Callable[[], str] = new_id,
    ) -> None:
        self.settings = settings
        self.directory = _TracedDirectory(directory)  # a client span per media worker call
        self.notifier = notifier
        self.clock: Clock = clock or SystemClock()
        self.host_id = host_id
        self.closed = False
        self.rooms: dict[str, Room] = {}
        self._ids = id_factory
        # (route, sid) -> (room, participant id): sids are only unique per signaling server
        self._by_sid: dict[tuple[str, str], tuple[Room, str]] = {}
        #: (route, sid) -> wall-clock time it was bound (a restarted signaling server clears only
        #: the sockets bound before it listened again: ``forget_route(before=...)``)
        # socket key -> (wall time it was bound, the signaling process's incarnation tag): a restarted
        # signaling server clears its previous process's sockets by tag (forget_route)
        self._bound_at: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._joining: set[tuple[str, str]] = set()
        self._limiters: dict[tuple[str, str], TokenBucket] = {}
        self._tasks: set[asyncio.Task] = set()
        #: participant id -> (room, grace timer) of the detached participants (session resume)
        self._parked: dict[str, tuple[Room, TimerHandle]] = {}

    # --- requests -------------------------------------------------------------------------------

    async def request(self, session: dict, method: str, data: dict | None) -> dict:
        """Serve one client request; returns the ack ``data`` or raises a StudyRoomsError.

        One span per request (``room <method>``), child of the signaling span whose W3C context the
        session carries (``session["traceContext"]``, see studyrooms.observability)."""
        parent = obs.extract(session.get(obs.TRACE_KEY)) if isinstance(session, dict) else None
        with obs.tracer().start_as_current_span(f"room {method}", context=parent) as span:
            joined = self._by_sid.get(_key(session) or ("", ""))
            if joined is not None:
                span.set_attribute(obs.ROOM_ID, joined[0].id)
                span.set_attribute(obs.PARTICIPANT_ID, joined[1])
            elif isinstance(data, dict) and isinstance(data.get("roomId"), str):
                span.set_attribute(obs.ROOM_ID, data["roomId"])
            for key, value in obs.ids_from(data).items():
                span.set_attribute(key, value)
            with obs.log_context(room_id=joined[0].id if joined else None,
                                 participant_id=joined[1] if joined else None):
                result = await self._request(session, method, data)
            if method == "join-room" and isinstance(result, dict):
                span.set_attribute(obs.PARTICIPANT_ID, str(result.get("participantId", "")))
            return result

    async def _request(self, session: dict, method: str, data: dict | None) -> dict:
        sid = _key(session)
        if sid is None:
            raise InvalidRequestError("session without sid")
        if self.closed:
            raise InvalidStateError("room host is shutting down")
        self._rate_limit(sid)
        req = parse_request(method, data)
        if method == "join-room":
            return await self._join(session, req)  # type: ignore[arg-type]
        joined = self._by_sid.get(sid)
        if method == "leave-room":
            if joined is not None:
                await self._leave(sid)
            return {}
        if joined is None:
            raise InvalidStateError(f"{method}: join a room first")
        room, participant_id = joined
        return await room.handle(participant_id, method, req)

    def _rate_limit(self, sid: tuple[str, str]) -> None:
        bucket = self._limiters.get(sid)
        if bucket is None:
            limits = self.settings.limits
            bucket = self._limiters[sid] = TokenBucket(limits.requests_per_second, limits.request_burst, self.clock)
        if not bucket.take():
            raise RateLimitedError("too many requests, slow down")

    async def _join(self, session: dict, req: rq.JoinRoomRequest) -> dict:
        sid = _key(session)
        assert sid is not None
        if sid in self._by_sid or sid in self._joining:
            raise InvalidStateError("this socket already joined a room; leave-room first")
        allowed = session.get("rooms") or []
        if "*" not in allowed and req.room_id not in allowed:
            raise ForbiddenError(f"your token does not allow room {req.room_id}")
        room = self.rooms.get(req.room_id)
        resumable = _resumable(session)
        key = session.get("resumeKey")
        if room is not None and resumable and isinstance(key, str) and key:
            mine = room.resumable(_digest(key), str(session.get("userId", "")))
            if mine is not None:
                try:
                    return await self._resume(session, room, mine, key)
                except NotFoundError:  # it left meanwhile (grace over, room closing): an ordinary join
                    room = self.rooms.get(req.room_id)
        if room is None:
            if len(self.rooms) >= self.settings.rooms.max_rooms:
                raise ResourceExhaustedError(
                    f"room limit reached ({self.settings.rooms.max_rooms} rooms); try again later"
                )
            reserve = getattr(self.directory, "reserve_room", None)
            if reserve is not None:  # several hosts: the directory counts rooms cluster-wide
                await reserve(req.room_id)
                room = self.rooms.get(req.room_id)  # a concurrent join may have created it meanwhile
        if room is None:
            room = Room(
                req.room_id,
                self.settings,
                self.directory,
                self.notifier,
                self.clock,
                id_factory=self._ids,
                on_empty=self._room_empty,
            )
            self.rooms[req.room_id] = room
        self._joining.add(sid)
        room.pending_joins += 1
        # the token's name is the display name others see; join-room's is a fallback for nameless tokens
        display_name = str(session.get("displayName") or "").strip() or req.display_name
        obs.bind_log_context(room_id=req.room_id)
        try:
            participant, ack = await room.join(
                session["sid"], str(session.get("route", "")), str(session.get("userId", "")), display_name
            )
        except BaseException:
            room.schedule_empty_close()
            raise
        finally:
            room.pending_joins -= 1
            self._joining.discard(sid)
        self._by_sid[sid] = (room, participant.id)
        self._bound_at[sid] = (self.clock.wall(), _incarnation(session))
        obs.bind_log_context(participant_id=participant.id)
        if resumable:  # a client that can resume: the key it presents on its next socket
            key = secrets.token_urlsafe(32)
            participant.resume_hash = _digest(key)
            ack = {**ack, "resumed": False, "resumeKey": key}
        # TURN credentials for this participant (fresh on every join; never logged)
        return {**ack, **join_extras(self.settings.turn, participant.id, self.clock.wall())}

    async def _resume(self, session: dict, room: Room, participant_id: str, key: str) -> dict:
        """join-room with the resume key of a participant of ``room`` (same token identity): bind it
        to this socket again; its transports, producers and consumers are untouched."""
        sid = _key(session)
        assert sid is not None
        parked = self._parked.pop(participant_id, None)
        if parked is not None:
            parked[1].cancel()
        for old, joined in list(self._by_sid.items()):  # still bound to an old socket: this one takes over
            if joined == (room, participant_id):
                del self._by_sid[old]
                self._bound_at.pop(old, None)
                logger.info("room %s: %s moves from socket %s/%s to %s/%s", room.id, participant_id, *old, *sid)
        self._joining.add(sid)
        try:
            participant, ack = await room.resume(participant_id, session["sid"], str(session.get("route", "")))
        finally:
            self._joining.discard(sid)
        self._by_sid[sid] = (room, participant.id)
        self._bound_at[sid] = (self.clock.wall(), _incarnation(session))
        obs.bind_log_context(participant_id=participant.id)
        return {**ack, "resumed": True, "resumeKey": key,
                **join_extras(self.settings.turn, participant.id, self.clock.wall())}

    async def _drop(self, sid: tuple[str, str]) -> None:
        """The socket ``sid`` is gone without leave-room: its participant leaves, or, when it can
        resume (``rooms.resume_grace_s``), stays detached with its media until the grace ends."""
        joined = self._by_sid.get(sid)
        if joined is None:
            return
        room, participant_id = joined
        grace = self.settings.rooms.resume_grace_s
        p = room.participants.get(participant_id)
        if grace <= 0 or p is None or p.resume_hash is None or room.closed:
            await self._leave(sid)
            return
        del self._by_sid[sid]
        self._bound_at.pop(sid, None)
        if not await room.detach(participant_id, sid[1], sid[0]):
            return
        old = self._parked.pop(participant_id, None)
        if old is not None:
            old[1].cancel()
        entry: list = [room]
        entry.append(self.clock.call_later(grace, lambda: self._spawn(self._expire(participant_id, entry))))
        self._parked[participant_id] = (room, entry[1])

    async def _expire(self, participant_id: str, entry: list) -> None:
        parked = self._parked.get(participant_id)
        if parked is None or parked[1] is not entry[1]:
            return  # resumed (or parked again) meanwhile
        del self._parked[participant_id]
        room = parked[0]
        p = room.participants.get(participant_id)
        if p is None or p.detached_at is None:
            return
        logger.info("room %s: %s did not come back within %.0f s: it leaves", room.id, participant_id,
                    self.settings.rooms.resume_grace_s)
        await room.leave(participant_id)

    async def _leave(self, sid: tuple[str, str]) -> None:
        joined = self._by_sid.pop(sid, None)
        self._bound_at.pop(sid, None)
        if joined is not None:
            room, participant_id = joined
            await room.leave(participant_id)

    async def disconnect(self, session: dict) -> None:
        """The socket is gone: leave its room (closing its transports, producers, consumers)."""
        sid = _key(session)
        if sid is None:
            return
        self._limiters.pop(sid, None)
        joined = self._by_sid.get(sid)
        if joined is None:
            return
        parent = obs.extract(session.get(obs.TRACE_KEY))
        with obs.tracer().start_as_current_span("room disconnect", context=parent,
                                                attributes={obs.ROOM_ID: joined[0].id,
                                                            obs.PARTICIPANT_ID: joined[1]}), \
                obs.log_context(room_id=joined[0].id, participant_id=joined[1]):
            if session.get("leaving"):  # the client closed its socket on purpose: it left
                await self._leave(sid)
            else:
                await self._drop(sid)

    # --- rooms lifecycle ------------------------------------------------------------------------

    def _room_empty(self, room: Room) -> None:
        """Empty-room timeout fired (synchronously, from the clock): forget and close the room."""
        if self.rooms.get(room.id) is room:
            del self.rooms[room.id]
            self._spawn(self._release_room(room.id))
        self._spawn(room.close())

    async def _release_room(self, room_id: str) -> None:
        release = getattr(self.directory, "release_room", None)
        if release is not None and room_id not in self.rooms:
            await release(room_id)

    async def drop_route(self, route: str) -> int:
        """The signaling server ``route`` is gone with its sockets: their participants leave."""
        gone = [key for key in self._by_sid if key[0] == route]
        for key in gone:
            self._limiters.pop(key, None)
            try:
                await self._drop(key)
            except Exception:  # noqa: BLE001 - the others must still leave
                logger.exception("leaving %s after its signaling server went failed", key)
        if gone:
            logger.info("signaling %s gone: %d participant(s) left", route, len(gone))
        return len(gone)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("room host task failed", exc_info=task.exception())

    async def idle(self) -> None:
        """Wait for background work (room closes) to finish (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Close every room (routers closed and released)."""
        self.closed = True
        rooms = list(self.rooms.values())
        self.rooms.clear()
        self._by_sid.clear()
        self._bound_at.clear()
        self._limiters.clear()
        for _, timer in self._parked.values():
            timer.cancel()
        self._parked.clear()
        for room in rooms:
            await room.close()
            try:
                await self._release_room(room.id)
            except Exception:  # noqa: BLE001 - closing must finish
                logger.warning("release of room %s failed", room.id, exc_info=True)
        await self.idle()

    # --- worker events --------------------------------------------------------------------------

    async def on_worker_event(self, name: str, data: dict) -> None:
        """A media worker event (docs/worker-api.md) for one of this host's routers.

        Do not await this from inside a ``WorkerPort.request`` call (it waits for the room lock)."""
        if not isinstance(data, dict):
            return
        for room in list(self.rooms.values()):
            if room.owns(data):
                await room.on_worker_event(name, data)
                return
        logger.debug("worker event %s for no room of this host: %r", name, data)

    # --- healing (docs/protocol.md "Healing") ---------------------------------------------------

    async def worker_lost(self, worker_id: str, reason: str) -> int:
        """A media worker died: every room with a router there heals (``media-reset`` to the
        participants whose media was there). Returns how many participants were reset."""
        rooms = [room for room in list(self.rooms.values()) if worker_id in room.routers]
        results = await asyncio.gather(*(room.recover_worker(worker_id, reason) for room in rooms),
                                       return_exceptions=True)
        total = 0
        for room, result in zip(rooms, results):
            if isinstance(result, BaseException):
                logger.error("room %s: healing after the loss of %s failed", room.id, worker_id, exc_info=result)
            else:
                total += result
        return total

    async def forget_route(self, route: str, before: float | None = None, keep: str | None = None) -> int:
        """The signaling server ``route`` restarted: its sockets are gone, so their participants
        leave (others get producer-closed / participant-left) or, resumable, are detached. Sockets
        of the new process (resumed or new joins) are kept: ``keep`` is its incarnation tag (the
        session's ``incarnation``: exact), ``before`` the wall-clock time it started listening (for
        sessions without a tag). Returns how many were cleared."""
        def old(key: tuple[str, str]) -> bool:
            at, tag = self._bound_at.get(key, (0.0, None))
            if keep is not None and tag is not None:
                return tag != keep
            return before is None or at < before

        keys = [key for key in list(self._by_sid) if key[0] == route and old(key)]
        for key in keys:
            self._limiters.pop(key, None)
            try:
                await self._drop(key)
            except Exception:  # noqa: BLE001 - the others must still go
                logger.exception("leave of %s after the restart of %s failed", key[1], route)
        if keys:
            logger.warning("signaling %s restarted: %d participant(s) of its old sockets left their rooms "
                           "or wait for their clients to resume", route, len(keys))
        return len(keys)

    def rooms_held(self) -> dict:
        """``{roomId: [workerIds]}`` of the open rooms (a restarted directory rebuilds from it)."""
        return {room.id: sorted(room.routers) for room in self.rooms.values() if not room.closed}

    # --- introspection --------------------------------------------------------------------------

    def list_rooms(self) -> list[dict]:
        return [
            {
                "roomId": room.id,
                "participantCount": len(room.participants),
                "capacity": self.settings.rooms.capacity,
                "recommendAudioOnly": room.over_threshold,
                "hostId": self.host_id,
            }
            for room in self.rooms.values()
        ]

    def stats(self) -> dict:
        """``{"hostId", "rooms": [room stats of protocol.md], "workers": [worker ids in use]}``."""
        rooms = [room.stats() for room in self.rooms.values()]
        return {
            "hostId": self.host_id,
            "rooms": rooms,
            "workers": sorted({w for room in self.rooms.values() for w in room.routers}),
        }

    def room_of(self, session: dict) -> Room | None:
        key = _key(session)
        joined = self._by_sid.get(key) if key else None
        return joined[0] if joined else None

    def dump(self) -> dict:
        return {"hostId": self.host_id, "rooms": [room.dump() for room in self.rooms.values()],
                "sockets": len(self._by_sid), "rateLimiters": len(self._limiters), "detached": len(self._parked)}


class _TracedWorkerPort:
    """A WorkerPort whose requests are client spans (``worker <method>``); the span's W3C context
    travels in the request data (``traceContext``) so the media worker can continue the trace."""

    def __init__(self, port) -> None:
        self._port = port
        self.worker_id = port.worker_id

    async def request(self, method: str, data: dict) -> dict:
        attributes = {obs.WORKER_ID: str(self.worker_id), "rpc.method": method, **obs.ids_from(data)}
        with obs.tracer().start_as_current_span(f"worker {method}", kind=obs.trace.SpanKind.CLIENT,
                                                attributes=attributes):
            carrier = obs.inject()
            if carrier and isinstance(data, dict):
                data = {**data, obs.TRACE_KEY: carrier}
            return await self._port.request(method, data)

    def __getattr__(self, name: str):
        return getattr(self._port, name)


class _TracedDirectory:
    """DirectoryPort wrapper handing out traced WorkerPorts (same ports otherwise)."""

    def __init__(self, directory) -> None:
        self._directory = directory
        self._ports: dict[str, _TracedWorkerPort] = {}

    def worker(self, worker_id: str):
        port = self._directory.worker(worker_id)
        traced = self._ports.get(worker_id)
        if traced is None or traced._port is not port:
            traced = self._ports[worker_id] = _TracedWorkerPort(port)
        return traced

    async def place_router(self, room_id: str, exclude=()) -> str:
        return await self._directory.place_router(room_id, exclude)

    async def release_router(self, room_id: str, worker_id: str) -> None:
        await self._directory.release_router(room_id, worker_id)

    def __getattr__(self, name: str):
        return getattr(self._directory, name)


def _key(session: dict) -> tuple[str, str] | None:
    sid = session.get("sid") if isinstance(session, dict) else None
    if not isinstance(sid, str) or not sid:
        return None
    return (str(session.get("route", "")), sid)


def _resumable(session: dict) -> bool:
    """The client asked for session resume (Socket.IO auth ``resume: true`` or a ``resumeKey``)."""
    return bool(session.get("resume")) or bool(session.get("resumeKey"))


def _incarnation(session: dict) -> str | None:
    """The signaling process's tag in a session (SignalingServer.incarnation), if any."""
    tag = session.get("incarnation")
    return tag if isinstance(tag, str) else None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
