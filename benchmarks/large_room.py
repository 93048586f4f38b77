"""One big room of synthetic participants: last-N video and speaker-selected audio, measured.

    python -m benchmarks.large_room                       # 50 people, with and without last-N + audio selection
    python -m benchmarks.large_room --participants 20 --scale 0.2 --window 5 --modes on

Every participant publishes a simulcast camera and a mic whose packets carry ssrc-audio-level; three
talk, the rest are silent; halfway the talkers change. Each mode runs against a fresh standalone
server (benchmarks/loadgen/server.py, ``--workers`` media workers, a child process so the load
generator's CPU is not charged to it):

- ``on``: the defaults (``STUDYROOMS_ROOMS_LAST_N`` 9, ``STUDYROOMS_ROOMS_MAX_AUDIO_STREAMS`` 3);
- ``off``: both disabled (-1): every receiver gets every video and every audio.

Per phase it records, for every receiver, the SSRCs that carried packets (video, audio) and the
forwarded set the server announced (``forwarding-changed``), and for the server its CPU seconds and
forwarded RTP packets/s from ``/metrics`` over the measured window. Media rates are reduced by
``--scale`` (default 0.1: cameras at 3 fps, ~15 packets/s over three layers of which the top one
~10; audio 5 packets/s) so that the "off" room (50 x 49 x 2 streams) fits a shared 2-core machine;
the ratio on/off is what matters (packets per stream scale both modes alike).
Results: ``<out>/<run id>/large_room.json`` and ``large_room.csv`` (one row per mode and phase).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .loadgen.participant import Participant, Profile
from .loadgen.results import machine_info, parse_metrics

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "large_room"
MODES = {"on": {}, "off": {"STUDYROOMS_ROOMS_LAST_N": "-1", "STUDYROOMS_ROOMS_MAX_AUDIO_STREAMS": "-1"}}
CSV_FIELDS = ["mode", "phase", "participants", "talkers", "scale", "window_s", "server_cpu_s", "server_cpu_util",
              "server_rtp_in_pps", "server_rtp_out_pps", "rtp_out_per_cpu_s", "max_video_ssrcs", "max_audio_ssrcs",
              "mean_video_ssrcs", "mean_audio_ssrcs", "audio_from_talkers_only", "talkers_in_video_pct"]


def start_server(workers: int, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STUDYROOMS_")}
    clean.update({"STUDYROOMS_ROOMS_EMPTY_ROOM_TIMEOUT_S": "0.5", "STUDYROOMS_ROOMS_CAPACITY": "200",
                  "STUDYROOMS_LIMITS_REQUESTS_PER_SECOND": "1000", "STUDYROOMS_LIMITS_REQUEST_BURST": "2000"})
    clean.update(env)
    log = tempfile.NamedTemporaryFile("w+", prefix="large-room-server-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.loadgen.server", "--workers", str(workers)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=clean,
                            cwd=str(Path(__file__).resolve().parents[1]))
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError(f"the standalone server did not start (log: {log.name})")
    # keep draining its stdout: a full pipe would stall the server
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    proc.log_path = log.name  # type: ignore[attr-defined]
    return proc, json.loads(line)["url"]


def stop_server(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
        proc.wait(timeout=20)
    except Exception:  # noqa: BLE001
        proc.kill()
        proc.wait()


async def http_json(url: str) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=20)) as resp:
            resp.raise_for_status()
            if url.endswith("/metrics"):
                return parse_metrics(await resp.text())
            return await resp.json()


def server_totals(metrics: dict) -> dict[str, float]:
    """Packets summed over the workers; CPU of the server process (the standalone server's workers
    share one process, each reports its CPU: counted once)."""
    workers = [v for w, v in metrics.items() if w != "_server"]
    out = {k: sum(v.get(k, 0.0) for v in workers) for k in ("rtp_in", "rtp_out")}
    out["cpu_s"] = max((v.get("cpu_s", 0.0) for v in workers), default=0.0)
    return out


def window(people: list[Participant], before: dict, after: dict, talkers: set[str]) -> dict:
    """Per receiver: the SSRCs (video, audio) that carried packets between two snapshots."""
    video, audio, audio_ok, talkers_seen, per_receiver = [], [], True, [], {}
    for p in people:
        a, b = before[p.name], after[p.name]
        carried = [(kind, who) for ssrc, (kind, who, n) in b.items() if n > a.get(ssrc, (kind, who, 0))[2]]
        v = [who for kind, who in carried if kind == "video"]
        s = [who for kind, who in carried if kind == "audio"]
        video.append(len(v))
        audio.append(len(s))
        per_receiver[p.result.participant_id] = {"video": sorted(v), "audio": sorted(s)}
        audio_ok &= set(s) <= talkers
        others = talkers - {p.result.participant_id}
        if others:
            talkers_seen.append(len(others & set(v)) / len(others))
    return {"video": video, "audio": audio, "audio_from_talkers_only": audio_ok,
            "talkers_in_video_pct": round(100 * sum(talkers_seen) / max(1, len(talkers_seen)), 1),
            "per_receiver": per_receiver}


async def run_mode(mode: str, *, participants: int, talkers: int, scale: float, window_s: float,
                   settle_s: float, workers: int, join_gap_s: float, log=print) -> dict:
    proc, url = start_server(workers, MODES[mode])
    people = [Participant(url, "large", f"p{i}", Profile(simulcast=True, audio_levels=True, media_scale=scale),
                          timeout_s=30) for i in range(participants)]
    out: dict = {"mode": mode, "phases": []}
    try:
        t0 = time.monotonic()
        for p in people:
            await asyncio.wait_for(p.join(), 60)
            await asyncio.sleep(join_gap_s)
        # consumption runs in the background: wait until everyone consumes everyone
        want = 2 * (participants - 1)
        deadline = time.monotonic() + 60 + participants
        while any(len(p.streams) < want for p in people) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        out["join_s"] = round(time.monotonic() - t0, 2)
        out["consumers_per_receiver_min"] = min(len({s.consumer_id for s in p.streams.values()}) for p in people)
        log(f"[{mode}] {participants} joined and consuming in {out['join_s']} s")
        out["stats_joined"] = await http_json(url + "/api/stats")
        ids = [p.result.participant_id for p in people]
        for phase, speaking in enumerate((range(0, talkers), range(talkers, 2 * talkers))):
            talking = {ids[i] for i in speaking}
            for i, p in enumerate(people):
                p.set_talking(i in speaking)
            await asyncio.sleep(settle_s)  # dominant-speaker dwell, audio hang-over, keyframes
            m0, c0 = await http_json(url + "/metrics"), {p.name: p.packet_counts() for p in people}
            t = time.monotonic()
            await asyncio.sleep(window_s)
            m1, c1 = await http_json(url + "/metrics"), {p.name: p.packet_counts() for p in people}
            span = time.monotonic() - t
            a, b = server_totals(m0), server_totals(m1)
            w = window(people, c0, c1, talking)
            cpu = b["cpu_s"] - a["cpu_s"]
            row = {
                "mode": mode, "phase": phase, "participants": participants, "talkers": talkers, "scale": scale,
                "window_s": round(span, 3), "server_cpu_s": round(cpu, 3), "server_cpu_util": round(cpu / span, 3),
                "server_rtp_in_pps": round((b["rtp_in"] - a["rtp_in"]) / span, 1),
                "server_rtp_out_pps": round((b["rtp_out"] - a["rtp_out"]) / span, 1),
                "rtp_out_per_cpu_s": round((b["rtp_out"] - a["rtp_out"]) / cpu, 1) if cpu > 0 else None,
                "max_video_ssrcs": max(w["video"]), "max_audio_ssrcs": max(w["audio"]),
                "mean_video_ssrcs": round(sum(w["video"]) / len(w["video"]), 2),
                "mean_audio_ssrcs": round(sum(w["audio"]) / len(w["audio"]), 2),
                "audio_from_talkers_only": w["audio_from_talkers_only"],
                "talkers_in_video_pct": w["talkers_in_video_pct"],
            }
            row["talking"] = sorted(talking)
            row["carried"] = w["per_receiver"]
            row["forwarding"] = {p.result.participant_id: (p.forwarding or {}).get("video") for p in people}
            out["phases"].append(row)
            log(f"[{mode}] phase {phase}: " + ", ".join(f"{k}={row[k]}" for k in CSV_FIELDS[5:]))
    finally:
        await asyncio.gather(*(p.close() for p in people), return_exceptions=True)
        try:
            await asyncio.sleep(1.5)  # the empty room closes after 0.5 s
            out["after_leave"] = await http_json(url + "/api/stats")
        except Exception as exc:  # noqa: BLE001 - reported, the caller decides
            out["after_leave"] = {"error": repr(exc)}
        stop_server(proc)
        out["server_log"] = proc.log_path
    return out


def _compact(run: dict) -> dict:
    """A run without the per-receiver detail (kept in memory for tests, too big for the results)."""
    phases = [{k: v for k, v in ph.items() if k not in ("carried", "forwarding")} for ph in run["phases"]]
    return {**{k: v for k, v in run.items() if k not in ("after_leave", "stats_joined", "phases")}, "phases": phases}


def write(out_dir: Path, runs: list[dict], params: dict) -> Path:
    folder = out_dir / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{k: ph[k] for k in CSV_FIELDS} for run in runs for ph in run["phases"]]
    with open(folder / "large_room.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    on = [r for r in rows if r["mode"] == "on"]
    off = [r for r in rows if r["mode"] == "off"]
    summary: dict = {}
    if on and off:
        def med(rs, key):
            vals = sorted(r[key] for r in rs)
            return vals[len(vals) // 2]
        summary = {"cpu_util_on": med(on, "server_cpu_util"), "cpu_util_off": med(off, "server_cpu_util"),
                   "rtp_out_pps_on": med(on, "server_rtp_out_pps"), "rtp_out_pps_off": med(off, "server_rtp_out_pps")}
        summary["cpu_ratio_off_on"] = round(summary["cpu_util_off"] / summary["cpu_util_on"], 2)
        summary["rtp_out_ratio_off_on"] = round(summary["rtp_out_pps_off"] / summary["rtp_out_pps_on"], 2)
    doc = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(),
           "parameters": params, "summary": summary,
           "runs": [_compact(run) for run in runs]}
    (folder / "large_room.json").write_text(json.dumps(doc, indent=1))
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.large_room", description=__doc__.split("\n\n")[0])
    p.add_argument("--participants", type=int, default=50)
    p.add_argument("--talkers", type=int, default=3)
    p.add_argument("--scale", type=float, default=0.1, help="media rate factor (1.0: 30 fps cameras, 50 pps audio)")
    p.add_argument("--window", type=float, default=8.0, help="measured seconds per phase")
    p.add_argument("--settle", type=float, default=4.0, help="seconds after the talkers change before measuring")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--join-gap", type=float, default=0.02)
    p.add_argument("--modes", default="on,off")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    params = {k: getattr(args, k) for k in ("participants", "talkers", "scale", "window", "settle", "workers", "modes")}

    async def go() -> list[dict]:
        return [await run_mode(mode, participants=args.participants, talkers=args.talkers, scale=args.scale,
                               window_s=args.window, settle_s=args.settle, workers=args.workers,
                               join_gap_s=args.join_gap) for mode in args.modes.split(",")]

    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runs = runner.run(go())
    folder = write(Path(args.out), runs, params)
    print(json.dumps(json.loads((folder / "large_room.json").read_text())["summary"]))
    print(f"results: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
