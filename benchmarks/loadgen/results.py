"""The results folder of a load run (read by notebooks/capacity.ipynb and notebooks/latency.ipynb).

``DIR/<run id>/``:

* ``participants.csv`` one row per synthetic participant: ``room, name, participant_id, ok, error,
  joined_s`` (socket connect -> join-room ack), ``media_ready_s`` (connect -> transports up and
  producing), ``join_s`` (connect -> first remote RTP packet; only meaningful when
  ``remote_at_join`` > 0), ``first_video_s``, ``remote_at_join``, ``sent_packets, sent_bytes,
  recv_packets, recv_bytes, expected, lost, loss_pct, jitter_ms`` (mean over its streams),
  ``latency_p50_ms, latency_p99_ms, latency_samples, srtp_errors``.
* ``streams.csv`` one row per consumed stream: ``room, receiver, from_participant, kind, source,
  packets, bytes, expected, lost, loss_pct, jitter_ms, pps``.
* ``latency.csv`` sampled one-way latencies (sender stamp -> receiver arrival): ``room, receiver,
  latency_ms``.
* ``workers.csv`` per media worker, over the measured window (between two ``/metrics`` scrapes once
  every participant joined): ``worker, window_s, cpu_s, cpu_util, rtp_in, rtp_out, bytes_in,
  bytes_out, pkts_per_cpu_s, rss_bytes, rss_idle_bytes, transports, producers, consumers, nacks_received,
  plis_received, lost_in, lost_out``.
* ``summary.json``: ``run_id, created, machine, versions, parameters`` and ``results`` (aggregates:
  join time p50/p95/max, latency p50/p99, loss, per-core packet rate, CPU per stream, RSS per
  worker, RSS growth over idle per transport and per consumer, load-generator CPU).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PARTICIPANT_FIELDS = ["room", "name", "participant_id", "ok", "error", "joined_s", "media_ready_s", "join_s",
                      "first_video_s", "remote_at_join", "sent_packets", "sent_bytes", "recv_packets", "recv_bytes",
                      "expected", "lost", "loss_pct", "jitter_ms", "latency_p50_ms", "latency_p99_ms",
                      "latency_samples", "srtp_errors"]
STREAM_FIELDS = ["room", "receiver", "from_participant", "kind", "source", "packets", "bytes", "expected", "lost",
                 "loss_pct", "jitter_ms", "pps"]
WORKER_FIELDS = ["worker", "window_s", "cpu_s", "cpu_util", "rtp_in", "rtp_out", "bytes_in", "bytes_out",
                 "pkts_per_cpu_s", "rss_bytes", "rss_idle_bytes", "transports", "producers", "consumers",
                 "nacks_received", "plis_received", "lost_in", "lost_out"]
MAX_LATENCY_ROWS = 200_000


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


# ------------------------------------------------------------------ server metrics (Prometheus text)
def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """``{worker: {metric key: value}}`` plus ``"_server"`` for unlabelled gauges, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    keys = {
        ("studyrooms_worker_cpu_time_seconds_total", None): "cpu_s",
        ("studyrooms_rtp_packets_total", "in"): "rtp_in", ("studyrooms_rtp_packets_total", "out"): "rtp_out",
        ("studyrooms_rtp_bytes_total", "in"): "bytes_in", ("studyrooms_rtp_bytes_total", "out"): "bytes_out",
        ("studyrooms_rtcp_nacks_total", "received"): "nacks_received",
        ("studyrooms_rtcp_plis_total", "received"): "plis_received",
        ("studyrooms_rtp_packets_lost_total", "in"): "lost_in",
        ("studyrooms_rtp_packets_lost_total", "out"): "lost_out",
        ("studyrooms_worker_memory_rss_bytes", None): "rss_bytes",
        ("studyrooms_transports", None): "transports", ("studyrooms_consumers", None): "consumers",
    }
    out: dict[str, dict[str, float]] = {"_server": {}}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            worker = s.labels.get("worker")
            if worker is None:
                if s.name in ("studyrooms_rooms", "studyrooms_participants", "studyrooms_workers"):
                    out["_server"][s.name.removeprefix("studyrooms_")] = s.value
                continue
            w = out.setdefault(worker, {})
            if s.name == "studyrooms_producers":
                w["producers"] = w.get("producers", 0) + s.value
                continue
            key = keys.get((s.name, s.labels.get("direction")))
            if key:
                w[key] = s.value
    return out


async def scrape(url: str) -> dict[str, dict[str, float]]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(url.rstrip("/") + "/metrics", timeout=aiohttp.ClientTimeout(total=20)) as resp:
            resp.raise_for_status()
            return parse_metrics(await resp.text())


def worker_rows(idle: dict, start: dict, end: dict, window_s: float) -> list[dict]:
    rows = []
    for worker in sorted(k for k in end if k != "_server"):
        a, b, i = start.get(worker, {}), end[worker], idle.get(worker, {})

        def d(key: str) -> float:
            return b.get(key, 0.0) - a.get(key, 0.0)

        cpu = d("cpu_s")
        pkts = d("rtp_in") + d("rtp_out")
        rows.append({
            "worker": worker, "window_s": _r(window_s, 3), "cpu_s": _r(cpu), "cpu_util": _r(cpu / window_s if window_s else 0),
            "rtp_in": int(d("rtp_in")), "rtp_out": int(d("rtp_out")), "bytes_in": int(d("bytes_in")),
            "bytes_out": int(d("bytes_out")), "pkts_per_cpu_s": _r(pkts / cpu if cpu > 0 else None, 1),
            "rss_bytes": int(b.get("rss_bytes", 0)), "rss_idle_bytes": int(i.get("rss_bytes", 0)),
            "transports": int(b.get("transports", 0)), "producers": int(b.get("producers", 0)),
            "consumers": int(b.get("consumers", 0)), "nacks_received": int(d("nacks_received")),
            "plis_received": int(d("plis_received")), "lost_in": int(d("lost_in")), "lost_out": int(d("lost_out")),
        })
    return rows


# ------------------------------------------------------------------ machine and versions
def machine_info() -> dict:
    info: dict[str, Any] = {"hostname": platform.node(), "platform": platform.platform(),
                            "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            info["mem_total_kb"] = int(fh.readline().split()[1])
    except (OSError, ValueError, AttributeError):
        pass
    return info


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("studyrooms", "ray", "aiortc", "aioice", "pylibsrtp", "python-socketio", "uvloop", "opentelemetry-sdk"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    try:
        root = Path(__file__).resolve().parents[2]
        out["git_commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                           capture_output=True, text=True, timeout=5).stdout.strip() or None
    except Exception:  # noqa: BLE001
        out["git_commit"] = None
    return out


# ------------------------------------------------------------------ writing
def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})


def write_results(out_dir: str | os.PathLike, *, params: dict, shards: list[dict], workers: list[dict],
                  server: dict | None = None, run_id: str | None = None) -> Path:
    """Write the folder; returns its path (``out_dir/<run id>``)."""
    run_id = run_id or dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(out_dir) / run_id
    folder.mkdir(parents=True, exist_ok=True)
    participants, streams, latencies = [], [], []
    media_s = max((s["loadgen"].get("media_s", 0) for s in shards), default=0) or 1
    for shard in shards:
        for p in shard["participants"]:
            lat = p.get("latencies_ms") or []
            rows = p.get("streams") or []
            recv = sum(r["packets"] for r in rows)
            expected = sum(r["expected"] for r in rows)
            lost = sum(r["lost"] for r in rows)
            participants.append({
                **{k: p.get(k) for k in ("room", "name", "participant_id", "ok", "error", "remote_at_join",
                                         "srtp_errors")},
                "joined_s": _r(p.get("joined_s")), "media_ready_s": _r(p.get("media_ready_s")),
                "join_s": _r(p.get("join_s")), "first_video_s": _r(p.get("first_video_s")),
                "sent_packets": sum(v["packets"] for v in (p.get("sent") or {}).values()),
                "sent_bytes": sum(v["bytes"] for v in (p.get("sent") or {}).values()),
                "recv_packets": recv, "recv_bytes": sum(r["bytes"] for r in rows), "expected": expected,
                "lost": lost, "loss_pct": _r(100.0 * lost / expected if expected else 0.0),
                "jitter_ms": _r(sum(r["jitter_ms"] for r in rows) / len(rows) if rows else None),
                "latency_p50_ms": _r(quantile(lat, 0.5)), "latency_p99_ms": _r(quantile(lat, 0.99)),
                "latency_samples": len(lat),
            })
            for r in rows:
                streams.append({**r, "room": p["room"], "receiver": p["name"], "pps": _r(r["packets"] / media_s, 2)})
            latencies.extend((p["room"], p["name"], x) for x in lat)
    if len(latencies) > MAX_LATENCY_ROWS:
        step = len(latencies) / MAX_LATENCY_ROWS
        latencies = [latencies[int(i * step)] for i in range(MAX_LATENCY_ROWS)]
    _write_csv(folder / "participants.csv", PARTICIPANT_FIELDS, participants)
    _write_csv(folder / "streams.csv", STREAM_FIELDS, streams)
    with open(folder / "latency.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["room", "receiver", "latency_ms"])
        w.writerows(latencies)
    _write_csv(folder / "workers.csv", WORKER_FIELDS, workers)
    summary = {
        "run_id": run_id, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "versions": versions(), "parameters": params,
        "results": aggregate(participants, streams, [x[2] for x in latencies], workers, shards, server or {}),
        "files": ["participants.csv", "streams.csv", "latency.csv", "workers.csv"],
    }
    with open(folder / "summary.json", "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
    return folder


def aggregate(participants: list[dict], streams: list[dict], latencies: list[float], workers: list[dict],
              shards: list[dict], server: dict) -> dict:
    ok = [p for p in participants if p["ok"]]
    joins = [p["join_s"] for p in ok if p["join_s"] is not None and (p["remote_at_join"] or 0) > 0]
    expected = sum(s["expected"] for s in streams)
    lost = sum(s["lost"] for s in streams)
    cpu = sum(w["cpu_s"] or 0 for w in workers)
    window = max((w["window_s"] or 0 for w in workers), default=0)
    pkts_in = sum(w["rtp_in"] for w in workers)
    pkts_out = sum(w["rtp_out"] for w in workers)
    consumers = sum(w["consumers"] for w in workers)
    producers = sum(w["producers"] for w in workers)
    transports = sum(w["transports"] for w in workers)
    rss = [w["rss_bytes"] for w in workers]
    rss_growth = sum(max(0, w["rss_bytes"] - w["rss_idle_bytes"]) for w in workers if w["rss_idle_bytes"])
    loadgen_cpu = sum(s["loadgen"].get("cpu_s", 0) for s in shards)
    core_s = cpu / window if window else 0
    return {
        "participants": len(participants), "participants_ok": len(ok),
        "join_s_p50": _r(quantile(joins, 0.5)), "join_s_p95": _r(quantile(joins, 0.95)),
        "join_s_max": _r(max(joins) if joins else None), "join_samples": len(joins),
        "joined_s_p50": _r(quantile([p["joined_s"] for p in ok if p["joined_s"] is not None], 0.5)),
        "latency_ms_p50": _r(quantile(latencies, 0.5)), "latency_ms_p99": _r(quantile(latencies, 0.99)),
        "latency_ms_max": _r(max(latencies) if latencies else None), "latency_samples": len(latencies),
        "recv_packets": sum(s["packets"] for s in streams), "expected_packets": expected, "lost_packets": lost,
        "loss_pct": _r(100.0 * lost / expected if expected else 0.0),
        "jitter_ms_mean": _r(sum(s["jitter_ms"] for s in streams) / len(streams) if streams else None),
        "streams_received": len(streams),
        "window_s": _r(window, 3), "server_cpu_s": _r(cpu), "server_cores_busy": _r(core_s),
        "server_rtp_in_pps": _r(pkts_in / window if window else None, 1),
        "server_rtp_out_pps": _r(pkts_out / window if window else None, 1),
        "pkts_per_core_s": _r((pkts_in + pkts_out) / cpu if cpu > 0 else None, 1),
        "fwd_pkts_per_core_s": _r(pkts_out / cpu if cpu > 0 else None, 1),
        "producers": producers, "consumers": consumers, "transports": transports,
        "cpu_pct_per_consumer_stream": _r(100.0 * core_s / consumers if consumers else None),
        "cpu_pct_per_producer_stream": _r(100.0 * core_s / producers if producers else None),
        "cpu_pct_per_participant": _r(100.0 * core_s / len(ok) if ok else None),
        "rss_per_worker_mb": _r(sum(rss) / len(rss) / 2**20 if rss else None, 2),
        "rss_per_transport_kb": _r(rss_growth / transports / 1024 if transports and rss_growth else None, 1),
        "rss_per_consumer_kb": _r(rss_growth / consumers / 1024 if consumers and rss_growth else None, 1),
        "loadgen_cpu_s": _r(loadgen_cpu), "workers": len(workers),
        "server": server,
    }
