"""Telemetry: the OpenTelemetry SDK, exporters and metrics collection (the library uses the API only).

* :func:`setup_telemetry` installs, once per process, a ``TracerProvider`` and a ``MeterProvider``:
  - traces: OTLP/HTTP when the standard variables ask for it (``OTEL_TRACES_EXPORTER=otlp`` or an
    ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``), a JSON-lines file per process when
    ``STUDYROOMS_SPANS_DIR`` is set, and any exporter a caller passes (tests: in-memory);
  - metrics: a Prometheus reader (served by the signaling server's ``GET /metrics``) and OTLP/HTTP
    when ``OTEL_METRICS_EXPORTER=otlp`` or an OTLP endpoint is set. ``OTEL_SDK_DISABLED=true`` turns
    it all off. ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` name the resource.
* :class:`MetricsHub` (one per process) registers observable instruments once; their callbacks read
  the last snapshot of the registered *sources* (``async () -> {"rooms": [...], "workers": [...]}``),
  refreshed right before each scrape. The media plane only keeps plain int counters:
  :func:`worker_telemetry` sums them per media worker, in that worker's process, per scrape (the
  live entities plus the final values of every closed one: ``Worker.traffic_totals()``).
* :func:`configure_logging` (the server's processes are set up by actors/logs.py first):
  ``STUDYROOMS_LOG_FORMAT=json`` prints one JSON object per record with
  the room/participant/transport ids and trace ids bound by ``studyrooms.observability``;
  ``STUDYROOMS_DEBUG_TAGS=ice,dtls,rtp`` enables mediasoup-like debug tags.

This module does not import Ray at module level (standalone servers and tests use it too).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import threading
import time
import weakref
from typing import Any, Awaitable, Callable, Iterable, Sequence

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from studyrooms import observability as obs

logger = logging.getLogger("studyrooms.telemetry")

#: environment variables forwarded to actors (runtime_env) so every process exports the same way
FORWARDED_ENV_PREFIXES = ("OTEL_", "STUDYROOMS_SPANS_DIR", "STUDYROOMS_LOG_FORMAT", "STUDYROOMS_LOG_LEVEL",
                          "STUDYROOMS_DEBUG_TAGS")

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"tracer_provider": None, "meter_provider": None, "prometheus": False, "component": None}


# ------------------------------------------------------------------------------------------ SDK setup
def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _otlp_wanted(signal: str, env: dict | None = None) -> bool:
    """Standard OTEL_* semantics: OTEL_<SIGNAL>_EXPORTER lists 'otlp', or an OTLP endpoint is set
    (and the exporter is not explicitly 'none')."""
    env = os.environ if env is None else env
    chosen = env.get(f"OTEL_{signal}_EXPORTER", "")
    names = {n.strip().lower() for n in chosen.split(",") if n.strip()}
    if "none" in names:
        return False
    if "otlp" in names:
        return True
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))


#: start_app's default RoomHost service factory: the plain one, with the SDK installed first
TRACED_SERVICE_FACTORY = "actors.telemetry:create_room_service"


def actor_options(env: dict | None = None) -> dict:
    """Extra actor options forwarding this driver's telemetry variables (``OTEL_*``,
    ``STUDYROOMS_SPANS_DIR``, ...) to the actor's process; ``{}`` when none is set."""
    forwarded = telemetry_env(env)
    return {"runtime_env": {"env_vars": forwarded}} if forwarded else {}


def telemetry_env(env: dict | None = None) -> dict[str, str]:
    """The telemetry variables of this process, to forward to actors (``runtime_env.env_vars``)."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


class JsonLinesSpanExporter:
    """Appends finished spans as JSON lines to one file (debugging, multi-process tests)."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = []
        for span in spans:
            ctx = span.get_span_context()
            lines.append(json.dumps({
                "name": span.name,
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
                "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
                "kind": str(span.kind).rsplit(".", 1)[-1],
                "start_ns": span.start_time, "end_ns": span.end_time,
                "attributes": {k: v for k, v in (span.attributes or {}).items()},
                "status": str(span.status.status_code).rsplit(".", 1)[-1],
                "component": (span.resource.attributes or {}).get("studyrooms.component"),
                "pid": os.getpid(),
            }, default=str))
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def setup_telemetry(component: str, *, prometheus: bool = True, span_exporter: Any = None,
                    metric_readers: Iterable[Any] = ()) -> bool:
    """Install the SDK in this process (first call wins; later calls may add a span exporter).

    ``component`` names the process kind (signaling, room-host, media-worker, loadgen, standalone).
    Returns False when ``OTEL_SDK_DISABLED`` is set."""
    if _truthy(os.environ.get("OTEL_SDK_DISABLED")):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    with _LOCK:
        provider = _STATE["tracer_provider"]
        if provider is None:
            resource_ = Resource.create({
                "service.name": os.environ.get("OTEL_SERVICE_NAME", "studyrooms"),
                "studyrooms.component": component,
                "process.pid": os.getpid(),
            })
            provider = TracerProvider(resource=resource_)
            if _otlp_wanted("TRACES"):
                try:
                    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
                except Exception:  # noqa: BLE001 - telemetry must never stop the server
                    logger.exception("OTLP span exporter not available")
            spans_dir = os.environ.get("STUDYROOMS_SPANS_DIR")
            if spans_dir:
                path = os.path.join(spans_dir, f"spans-{component}-{os.getpid()}.jsonl")
                provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
            current = trace.get_tracer_provider()
            if hasattr(current, "add_span_processor"):  # someone installed an SDK provider already
                provider = current
            else:
                trace.set_tracer_provider(provider)
            _STATE["tracer_provider"] = provider
            _STATE["component"] = component
            readers = list(metric_readers)
            if prometheus:
                from opentelemetry.exporter.prometheus import PrometheusMetricReader

                readers.append(PrometheusMetricReader())
            if _otlp_wanted("METRICS"):
                try:
                    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
                    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

                    readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
                except Exception:  # noqa: BLE001
                    logger.exception("OTLP metric exporter not available")
            from opentelemetry.sdk.metrics import MeterProvider

            current_meter = metrics.get_meter_provider()
            if hasattr(current_meter, "force_flush") and not readers:
                _STATE["meter_provider"] = current_meter
            elif not hasattr(current_meter, "force_flush"):
                meter_provider = MeterProvider(metric_readers=readers, resource=resource_)
                metrics.set_meter_provider(meter_provider)
                _STATE["meter_provider"] = meter_provider
                _STATE["prometheus"] = prometheus
            else:
                _STATE["meter_provider"] = current_meter
        if span_exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    configure_logging()
    return True


def in_ray_actor() -> bool:
    """True inside a Ray actor process (actors install the SDK only there: a plain object used in a
    test process must not install a global provider for the whole test session)."""
    try:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    except Exception:  # noqa: BLE001
        return False


def setup_actor_telemetry(component: str, *, prometheus: bool = False) -> bool:
    """:func:`setup_telemetry` when running in a Ray actor; a no-op elsewhere."""
    return setup_telemetry(component, prometheus=prometheus) if in_ray_actor() else False


def prometheus_enabled() -> bool:
    return bool(_STATE["prometheus"])


# ------------------------------------------------------------------------------------------ logging
class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger (tag), message, ids, trace/span ids."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
            **getattr(record, "ids", {}),
        }
        if getattr(record, "trace_id", ""):
            out["trace_id"] = record.trace_id
            out["span_id"] = record.span_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


_CONTEXT_FILTER = obs.ContextFilter()


def configure_logging(level: str | None = None) -> None:
    """Attach the id/trace context filter to the root handlers; JSON output with
    ``STUDYROOMS_LOG_FORMAT=json``; debug tags from ``STUDYROOMS_DEBUG_TAGS``."""
    root = logging.getLogger()
    if level:
        root.setLevel(level.upper())
    json_format = os.environ.get("STUDYROOMS_LOG_FORMAT", "").lower() == "json"
    if json_format and not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        if _CONTEXT_FILTER not in handler.filters:
            handler.addFilter(_CONTEXT_FILTER)
        if json_format and not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())
    tags = obs.enable_debug_tags(os.environ.get("STUDYROOMS_DEBUG_TAGS"))
    if tags and root.level > logging.DEBUG:
        for handler in root.handlers:
            handler.setLevel(logging.DEBUG)
        if root.level == logging.WARNING:  # library default: let INFO through too
            root.setLevel(logging.INFO)


# ------------------------------------------------------------------------------------------ worker counters
class _WorkerTally:
    """Per worker: the CPU mark of the previous scrape (utilization since then)."""

    def __init__(self) -> None:
        self.cpu_mark = (time.monotonic(), _cpu_seconds())


_TALLIES: "weakref.WeakKeyDictionary[Any, _WorkerTally]" = weakref.WeakKeyDictionary()  # per Worker object


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker_telemetry(worker: Any) -> dict:
    """Counters of one studyrooms ``Worker`` (call in its process, per scrape, never per packet)."""
    tally = _TALLIES.get(worker)
    if tally is None:
        tally = _TALLIES[worker] = _WorkerTally()
    # downlink (transports with a bandwidth allocator): estimates, probing, what was cut
    estimates = []
    probing = paused = reduced = 0
    for t in list(worker.transports.values()):
        alloc = getattr(t, "allocator", None)
        if alloc is None or t.closed:
            continue
        estimates.append(t.bwe.available_bitrate_bps())
        probing += bool(t.bwe.probing)
        for d in list(alloc.decisions.values()):
            paused += d["reason"] in ("paused-bandwidth", "not-forwardable")
            reduced += d["reason"] in ("bandwidth", "upgrade-hold", "stepping-up")
    kinds: dict[str, int] = {}
    for p in list(worker.producers.values()):
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    # live entities + every closed one's final values (the Worker folds them in when they close)
    totals = worker.traffic_totals()
    now, cpu = time.monotonic(), _cpu_seconds()
    wall0, cpu0 = tally.cpu_mark
    tally.cpu_mark = (now, cpu)
    measured = getattr(worker, "cpu_utilization", None)  # one source with /api/stats and admission
    utilization = measured() if callable(measured) else (cpu - cpu0) / (now - wall0) if now - wall0 > 0.05 else None
    return {
        "workerId": worker.id,
        "pid": os.getpid(),
        "routers": len(worker.routers),
        "transports": len(worker.transports),
        "producers": kinds,
        "consumers": len(worker.consumers),
        **totals,
        "cpu_seconds": cpu,
        "cpu_utilization": utilization,
        "rss_bytes": _rss_bytes(),
        "downlink_estimate_min": min(estimates) if estimates else 0,
        "downlink_estimate_mean": int(sum(estimates) / len(estimates)) if estimates else 0,
        "downlink_probing": probing,
        "downlink_paused": paused,
        "downlink_reduced": reduced,
    }


# ------------------------------------------------------------------------------------------ metrics hub
Source = Callable[[], Awaitable[dict]]


class MetricsHub:
    """Observable instruments (registered once per process) over pluggable snapshot sources."""

    _instance: "MetricsHub | None" = None

    def __init__(self) -> None:
        self.sources: dict[str, Source] = {}
        self.snapshots: dict[str, dict] = {}
        self._util: dict[str, float] = {}
        m = obs.meter()
        gauge = m.create_observable_gauge
        counter = m.create_observable_counter
        gauge("studyrooms.rooms", [self._rooms], description="open rooms")
        gauge("studyrooms.participants", [self._participants], description="participants in rooms")
        gauge("studyrooms.workers", [self._workers], description="media workers reporting")
        gauge("studyrooms.transports", [self._per_worker("transports")], description="transports per worker")
        gauge("studyrooms.consumers", [self._per_worker("consumers")], description="consumers per worker")
        gauge("studyrooms.producers", [self._producers], description="producers per worker and kind")
        gauge("studyrooms.worker.cpu.utilization", [self._utilization],
              description="media worker process CPU, fraction of one core since the previous scrape")
        gauge("studyrooms.worker.memory.rss", [self._per_worker("rss_bytes")], unit="By",
              description="media worker process resident memory")
        counter("studyrooms.worker.cpu.time", [self._per_worker("cpu_seconds")], unit="s",
                description="media worker process CPU time (user + system)")
        counter("studyrooms.rtp.packets", [self._directional("rx_rtp", "tx_rtp")],
                description="RTP packets received from / sent to clients")
        counter("studyrooms.rtp.bytes", [self._directional("rx_bytes", "tx_bytes")], unit="By",
                description="RTP bytes received from / sent to clients")
        counter("studyrooms.rtcp.packets", [self._directional("rx_rtcp", "tx_rtcp")],
                description="RTCP packets received / sent")
        counter("studyrooms.rtcp.nacks", [self._directional("nacks_received", "nacks_sent", "received", "sent")],
                description="NACKs received from consumers / sent to producers")
        counter("studyrooms.rtcp.plis", [self._directional("plis_received", "keyframe_requests_sent",
                                                           "received", "sent")],
                description="PLIs received from consumers / keyframe requests sent to producers")
        counter("studyrooms.rtcp.firs", [self._per_worker("firs_received")], description="FIRs received")
        gauge("studyrooms.downlink.estimate", [self._directional("downlink_estimate_min", "downlink_estimate_mean",
                                                                 "min", "mean")],
              description="receivers' downlink estimates in bit/s (transport-cc, else REMB): lowest and mean per worker")
        gauge("studyrooms.downlink.probing", [self._per_worker("downlink_probing")],
              description="receive transports sending a bandwidth probe now")
        gauge("studyrooms.downlink.video.paused", [self._per_worker("downlink_paused")],
              description="video consumers paused by their receiver's bandwidth allocator")
        gauge("studyrooms.downlink.video.reduced", [self._per_worker("downlink_reduced")],
              description="video consumers below their best layer for lack of bandwidth")
        counter("studyrooms.downlink.probes", [self._per_worker("probe_clusters")],
                description="bandwidth probe clusters sent")
        counter("studyrooms.downlink.feedback", [self._per_worker("twcc_feedback")],
                description="transport-cc feedback packets received from receivers")
        counter("studyrooms.rtp.packets.lost", [self._directional("lost_in", "lost_out")],
                description="packets lost: in = missing from producers' streams (seen by the SFU), "
                            "out = reported lost by consumers' receiver reports")
        # healing (actors/supervision.py): restarts seen by the directory, resets sent to clients
        counter("studyrooms.actor.restarts", [self._restarts], description="actor restarts after a crash, by kind")
        counter("studyrooms.media.resets", [self._healing("mediaResets")],
                description="media-reset notifications (participants whose media worker died)")
        counter("studyrooms.room.resets", [self._healing("roomResets")],
                description="room-reset notifications (sockets whose room host restarted)")
        gauge("studyrooms.workers.given_up", [self._healing("workersGivenUp")],
              description="media workers given up after too many restarts (crash loop)")

    @classmethod
    def get(cls) -> "MetricsHub":
        if cls._instance is None:
            cls._instance = MetricsHub()
        return cls._instance

    # --- sources ---
    def add_source(self, name: str, source: Source) -> None:
        self.sources[name] = source

    def remove_source(self, name: str) -> None:
        self.sources.pop(name, None)
        self.snapshots.pop(name, None)

    async def refresh(self, timeout_s: float = 5.0) -> None:
        async def one(name: str, source: Source) -> None:
            try:
                self.snapshots[name] = await asyncio.wait_for(source(), timeout_s)
            except Exception as exc:  # noqa: BLE001 - a scrape shows what it can
                logger.warning("metrics source %s failed: %r", name, exc)

        await asyncio.gather(*(one(n, s) for n, s in list(self.sources.items())))

    async def render(self) -> tuple[bytes, str]:
        """Refresh the snapshots, then the Prometheus text exposition (``GET /metrics``)."""
        await self.refresh()
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        return await asyncio.to_thread(generate_latest, REGISTRY), CONTENT_TYPE_LATEST

    # --- callbacks (read the last snapshots; never block) ---
    def _healing_snapshots(self) -> list[dict]:
        return [snap["healing"] for snap in list(self.snapshots.values()) if isinstance(snap.get("healing"), dict)]

    def _restarts(self, options: CallbackOptions) -> list[Observation]:
        totals: dict[str, int] = {}
        for healing in self._healing_snapshots():
            for kind, n in (healing.get("restarts") or {}).items():
                totals[kind] = totals.get(kind, 0) + int(n or 0)
        return [Observation(n, {"kind": kind}) for kind, n in sorted(totals.items())]

    def _healing(self, key: str) -> Callable[[CallbackOptions], list[Observation]]:
        def callback(options: CallbackOptions) -> list[Observation]:
            snaps = self._healing_snapshots()
            return [Observation(sum(int(h.get(key, 0) or 0) for h in snaps))] if snaps else []

        return callback

    def _all_workers(self) -> list[dict]:
        out = []
        for snap in list(self.snapshots.values()):
            out.extend(w for w in snap.get("workers", []) if isinstance(w, dict) and w.get("workerId"))
        return out

    def _all_rooms(self) -> list[dict]:
        out = []
        for snap in list(self.snapshots.values()):
            out.extend(r for r in snap.get("rooms", []) if isinstance(r, dict))
        return out

    def _rooms(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(len(self._all_rooms()))]

    def _participants(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(sum(int(r.get("participantCount", 0)) for r in self._all_rooms()))]

    def _workers(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(len(self._all_workers()))]

    def _per_worker(self, key: str) -> Callable[[CallbackOptions], list[Observation]]:
        def callback(options: CallbackOptions) -> list[Observation]:
            return [Observation(w.get(key, 0) or 0, {"worker": w["workerId"]}) for w in self._all_workers()]

        return callback

    def _producers(self, options: CallbackOptions) -> list[Observation]:
        out = []
        for w in self._all_workers():
            for kind in ("audio", "video"):
                out.append(Observation(int((w.get("producers") or {}).get(kind, 0)),
                                       {"worker": w["workerId"], "kind": kind}))
        return out

    def _utilization(self, options: CallbackOptions) -> list[Observation]:
        out = []
        for w in self._all_workers():
            value = w.get("cpu_utilization")
            if value is None:
                value = self._util.get(w["workerId"], 0.0)
            self._util[w["workerId"]] = value
            out.append(Observation(round(float(value), 4), {"worker": w["workerId"]}))
        return out

    def _directional(self, in_key: str, out_key: str, in_name: str = "in",
                     out_name: str = "out") -> Callable[[CallbackOptions], list[Observation]]:
        def callback(options: CallbackOptions) -> list[Observation]:
            out = []
            for w in self._all_workers():
                out.append(Observation(int(w.get(in_key, 0) or 0), {"worker": w["workerId"], "direction": in_name}))
                out.append(Observation(int(w.get(out_key, 0) or 0), {"worker": w["workerId"], "direction": out_name}))
            return out

        return callback


# ------------------------------------------------------------------------------------------ sources
def standalone_source(app: Any) -> Source:
    """Snapshot of a ``studyrooms.standalone.Standalone`` (workers and rooms in this process)."""

    async def snapshot() -> dict:
        return {"workers": [worker_telemetry(w) for w in app.workers if not w.closed],
                "rooms": app.service.stats().get("rooms", [])}

    return snapshot


def attach_standalone(app: Any, name: str = "standalone") -> MetricsHub:
    """Telemetry for a standalone server: SDK in this process, ``GET /metrics`` on its HTTP port."""
    setup_telemetry("standalone")
    hub = MetricsHub.get()
    hub.add_source(name, standalone_source(app))
    app.signaling.metrics_provider = hub.render
    return hub


def ray_source(directory: Any, timeout_s: float = 5.0) -> Source:
    """Snapshot over Ray: every media worker's :func:`worker_telemetry` and every room host's rooms."""
    from .hop import call

    async def snapshot() -> dict:
        workers_h = await call(directory.worker_handles.remote(), what="directory", timeout_s=timeout_s)
        hosts_h = await call(directory.host_handles.remote(), what="directory", timeout_s=timeout_s)

        async def safe(ref: Any, what: str) -> Any:
            try:
                return await call(ref, what=what, timeout_s=timeout_s)
            except Exception as exc:  # noqa: BLE001 - a dead worker is simply absent
                logger.debug("%s: %r", what, exc)
                return None

        workers = await asyncio.gather(*(safe(h.telemetry.remote(), f"media worker {wid}")
                                         for wid, h in workers_h.items()))
        hosts = await asyncio.gather(*(safe(h.stats.remote(), f"room host {hid}") for hid, h in hosts_h.items()))
        rooms: list = []
        for part in hosts:
            if isinstance(part, dict):
                rooms.extend(part.get("rooms", []))
        out = {"workers": [w for w in workers if isinstance(w, dict)], "rooms": rooms}
        healing = await safe(directory.healing.remote(), "directory")
        if isinstance(healing, dict):
            out["healing"] = healing
        return out

    return snapshot


# ------------------------------------------------------------------------------------------ factories
def create_room_service(settings: Any, directory: Any, notifier: Any, host_id: str) -> Any:
    """RoomHost service factory with the SDK installed in the room host's process (start_app default)."""
    from .room_host import create_room_service as plain

    setup_actor_telemetry("room-host")
    return plain(settings, directory, notifier, host_id)
