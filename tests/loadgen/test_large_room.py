"""A 50-participant room of synthetic participants (benchmarks/large_room.py: the load generator's
real ICE/DTLS/SRTP clients against the standalone server in a child process, two media workers):
simulcast cameras and mics with ssrc-audio-level, three talking and the rest silent, then three
others talking. Every receiver gets packets on at most N = 9 video SSRCs and K = 3 audio SSRCs, the
audio only from the talkers, the videos exactly the set the server announced in forwarding-changed,
which follows the new talkers; after everyone leaves no transport, producer, consumer or router is
left on either worker.

Bounded on purpose: media rates are reduced to a tenth (cameras at 3 fps, ~15 packets/s over three
layers; audio 5 packets/s), two measured windows of 2 s. The CPU and packet-rate comparison with
last-N off is the benchmark (python -m benchmarks.large_room), not this test."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.large_room import run_mode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PARTICIPANTS, TALKERS, LAST_N, MAX_AUDIO = 50, 3, 9, 3


def test_fifty_people_get_last_n_video_and_the_talkers_audio_and_nothing_leaks():
    run = asyncio.run(run_mode("on", participants=PARTICIPANTS, talkers=TALKERS, scale=0.1, window_s=2.0,
                               settle_s=3.5, workers=2, join_gap_s=0.01))
    assert run["consumers_per_receiver_min"] == 2 * (PARTICIPANTS - 1)  # everyone consumes everyone
    joined = run["stats_joined"]
    busy = [w for w in joined["workers"] if w.get("consumerCount", 0) > 0]
    assert len(busy) == 2, joined["workers"]  # 4900 consumers: the room spans both media workers
    previous_talkers: set[str] = set()
    for phase in run["phases"]:
        talking = set(phase["talking"])
        assert not talking & previous_talkers  # the talkers changed
        assert phase["max_video_ssrcs"] <= LAST_N and phase["max_audio_ssrcs"] <= MAX_AUDIO, phase
        assert phase["mean_video_ssrcs"] == LAST_N  # 49 others with video: everyone gets exactly N
        assert phase["audio_from_talkers_only"]
        assert phase["talkers_in_video_pct"] == 100.0  # the forwarded videos follow the speakers
        for receiver, carried in phase["carried"].items():
            assert set(carried["audio"]) == talking - {receiver}, (receiver, carried)
            announced = phase["forwarding"][receiver]
            assert announced is not None and set(carried["video"]) == set(announced), (receiver, carried, announced)
        previous_talkers = talking
    after = run["after_leave"]
    assert after.get("rooms") == [], after
    for w in after["workers"]:
        assert (w["routerCount"], w["transportCount"], w["producerCount"], w["consumerCount"]) == (0, 0, 0, 0), w
