"""Stand-ins for the media worker, the room service and the signaling server, for actor tests
that must not depend on the media stack. Pickled *by value* into Ray workers (this module is not
importable there), so keep it self-contained."""

from __future__ import annotations

import itertools
import sys

import ray.cloudpickle

from studyrooms.errors import InvalidStateError, NotFoundError

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class FakeObserver:
    def __init__(self):
        self.listeners = []

    def on(self, event, cb):
        self.listeners.append(cb)

    def emit(self, name, data):
        for cb in self.listeners:
            cb(name, data)


class FakeWorker:
    def __init__(self, worker_id):
        self.id = worker_id
        self.observer = FakeObserver()
        self.routers = {}
        self.consumers = 0
        self.closed = False

    def get_stats(self):
        return {"workerId": self.id, "routerCount": len(self.routers), "transportCount": 0,
                "producerCount": 0, "consumerCount": self.consumers, "cpu": {"percent": 1.0}}

    async def close(self):
        self.closed = True


class FakeChannel:
    _ids = itertools.count(1)

    def __init__(self, worker):
        self.worker = worker

    async def request(self, method, data):
        w = self.worker
        if method == "create_router":
            router_id = data.get("routerId") or f"r{next(self._ids)}"
            w.routers[router_id] = True
            return {"routerId": router_id, "rtpCapabilities": {"codecs": []}}
        if method == "close_router":
            w.routers.pop(data["routerId"], None)
            return {}
        if method == "get_router_stats":
            if data["routerId"] not in w.routers:
                raise NotFoundError(f"router {data['routerId']} not found")
            return {"routerId": data["routerId"]}
        if method == "fake_consumers":  # test hook: pretend load
            w.consumers = int(data["count"])
            return {}
        if method == "fake_event":  # test hook: the worker emits an event
            w.observer.emit(data["name"], dict(data["data"]))
            return {}
        if method == "boom":
            raise ZeroDivisionError("boom")
        raise InvalidStateError(f"unknown method {method}")


async def fake_worker_factory(worker_id, media_settings, index):
    worker = FakeWorker(worker_id)
    return worker, FakeChannel(worker)


class FakeRoomService:
    """Joins place a router through the directory; events are recorded."""

    def __init__(self, settings, directory, notifier, host_id):
        self.directory = directory
        self.notifier = notifier
        self.host_id = host_id
        self.rooms = {}  # roomId -> (workerId, routerId, {sid: route})
        self.events = []
        self.closed = False

    async def request(self, session, method, data):
        sid = session["sid"]
        if method == "join-room":
            room_id = data["roomId"]
            if room_id not in self.rooms:
                worker_id = await self.directory.place_router(room_id)
                res = await self.directory.worker(worker_id).request("create_router", {})
                self.rooms[room_id] = (worker_id, res["routerId"], {})
            self.rooms[room_id][2][sid] = session["route"]
            session["roomId"] = room_id
            return {"roomId": room_id, "workerId": self.rooms[room_id][0], "hostId": self.host_id,
                    "routerId": self.rooms[room_id][1]}
        room = self.rooms.get(session.get("roomId"))
        if room is None:
            raise InvalidStateError("join a room first")
        if method == "worker":  # forward a raw worker call (error-hop tests)
            return await self.directory.worker(room[0]).request(data["method"], data.get("data", {}))
        if method == "events":
            return list(self.events)
        if method == "notify":
            for other_sid, route in room[2].items():
                await self.notifier.notify(route, other_sid, data["event"], data.get("data", {}))
            return {}
        raise NotFoundError(f"no method {method}")

    async def disconnect(self, session):
        room_id = session.get("roomId")
        room = self.rooms.get(room_id)
        if room is None:
            return
        room[2].pop(session["sid"], None)
        if not room[2]:
            await self.directory.worker(room[0]).request("close_router", {"routerId": room[1]})
            await self.directory.release_router(room_id, room[0])
            del self.rooms[room_id]

    async def on_worker_event(self, name, data):
        self.events.append((name, data))

    def list_rooms(self):
        return [{"roomId": r, "participantCount": len(v[2])} for r, v in self.rooms.items()]

    def stats(self):
        return {"rooms": [{"roomId": r, "participantCount": len(v[2])} for r, v in self.rooms.items()]}

    async def close(self):
        self.closed = True


def fake_service_factory(settings, directory, notifier, host_id):
    return FakeRoomService(settings, directory, notifier, host_id)


class FakeSignalingServer:
    """aiohttp app with /healthz, /api/rooms, /api/stats and a JSON /rpc standing in for Socket.IO."""

    def __init__(self, settings, rooms, route):
        self.rooms = rooms
        self.route = route
        self.delivered = []
        self.runner = None

    async def start(self, host, port):
        from aiohttp import web

        async def healthz(request):
            ok = await self.rooms.ready()
            return web.json_response({"status": "ok" if ok else "starting"}, status=200 if ok else 503)

        async def rooms(request):
            return web.json_response({"rooms": await self.rooms.list_rooms()})

        async def stats(request):
            return web.json_response(await self.rooms.stats())

        async def rpc(request):
            body = await request.json()
            session = {"sid": body["sid"], "route": self.route}
            session.update(body.get("session", {}))
            try:
                if body["method"] == "disconnect":
                    await self.rooms.disconnect(session)
                    return web.json_response({"ok": True, "data": None, "session": session})
                data = await self.rooms.request(session, body["method"], body.get("data", {}))
                return web.json_response({"ok": True, "data": data, "session": session})
            except Exception as exc:  # noqa: BLE001
                return web.json_response({"ok": False, "error": {"code": getattr(exc, "code", "internal"),
                                                                 "type": type(exc).__name__,
                                                                 "message": str(exc)}})

        async def delivered(request):
            return web.json_response(self.delivered)

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/api/rooms", rooms)
        app.router.add_get("/api/stats", stats)
        app.router.add_post("/rpc", rpc)
        app.router.add_get("/delivered", delivered)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    async def deliver(self, sid, event, data):
        self.delivered.append([sid, event, data])

    async def stop(self):
        if self.runner is not None:
            await self.runner.cleanup()


def fake_server_factory(settings, rooms, route):
    return FakeSignalingServer(settings, rooms, route)


FAKES = dict(worker_factory=fake_worker_factory, service_factory=fake_service_factory,
             server_factory=fake_server_factory)
