"""SignalingServer: aiohttp + python-socketio edge of StudyRooms.

It authenticates sockets (JWT in the Socket.IO ``auth`` payload), validates every event with the
protocol models, forwards it to the :class:`~studyrooms.signaling.ports.RoomsPort`, acks
``{"ok": true, "data"}`` / ``{"ok": false, "error": {code, message}}``, emits the original guide's
reply events (and ``error`` on failure), and delivers room notifications (:meth:`deliver`). It never
touches media or room state.

Ordering: python-socketio runs every event as its own task; each socket's events go through a
per-socket FIFO lock taken before the first suspension point, so one client's requests run in the
order they were sent (and its disconnect runs after them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import socketio
from aiohttp import web
from pydantic import ValidationError

from .. import observability as obs
from ..config import Settings, is_loopback
from ..errors import InvalidRequestError, InvalidStateError, StudyRoomsError
from ..ids import new_id
from ..protocol import EVENTS, parse_request
from ..protocol.describe import describe
from ..protocol.messages import ErrorEvent
from ..protocol.requests import TokenRequest
from .auth import dev_secret as new_dev_secret, issue_token, verify_token
from .ports import RoomsPort

logger = logging.getLogger("studyrooms.signaling")

MAX_RESUME_KEY = 128  # longer "keys" are ignored (issued ones are 43 characters)
DEFAULT_WEB_ROOT = Path(__file__).resolve().parents[2] / "web" / "dist"

_MISSING_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>StudyRooms</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>StudyRooms is running</h1>
<p>The web page has not been built (no <code>index.html</code> in <code>{root}</code>).</p>
<p>Build it with <code>scripts/build-web.sh</code> (or <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>),
or point <code>STUDYROOMS_SERVER_WEB_ROOT</code> at a built copy, then reload.</p>
<p>The Socket.IO endpoint (<code>/socket.io</code>) and the HTTP API (<code>/healthz</code>,
<code>/api/rooms</code>, <code>/api/stats</code>) work without it.</p>
</body></html>
"""


class _Refused(socketio.exceptions.ConnectionRefusedError):
    """Connection refused with ``{code, message}`` as the connect_error data.

    The CONNECT_ERROR packet carries ``{message, code, data: {code, message}}``: socket.io-client
    (JS) exposes ``err.message`` and ``err.data`` (= the nested ``{code, message}``), python-socketio
    hands the whole object (with ``code`` and ``message``) to its ``connect_error`` handler.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error_args = {"message": message, "code": code, "data": {"code": code, "message": message}}


class SignalingServer:
    def __init__(
        self,
        settings: Settings,
        rooms: RoomsPort,
        route: str,
        *,
        secret: str | None = None,
        dev_secret: str | None = None,
        web_root: str | Path | None = None,
        cors_allowed_origins: str | list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.rooms = rooms
        self.route = route
        configured = secret or settings.server.auth_secret
        #: development mode: no configured secret, so tokens are issued by POST /api/token with a
        #: random per-process secret (only allowed while listening on loopback)
        self.dev_mode = configured is None
        # (several signaling servers in development mode share one ``dev_secret``: a token from
        # one is accepted by all)
        self._secret = configured or dev_secret or new_dev_secret()
        root = web_root or settings.server.web_root
        self.web_root = Path(root) if root else DEFAULT_WEB_ROOT
        self.max_payload_bytes = settings.limits.max_payload_bytes
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            cors_allowed_origins=cors_allowed_origins,
            max_http_buffer_size=max(4 * self.max_payload_bytes, 1_000_000),
            ping_interval=settings.server.ping_interval_s,
            ping_timeout=settings.server.ping_timeout_s,
            logger=False,
            engineio_logger=False,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("*", self._on_event)
        self.app = web.Application(client_max_size=max(self.max_payload_bytes, 16 * 1024))
        self.sio.attach(self.app)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_post("/api/token", self._token)
        self.app.router.add_get("/api/rooms", self._list_rooms)
        self.app.router.add_get("/api/stats", self._stats)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/", self._static)
        self.app.router.add_get("/{path:.+}", self._static)
        self._sessions: dict[str, dict] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._runner: web.AppRunner | None = None
        self._stopping = False
        #: this process's tag, carried in every session: a restarted server clears exactly its
        #: previous process's sockets at the room hosts (RoomsService.forget_route ``keep``)
        self.incarnation = uuid.uuid4().hex[:16]
        self.port: int | None = None
        #: ``GET /metrics`` renderer, installed by whoever set up the telemetry SDK (actors/telemetry.py):
        #: ``async () -> (body bytes, content type)``; None: 404
        self.metrics_provider: Callable[[], Awaitable[tuple[bytes, str]]] | None = None
        meter = obs.meter()
        self._requests = meter.create_counter(
            "studyrooms.signaling.requests", description="Socket.IO requests served, by event and outcome")
        self._durations = meter.create_histogram(
            "studyrooms.signaling.request.duration", unit="s", description="Socket.IO request latency",
            explicit_bucket_boundaries_advisory=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])

    # --- tokens ---------------------------------------------------------------------------------

    def issue_token(self, user_id: str, display_name: str, rooms: list[str]) -> str:
        """A token this server accepts (development tools, tests)."""
        return issue_token(self._secret, user_id, display_name, rooms, self.settings.server.token_ttl_s)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Listen on ``host:port`` (port 0: any free port); returns the bound port."""
        host = self.settings.server.host if host is None else host
        port = self.settings.server.port if port is None else port
        if self.dev_mode and not is_loopback(host):
            raise InvalidStateError(
                f"refusing to listen on {host} without an auth secret: set STUDYROOMS_AUTH_SECRET "
                "(development mode, which issues tokens freely, is loopback-only)"
            )
        if self._runner is not None:
            raise InvalidStateError("already started")
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        logger.info("signaling %s listening on %s:%d (dev mode: %s)", self.route, host, self.port, self.dev_mode)
        return self.port

    async def stop(self) -> None:
        """Disconnect every socket (each leaves its room) and stop listening."""
        self._stopping = True
        for sid in list(self._sessions):
            try:
                await self.sio.disconnect(sid)
            except Exception:  # noqa: BLE001 - shutting down
                logger.debug("disconnect of %s failed", sid, exc_info=True)
            await self._cleanup(sid)
        try:
            await self.sio.shutdown()  # engine.io: close every transport, stop its service task
        except Exception:  # noqa: BLE001 - shutting down
            logger.debug("socket.io shutdown failed", exc_info=True)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            # let the closed sockets' connections finish before the graceful shutdown waits on them
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.0
            while runner.server is not None and runner.server.connections and loop.time() < deadline:
                await asyncio.sleep(0.01)
            await runner.cleanup()

    # --- Socket.IO ------------------------------------------------------------------------------

    async def _on_connect(self, sid: str, *args: Any) -> dict | None:
        # (sid, environ, auth) from python-socketio; any arguments when a client emits "connect"
        auth = args[1] if len(args) > 1 else None
        if sid in self._sessions:
            # python-socketio dispatches a client-EMITTED "connect" event to this handler too (its
            # reserved names only guard the "*" catch-all): an authenticated socket must not re-run
            # authentication (and swap its identity and lock) by emitting "connect".
            self._requests.add(1, {"event": "unknown", "outcome": "invalid-request"})
            return _reserved_event_error("connect")
        if self._stopping:
            self._requests.add(1, {"event": "connect", "outcome": "invalid-state"})
            raise _Refused("invalid-state", "server is shutting down")
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            identity = verify_token(self._secret, token)
        except StudyRoomsError as exc:
            logger.info("socket %s refused: %s", sid, exc.message)
            self._requests.add(1, {"event": "connect", "outcome": exc.code})
            raise _Refused(exc.code, exc.message) from None
        self._requests.add(1, {"event": "connect", "outcome": "ok"})
        session = {
            "sid": sid,
            "route": self.route,
            "userId": identity.user_id,
            "displayName": identity.display_name,
            "rooms": list(identity.rooms),
            "incarnation": self.incarnation,
        }
        # session resume (docs/protocol.md): ``resume: true`` asks for it, ``resumeKey`` (from an
        # earlier join-room ack) claims a participant kept after this client's previous socket went
        if auth.get("resume") is True:
            session["resume"] = True
        key = auth.get("resumeKey")
        if isinstance(key, str) and 0 < len(key) <= MAX_RESUME_KEY:
            session["resumeKey"] = key
        self._sessions[sid] = session
        self._locks[sid] = asyncio.Lock()

    async def _on_disconnect(self, sid: str, *reason: Any) -> dict | None:
        if self.sio.manager.is_connected(sid, "/"):
            # A real disconnect runs after the manager's pre_disconnect (the socket no longer counts
            # as connected); a client-emitted "disconnect" event must not make it leave its room
            # while the socket stays open.
            self._requests.add(1, {"event": "unknown", "outcome": "invalid-request"})
            return _reserved_event_error("disconnect")
        session = self._sessions.get(sid)
        if session is not None and reason and reason[0] == self.sio.reason.CLIENT_DISCONNECT:
            # the client closed its socket on purpose (the page does on pagehide): a leave, not a
            # connection lost, so no session resume (docs/protocol.md "Session resume")
            session["leaving"] = True
        await self._cleanup(sid)
        return None

    async def _cleanup(self, sid: str) -> None:
        lock = self._locks.get(sid)
        if lock is None:
            return
        async with lock:  # after the socket's pending requests
            session = self._sessions.pop(sid, None)
            self._locks.pop(sid, None)
            if session is None:
                return
            attributes = {obs.SID: sid}
            for key, attr in (("roomId", obs.ROOM_ID), ("participantId", obs.PARTICIPANT_ID)):
                if session.get(key):
                    attributes[attr] = str(session[key])
            with obs.tracer().start_as_current_span("signaling disconnect", kind=obs.trace.SpanKind.SERVER,
                                                    attributes=attributes):
                session[obs.TRACE_KEY] = obs.inject()
                try:
                    await self.rooms.disconnect(session)
                except Exception:  # noqa: BLE001 - a disconnect must finish
                    logger.exception("rooms.disconnect failed for %s", sid)

    async def _on_event(self, event: str, sid: str, *args: Any) -> dict:
        lock = self._locks.get(sid)  # taken before any suspension: FIFO per socket
        if lock is None:
            self._requests.add(1, {"event": _event_name(event), "outcome": "invalid-state"})
            return {"ok": False, "error": {"code": "invalid-state", "message": "not connected"}}
        async with lock:
            try:
                return await self._dispatch(event, sid, args)
            except Exception:  # noqa: BLE001 - whatever breaks (even instrumentation), the client gets an ack
                trace_id = uuid.uuid4().hex[:16]
                logger.exception("request %r from %s failed outside the handler (trace id %s)", event, sid, trace_id)
                return {"ok": False, "error": {"code": "internal", "message": f"internal error (trace id {trace_id})",
                                               "traceId": trace_id}}

    async def _dispatch(self, event: str, sid: str, args: tuple) -> dict:
        """One span per request (``signaling <event>``, kind SERVER); its W3C context rides in the
        session (``traceContext``) so the room host continues the trace across the Ray hop."""
        name = _event_name(event)
        session = self._sessions.get(sid)
        attributes = {obs.SID: sid, "rpc.method": name}
        if session is not None:
            for key, attr in (("roomId", obs.ROOM_ID), ("participantId", obs.PARTICIPANT_ID)):
                if session.get(key):
                    attributes[attr] = str(session[key])
        t0 = time.perf_counter()
        with obs.tracer().start_as_current_span(f"signaling {name}", kind=obs.trace.SpanKind.SERVER,
                                                attributes=attributes) as span:
            if session is not None:
                session[obs.TRACE_KEY] = obs.inject()
            with obs.log_context(sid=sid, room_id=attributes.get(obs.ROOM_ID),
                                 participant_id=attributes.get(obs.PARTICIPANT_ID)):
                reply = await self._dispatch_traced(event, sid, args)
            ok = bool(reply.get("ok"))
            if not ok:
                code = str(reply.get("error", {}).get("code", "internal"))
                span.set_attribute("studyrooms.error_code", code)
                span.set_status(obs.trace.Status(obs.trace.StatusCode.ERROR, code))
            elif name == "join-room" and session is not None:
                data = reply.get("data") or {}
                session["roomId"], session["participantId"] = data.get("roomId"), data.get("participantId")
                span.set_attribute(obs.ROOM_ID, str(data.get("roomId", "")))
                span.set_attribute(obs.PARTICIPANT_ID, str(data.get("participantId", "")))
            elif name == "leave-room" and session is not None:
                session.pop("roomId", None)
                session.pop("participantId", None)
        outcome = {"event": name, "outcome": "ok" if ok else str(reply.get("error", {}).get("code", "internal"))}
        self._requests.add(1, outcome)
        self._durations.record(time.perf_counter() - t0, {"event": name})
        return reply

    async def _dispatch_traced(self, event: str, sid: str, args: tuple) -> dict:
        spec = EVENTS.get(event)
        try:
            session = self._sessions.get(sid)
            if session is None:
                raise InvalidStateError("not connected")
            if len(args) > 1:
                raise InvalidRequestError(f"{event}: expected one payload object, got {len(args)} arguments")
            payload = args[0] if args else None
            self._check_size(event, payload)
            data = parse_request(event, payload).wire()
            result = await self.rooms.request(session, event, data)
        except StudyRoomsError as exc:
            error = {"code": exc.code, "message": exc.message}
            if exc.trace_id:
                error["traceId"] = exc.trace_id
        except Exception:  # noqa: BLE001 - the edge maps everything to a wire error
            trace_id = uuid.uuid4().hex[:16]
            logger.exception("internal error in %s from %s (trace id %s)", event, sid, trace_id)
            error = {"code": "internal", "message": f"internal error (trace id {trace_id})", "traceId": trace_id}
        else:
            if spec is not None and spec.reply_event is not None:
                await self._emit(spec.reply_event, result, sid)
            return {"ok": True, "data": result}
        name = event if isinstance(event, str) else str(event)
        await self._emit("error", ErrorEvent(event=name[:64], code=error["code"], message=error["message"]).wire(), sid)
        return {"ok": False, "error": error}

    def _check_size(self, event: str, payload: Any) -> None:
        if payload is None:
            return
        try:
            size = len(json.dumps(payload, separators=(",", ":")).encode())
        except (TypeError, ValueError, RecursionError):
            raise InvalidRequestError(f"{event}: payload: not JSON") from None
        if size > self.max_payload_bytes:
            raise InvalidRequestError(f"{event}: payload: larger than {self.max_payload_bytes} bytes")

    async def _emit(self, event: str, data: Any, sid: str) -> None:
        try:
            await self.sio.emit(event, data, to=sid)
        except Exception:  # noqa: BLE001 - the socket may be gone
            logger.debug("emit %s to %s failed", event, sid, exc_info=True)

    async def deliver(self, sid: str, event: str, data: dict) -> None:
        """Push a room notification to one of this server's sockets (NotifierPort ends here)."""
        if sid in self._sessions:
            await self._emit(event, data, sid)

    async def room_reset(self, sid: str, reason: str) -> None:
        """The socket's room was lost on the server: forget it and tell the client to join again."""
        session = self._sessions.get(sid)
        if session is None:
            return
        session.pop("roomId", None)
        session.pop("participantId", None)
        await self._emit("room-reset", {"reason": reason}, sid)

    @property
    def connected_sids(self) -> list[str]:
        return list(self._sessions)

    # --- HTTP -----------------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        health = getattr(self.rooms, "health", None)
        if health is not None and not self._stopping:  # actors: ok, or degraded with the reasons
            try:
                report = dict(await health())
            except Exception as exc:  # noqa: BLE001
                report = {"status": "degraded", "reasons": [f"rooms unavailable: {exc}"]}
            reasons = [str(r) for r in report.get("reasons") or []]
            if report.get("status") == "ok":  # {"status": "ok"} (+ "givenUp" after a crash loop)
                return web.json_response({k: v for k, v in report.items() if k != "reasons"})
            logger.warning("healthz: degraded: %s", "; ".join(reasons))
            return web.json_response({**report, "status": "degraded", "reason": "; ".join(reasons)}, status=503)
        try:
            ready = bool(await self.rooms.ready())
        except Exception:  # noqa: BLE001
            logger.warning("rooms.ready failed", exc_info=True)
            ready = False
        if ready and not self._stopping:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "unavailable"}, status=503)

    async def _token(self, request: web.Request) -> web.Response:
        if not self.dev_mode:
            return _error(403, "forbidden", "tokens are only issued in development mode")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "invalid-request", "body must be JSON {roomId, displayName}")
        try:
            req = TokenRequest.model_validate(body)
        except ValidationError as exc:
            return _error(400, "invalid-request", describe(exc.errors(include_url=False, include_input=False)[0]))
        token = self.issue_token(new_id(), req.display_name, [req.room_id])
        return web.json_response({"token": token})

    async def _list_rooms(self, request: web.Request) -> web.Response:
        try:
            return web.json_response({"rooms": await self.rooms.list_rooms()})
        except Exception:  # noqa: BLE001
            logger.exception("list_rooms failed")
            return _error(503, "internal", "rooms are not available")

    async def _stats(self, request: web.Request) -> web.Response:
        try:
            stats = await self.rooms.stats()
        except Exception:  # noqa: BLE001
            logger.exception("stats failed")
            return _error(503, "internal", "stats are not available")
        return web.json_response({"rooms": stats.get("rooms", []), "workers": stats.get("workers", [])})

    async def _metrics(self, request: web.Request) -> web.Response:
        """Prometheus scrape endpoint (text exposition), when telemetry is set up."""
        if self.metrics_provider is None:
            return _error(404, "not-found", "metrics are not enabled on this server")
        try:
            body, content_type = await self.metrics_provider()
        except Exception:  # noqa: BLE001
            logger.exception("metrics failed")
            return _error(503, "internal", "metrics are not available")
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        rel = request.match_info.get("path", "") or "index.html"
        root = self.web_root.resolve()
        index = root / "index.html"
        if not index.is_file():
            if rel == "index.html":
                return web.Response(text=_MISSING_PAGE.format(root=root), content_type="text/html")
            raise web.HTTPNotFound()
        target = (root / rel).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(target, headers={"Cache-Control": "no-cache"})


def _event_name(event: Any) -> str:
    """The metric/span label of an event: a protocol event's name, else ``unknown`` (bounded labels)."""
    return event if isinstance(event, str) and event in EVENTS else "unknown"


def _reserved_event_error(event: str) -> dict:
    return {"ok": False, "error": {"code": "invalid-request", "message": f"unknown event {event!r}"}}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
