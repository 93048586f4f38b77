"""The load generator end to end (a correctness test of the tool, not a timed assertion): the smoke
run writes the results folder with its schema, every synthetic participant received media, and
latency and join time were measured."""

from __future__ import annotations

import asyncio
import csv
import json

import pytest

from benchmarks.loadgen.results import PARTICIPANT_FIELDS, STREAM_FIELDS, WORKER_FIELDS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _rows(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def test_smoke_writes_the_results_folder(smoke_results):
    summary = json.loads((smoke_results / "summary.json").read_text())
    assert {"run_id", "created", "machine", "versions", "parameters", "results"} <= set(summary)
    assert summary["machine"]["cpus"] >= 1 and summary["versions"]["aiortc"]
    params, res = summary["parameters"], summary["results"]
    assert (params["rooms"], params["participants"], params["duration"]) == (2, 3, 5.0)

    fields, people = _rows(smoke_results / "participants.csv")
    assert fields == PARTICIPANT_FIELDS and len(people) == 6
    for p in people:
        assert p["ok"] == "True", p
        assert int(p["recv_packets"]) > 100 and int(p["sent_packets"]) > 100, p
        assert float(p["latency_p50_ms"]) > 0 and int(p["latency_samples"]) > 100, p
        if int(p["remote_at_join"]) > 0:
            assert 0 < float(p["join_s"]) < 5, p
    fields, streams = _rows(smoke_results / "streams.csv")
    assert fields == STREAM_FIELDS
    # each receiver gets mic + camera of the 2 others, and the room's screen share unless it is its own
    assert len(streams) == 2 * (2 * 2 * 3 + 2)
    assert {(s["kind"], s["source"]) for s in streams} == {("audio", "mic"), ("video", "camera"), ("video", "screen")}
    assert all(int(s["packets"]) > 0 for s in streams)
    fields, workers = _rows(smoke_results / "workers.csv")
    assert fields == WORKER_FIELDS and len(workers) == 1
    w = workers[0]
    assert float(w["cpu_s"]) > 0 and int(w["rtp_in"]) > 0 and int(w["rtp_out"]) > int(w["rtp_in"])
    assert int(w["transports"]) == 12 and int(w["consumers"]) == 28
    _, lat = _rows(smoke_results / "latency.csv")
    assert len(lat) > 1000
    for key in ("latency_ms_p50", "latency_ms_p99", "join_s_p50", "pkts_per_core_s", "cpu_pct_per_consumer_stream",
                "rss_per_worker_mb", "server_rtp_out_pps"):
        assert res[key] and res[key] > 0, key
    assert res["participants_ok"] == 6 and res["loss_pct"] < 5


async def test_simulcast_camera_reaches_the_receiver():
    from studyrooms.config import Settings
    from studyrooms.standalone import start_standalone

    from benchmarks.loadgen.runner import plan, run_shard

    app = await start_standalone(Settings(), num_workers=1, port=0)
    try:
        out = await run_shard(app.url, plan(1, 2, screen_share=0, simulcast=True), duration_s=2.5, join_gap_s=0.1)
    finally:
        await app.stop()
    receiver = out["participants"][1]
    assert receiver["ok"] and receiver["remote_at_join"] == 2
    video = [s for s in receiver["streams"] if s["kind"] == "video"]
    assert video and video[0]["packets"] > 50  # one simulcast layer forwarded, keyframe-gated and continuous
    assert receiver["first_video_s"] is not None and receiver["first_video_s"] < 3
    sender = out["participants"][0]
    assert sender["sent"]["camera"]["packets"] > 200  # three encodings: 15 + 35 + 100 packets/s


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_loadtest_runs_shards_as_ray_actors(ray_session, tmp_path):
    from actors.loadtest import run_loadtest

    folder = asyncio.run(run_loadtest(url=None, rooms=1, participants=2, duration_s=2.0, shards=1, screen_share=0,
                                      join_gap_s=0.1, out=str(tmp_path), workers=1, progress=False))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["parameters"]["loadgen"] == "ray-actors"
    res = summary["results"]
    assert res["participants_ok"] == 2 and res["recv_packets"] > 100 and res["latency_ms_p50"] > 0
    assert res["server_cpu_s"] > 0
