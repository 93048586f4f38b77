"""Supervision: how the Directory notices dead actors and sets the healing in motion.

Ray restarts a killed actor (``max_restarts``): its handle stays valid, its state is gone. The
Directory watches every registered actor's state in the GCS (``NumRestarts`` and ``State``; a
lookup is ~1 ms and sees a SIGKILL within ~0.1 s, design/ray.md §5) every ``watch_interval_s``,
and its load poll also compares each worker's pid. What it does on a change:

* **media worker** restarted or dead: stop placing on it, tell every room host
  (``worker_lost``: the rooms with a router there re-create it on a live worker and send
  ``media-reset`` to the participants whose media was there). A restarted worker is placed on again
  once it answers ``load()``; one that Ray gave up on (``max_restarts`` exceeded: a crash loop) is
  dropped for good with an ERROR log line.
* **room host** restarted: its rooms are forgotten (the host cleans its old routers off the
  workers itself) and every signaling actor is told (``host_reset``): they send ``room-reset`` to
  the sockets that were in those rooms, and the clients join again.
* **signaling** restarted: counted (the restarted actor drops its old sockets' participants and
  listens again on the same port by itself).

The Directory itself, restarted, rebuilds its registry from the named actors of its application
(:meth:`DirectorySupervision.rebuild`). Counters of restarts and resets feed ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from .hop import call

logger = logging.getLogger("studyrooms.actors.supervision")

KINDS = ("media-worker", "room-host", "signaling", "directory")


#: rounds of the directory's rebuild over the actors that did not answer (5, 10, 15 s timeouts)
REBUILD_ATTEMPTS = 3


def front_info(info: dict) -> dict:
    """A signaling front's registry info (``node``, ``port``, ``url``) from its ``info()``."""
    host = str(info.get("host") or "127.0.0.1")
    host = f"[{host}]" if ":" in host else host
    return {"node": info.get("node"), "port": info.get("port"), "url": f"http://{host}:{info.get('port')}/"}


def actor_id_of(handle: Any) -> str | None:
    try:
        return handle._actor_id.hex()
    except Exception:  # noqa: BLE001 - a plain object (unit tests)
        return None


def gcs_states(actor_ids: list[str]) -> dict[str, tuple[str, int]]:
    """``{actor_id: (State, NumRestarts)}`` from the GCS (blocking: run it in a thread)."""
    from ray._private import state  # DeveloperAPI; pinned ray (pyproject)

    out: dict[str, tuple[str, int]] = {}
    for actor_id in actor_ids:
        try:
            info = state.actors(actor_id=actor_id)
        except Exception:  # noqa: BLE001 - GCS briefly unavailable: try next tick
            continue
        if info:
            out[actor_id] = (str(info.get("State", "")), int(info.get("NumRestarts", 0) or 0))
    return out


def _kv(op: str, counts: dict | None = None) -> dict | None:
    """The directory's reset counters in Ray's GCS key-value store (per application name)."""
    import json

    try:
        from ray.experimental import internal_kv

        key = f"studyrooms-healing:{ray.get_runtime_context().get_actor_name()}".encode()
        if op == "put":
            internal_kv._internal_kv_put(key, json.dumps(counts).encode(), True)
            return None
        raw = internal_kv._internal_kv_get(key)
        return json.loads(raw) if raw else None
    except Exception:  # noqa: BLE001 - outside Ray (unit tests): counters stay in memory
        return None


def was_restarted() -> bool:
    """True inside an actor process that Ray re-created after a failure."""
    try:  # (RuntimeContext.was_current_actor_reconstructed logs a deprecation warning in 2.60)
        actor_id = ray.get_runtime_context().get_actor_id()
    except Exception:  # noqa: BLE001 - outside Ray
        return False
    if not actor_id:
        return False
    return gcs_states([actor_id]).get(actor_id, ("", 0))[1] > 0


#: how long a restarted actor keeps trying to call its own start method (``call_self_later``)
SELF_CALL_WINDOW_S = 30.0


def call_self_later(method: str, *args: Any, window_s: float = SELF_CALL_WINDOW_S) -> None:
    """From ``__init__`` of a restarted actor: call one of its own (idempotent) methods, e.g.
    ``start``, so it comes back without anyone calling it (``__init__`` has no event loop to start a
    task on). A call submitted while Ray still counts the actor as restarting can fail at once
    (``ActorUnavailableError``): a daemon thread retries until the call went through, for at most
    ``window_s`` seconds."""
    import threading

    try:
        bound = getattr(ray.get_runtime_context().current_actor, method)
    except Exception:  # noqa: BLE001
        logger.exception("could not schedule %s on the restarted actor", method)
        return

    def run() -> None:
        deadline = time.monotonic() + window_s
        attempt = 0
        while True:
            attempt += 1
            try:
                # (a concurrent future: ray.get in an async actor's process warns about blocking its loop)
                bound.remote(*args).future().result(timeout=max(1.0, deadline - time.monotonic()))
                if attempt > 1:
                    logger.info("restarted actor: %s ran on attempt %d", method, attempt)
                return
            except Exception as exc:  # noqa: BLE001 - not yet reachable, or the method failed: again
                if time.monotonic() + 0.3 > deadline:
                    logger.error("restarted actor: %s did not run within %.0f s (%d attempts; last: %r)",
                                 method, window_s, attempt, exc)
                    return
                time.sleep(0.3)

    threading.Thread(target=run, name=f"studyrooms-self-{method}", daemon=True).start()


class DirectorySupervision:
    """Mixed into :class:`actors.directory.Directory` (uses its ``workers``, ``hosts``, ... )."""

    watch_interval_s: float = 0.25

    def _init_supervision(self, watch_interval_s: float) -> None:
        self.watch_interval_s = watch_interval_s
        self.given_up: list[str] = []
        self.counts: dict[str, Any] = {"restarts": dict.fromkeys(KINDS, 0), "mediaResets": 0, "roomResets": 0,
                                       "workersGivenUp": 0}
        self._watch_task: asyncio.Task | None = None
        self._side_tasks: set[asyncio.Task] = set()
        self._restarts_seen: dict[str, int] = {}  # actor id -> NumRestarts already handled
        self._reviving: set[str] = set()
        self._restarts_logged: dict[str, int] = {}
        self._rebuilt: asyncio.Event | None = None
        self._rebuilding = was_restarted()
        if self._rebuilding:
            call_self_later("rebuild")

    # ------------------------------------------------------------------ restart of the directory
    async def _wait_rebuilt(self) -> None:
        if not self._rebuilding:
            return
        if self._rebuilt is None:
            self._rebuilt = asyncio.Event()
        try:
            await asyncio.wait_for(self._rebuilt.wait(), 10.0)
        except asyncio.TimeoutError:
            logger.warning("directory: rebuild still running after 10 s; answering from what is known")

    async def rebuild(self) -> dict:
        """After a restart: re-register the application's named actors (workers, hosts, signaling)
        and the rooms the hosts hold, then resume the health poll and the watch."""
        if not self._rebuilding:
            return {"rebuilt": False}
        t0 = time.monotonic()
        try:
            ctx = ray.get_runtime_context()
            name = ctx.get_actor_name() or ""
            prefix = name.rsplit(":", 1)[0]
            names = await asyncio.to_thread(ray.util.list_named_actors)
            own = sorted(n for n in names if isinstance(n, str) and n.startswith(prefix + ":") and n != name)
            for attempt in range(REBUILD_ATTEMPTS):  # a loaded machine may miss a timeout: ask again
                own = [n for n in own if not await self._register_named(prefix, n, timeout_s=5.0 * (attempt + 1))]
                if not own:
                    break
            if own:
                logger.error("directory rebuild: %s not registered after %d attempts", ", ".join(own), REBUILD_ATTEMPTS)
            saved = await asyncio.to_thread(_kv, "get") or {}
            for key in ("mediaResets", "roomResets", "workersGivenUp"):
                self.counts[key] = int(saved.get(key, 0))
            ids = {e.actor_id: "media-worker" for e in self.workers.values()}
            ids.update({e.actor_id: "room-host" for e in self.hosts.values()})
            ids.update({e.actor_id: "signaling" for e in self.fronts.values()})
            ids[ctx.get_actor_id()] = "directory"
            for actor_id, (_, restarts) in (await asyncio.to_thread(gcs_states, [i for i in ids if i])).items():
                self.counts["restarts"][ids[actor_id]] += restarts  # restarts over the actors' lifetimes
                self._restarts_seen[actor_id] = restarts
            logger.warning("directory restarted: rebuilt in %.2f s (%d workers, %d room hosts, %d rooms, %d fronts)",
                           time.monotonic() - t0, len(self.workers), len(self.hosts), len(self.room_host),
                           len(self.fronts))
        finally:
            self._rebuilding = False
            if self._rebuilt is None:
                self._rebuilt = asyncio.Event()
            self._rebuilt.set()
            self._start_health()
        return {"rebuilt": True, "workers": len(self.workers), "hosts": len(self.hosts)}

    async def _register_named(self, prefix: str, actor_name: str, timeout_s: float) -> bool:
        """Register one of the application's named actors again (rebuild); False when it did not
        answer in time (it is asked again) or is gone."""
        kind = actor_name[len(prefix) + 1:]
        try:
            handle = await asyncio.to_thread(ray.get_actor, actor_name)
            if kind.startswith("media-"):
                info = await call(handle.info.remote(), what=actor_name, timeout_s=timeout_s)
                await self.register_worker(info["workerId"], handle, info)
            elif kind.startswith("room-host-"):
                held = await call(handle.rooms_held.remote(), what=actor_name, timeout_s=timeout_s)
                await self.register_host(held["hostId"], handle, held)
                for room_id, worker_ids in held.get("rooms", {}).items():
                    self.room_host[room_id] = held["hostId"]
                    self.hosts[held["hostId"]].rooms.add(room_id)
                    self.room_routers[room_id] = {w: 1 for w in worker_ids}
            elif kind.startswith("signaling-"):
                info = await call(handle.info.remote(), what=actor_name, timeout_s=timeout_s)
                await self.register_front(actor_name, handle, front_info(info))
            return True
        except ValueError:  # no such actor any more (ray.get_actor): nothing to register
            return True
        except Exception as exc:  # noqa: BLE001 - asked again by the caller
            logger.warning("directory rebuild: %s not registered yet: %r", actor_name, exc)
            return False

    # ------------------------------------------------------------------ counters and health
    async def record(self, what: str, n: int = 1) -> None:
        """A room host counts ``mediaResets``, a signaling actor ``roomResets`` (kept in Ray's GCS
        key-value store too, so a restarted directory keeps counting from there)."""
        if what in ("mediaResets", "roomResets"):
            self.counts[what] += int(n)
            await asyncio.to_thread(_kv, "put", self.counts)

    async def healing(self) -> dict:
        await self._wait_rebuilt()
        return {**self.counts, "restarts": dict(self.counts["restarts"]), "givenUp": list(self.given_up),
                "down": sorted(w for w, e in self.workers.items() if e.down)}

    async def health(self) -> dict:
        """``{"status": "ok" | "degraded", "reasons": [...]}``: degraded while an actor is restarting
        or missing (a worker given up on is reported but leaves the service ok if others remain)."""
        await self._wait_rebuilt()
        reasons = [f"media worker {w} is restarting" for w, e in sorted(self.workers.items()) if e.down]
        if not any(not e.down for e in self.workers.values()):
            reasons.append("no media worker available")
        if not self.hosts:
            reasons.append("no room host available")
        reasons.extend(f"room host {h} is restarting" for h, e in sorted(self.hosts.items()) if e.down)
        out: dict = {"status": "degraded" if reasons else "ok", "reasons": reasons}
        if self.given_up:
            out["givenUp"] = list(self.given_up)
        return out

    # ------------------------------------------------------------------ the watch
    def _start_watch(self) -> None:
        if self._watch_task is None and self.watch_interval_s > 0 and getattr(self, "health_interval_s", 1) > 0:
            try:
                self._watch_task = asyncio.get_running_loop().create_task(self._watch_loop())
            except RuntimeError:  # no loop (plain unit test)
                pass

    async def _watch_loop(self) -> None:
        while True:
            try:
                await self.watch_once()
            except Exception:  # noqa: BLE001 - the watch must go on
                logger.exception("actor watch failed")
            await asyncio.sleep(self.watch_interval_s)

    async def watch_once(self) -> None:
        targets: dict[str, tuple[str, str]] = {}
        for wid, e in self.workers.items():
            if e.actor_id:
                targets[e.actor_id] = ("media-worker", wid)
        for hid, e in self.hosts.items():
            if e.actor_id:
                targets[e.actor_id] = ("room-host", hid)
        for route, e in self.fronts.items():
            if e.actor_id:
                targets[e.actor_id] = ("signaling", route)
        if not targets:
            return
        states = await asyncio.to_thread(gcs_states, list(targets))
        for actor_id, (state, restarts) in states.items():
            kind, name = targets[actor_id]
            seen = self._restarts_seen.setdefault(actor_id, restarts)
            if restarts > seen or state in ("RESTARTING", "DEAD"):
                if restarts > seen:
                    self._restarts_seen[actor_id] = restarts
                    self.counts["restarts"][kind] += restarts - seen
                await self._on_actor_failure(kind, name, state, restarts)
            elif kind == "media-worker" and state == "ALIVE":
                entry = self.workers.get(name)
                if entry is not None and entry.down and name not in self._reviving:
                    self._reviving.add(name)
                    self._spawn(lambda n=name, h=entry.handle: self._revive(n, h))

    async def _revive(self, worker_id: str, handle: Any) -> None:
        """A restarted worker is ALIVE again: once its fresh Worker answers, place on it again."""
        try:
            load = await call(handle.load.remote(), what=f"media worker {worker_id}", timeout_s=5.0)
            if load.get("started"):
                await self.worker_back(worker_id, load)
        finally:
            self._reviving.discard(worker_id)

    async def _on_actor_failure(self, kind: str, name: str, state: str, restarts: int) -> None:
        if kind == "media-worker":
            entry = self.workers.get(name)
            if entry is None:
                return
            if state == "DEAD":
                await self.give_up_worker(name, f"Ray gave up after {restarts} restart(s)")
            elif entry.incarnation_lost < restarts or not entry.down:
                entry.incarnation_lost = max(entry.incarnation_lost, restarts)
                await self.worker_lost(name, f"media worker {name} died ({state.lower()}, restart {restarts})")
        elif kind == "room-host":
            entry = self.hosts.get(name)
            if entry is None:
                return
            if state == "DEAD":
                logger.error("room host %s is dead (Ray gave up after %d restarts); its rooms are lost", name, restarts)
                await self._host_reset(name, "room host gave up")
                await self.unregister_host(name)
            elif entry.restarts_handled < restarts:
                entry.restarts_handled = restarts
                entry.down = True
                logger.warning("room host %s died (restart %d): its rooms are reset once it answers again",
                               name, restarts)
                self._spawn(lambda: self._reset_when_back(name))
        elif kind == "signaling" and state != "DEAD" and self._restarts_logged.get(name, 0) < restarts:
            self._restarts_logged[name] = restarts
            logger.warning("signaling actor %s died (%s, restart %d): it listens again on its port and "
                           "its clients reconnect", name, state.lower(), restarts)
            self._spawn(lambda: self._relisten_when_back(name))
        elif kind == "signaling" and state == "DEAD":
            logger.error("signaling actor %s is dead (Ray gave up after %d restarts)", name, restarts)

    # ------------------------------------------------------------------ reactions
    async def worker_lost(self, worker_id: str, reason: str) -> None:
        """A worker's process (and every object in it) is gone: no placement on it until it answers
        again; rooms with a router there heal (room hosts' ``worker_lost``)."""
        entry = self.workers.get(worker_id)
        if entry is None:
            return
        first = not entry.down
        entry.down, entry.down_since = True, time.monotonic()
        entry.router_count = entry.consumer_count = entry.transport_count = 0
        for routers in self.room_routers.values():  # the rooms keep their host; new routers follow
            routers.pop(worker_id, None)
        if first:
            logger.warning("%s: no placement on it until it is back; rooms with a router there heal", reason)
        self._tell_hosts("worker_lost", worker_id, reason)

    async def give_up_worker(self, worker_id: str, why: str) -> None:
        entry = self.workers.pop(worker_id, None)
        if entry is None:
            return
        self.given_up.append(worker_id)
        self.counts["workersGivenUp"] += 1
        for routers in self.room_routers.values():
            routers.pop(worker_id, None)
        logger.error("media worker %s given up (crash loop: %s); its rooms move to the other workers (%d left)",
                     worker_id, why, len(self.workers))
        await asyncio.to_thread(_kv, "put", self.counts)
        self._tell_hosts("worker_lost", worker_id, f"media worker {worker_id} given up")

    async def worker_back(self, worker_id: str, load: dict) -> None:
        entry = self.workers.get(worker_id)
        if entry is None or not entry.down:
            return
        entry.down = False
        entry.pid = load.get("pid", entry.pid)
        logger.warning("media worker %s is back (pid %s) after %.1f s: placement uses it again",
                       worker_id, entry.pid, time.monotonic() - entry.down_since)

    async def _host_reset(self, host_id: str, reason: str) -> None:
        entry = self.hosts.get(host_id)
        rooms = sorted(entry.rooms) if entry else []
        for room_id in rooms:
            self.room_host.pop(room_id, None)
            self.room_routers.pop(room_id, None)
        if entry:
            entry.rooms.clear()
        for route, e in list(self.fronts.items()):
            self._spawn(lambda h=e.handle, r=route: call(h.host_reset.remote(host_id, reason),
                                                         what=f"signaling {r}", timeout_s=10))

    async def _relisten_when_back(self, route: str, wait_s: float = 30.0) -> None:
        """A restarted front listens again by itself (its constructor queues ``restart``); this makes
        sure of it: once the new process answers, ``restart`` is called (idempotent: it returns the
        port at once when already listening), so a constructor that missed its restart, or a restart
        that failed, still ends with the front listening on its port."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            entry = self.fronts.get(route)
            if entry is None:
                return
            try:
                port = await call(entry.handle.restart.remote(), what=f"signaling {route}", timeout_s=15.0)
            except Exception as exc:  # noqa: BLE001 - still restarting, or the bind failed: try again
                logger.info("signaling %s not listening again yet (%s)", route, exc)
                await asyncio.sleep(0.5)
                continue
            if port:
                logger.info("signaling %s listens again on port %s", route, port)
                return
            await asyncio.sleep(0.5)
        logger.error("signaling %s did not listen again within %.0f s of its restart", route, wait_s)

    async def _reset_when_back(self, host_id: str, wait_s: float = 20.0) -> None:
        """Room-reset the restarted host's rooms once it answers (the clients' joins then succeed)."""
        deadline = time.monotonic() + wait_s
        entry = self.hosts.get(host_id)
        while entry is not None and time.monotonic() < deadline:
            try:
                await call(entry.handle.rooms_held.remote(), what=f"room host {host_id}", timeout_s=2.0)
                break
            except Exception:  # noqa: BLE001 - still restarting
                await asyncio.sleep(0.1)
        if entry is not None:
            entry.down = False
        await self._host_reset(host_id, f"room host {host_id} restarted")

    def _tell_hosts(self, method: str, *args: Any) -> None:
        for host_id, host in list(self.hosts.items()):
            self._spawn(lambda h=host.handle, i=host_id: call(getattr(h, method).remote(*args),
                                                              what=f"room host {i}", timeout_s=30))

    def _spawn(self, make: Any) -> None:
        """Run ``make()`` (a coroutine factory) in the background; failures are logged."""
        async def guarded() -> None:
            try:
                await make()
            except Exception as exc:  # noqa: BLE001
                logger.warning("directory: notification failed: %r", exc)

        task = asyncio.get_running_loop().create_task(guarded())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
