"""The room's per-consumer decisions on a real Worker over PlainTransports (bytes on loopback UDP):
a non-forwardable consumer sends nothing, re-entering keeps sequence numbers continuous (audio) and
starts from a keyframe it asks for (video), and ``maxHeight`` caps the simulcast layer by the heights
read from the producer's keyframes."""

from __future__ import annotations

import asyncio
import struct

import pytest

from sfu.test_forwarding import MID_URI, RID_URI, VP8_DELTA, VP8_KEY, env, opus_producer, until, vp8_producer  # noqa: F401
from studyrooms.errors import InvalidRequestError
from studyrooms.media.rtp import build_rtp, parse_rtp

# every case on both forwarding paths: the compiled core reads the same forwardable/active state
pytestmark = [pytest.mark.timeout(60),
              pytest.mark.parametrize("forwarding_path", ["python", "compiled"], indirect=True)]


def vp8_key(width: int, height: int) -> bytes:
    """A VP8 keyframe's first packet: descriptor, frame tag (key), start code, 14-bit size."""
    return bytes([0x10, 0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A]) + struct.pack("<HH", width, height) + bytes(300)


async def set_forwarding(env, consumer_id, **change):
    return await env.channel.request("set_consumers_forwarding", {"consumers": {consumer_id: change}})


async def test_dropped_audio_leaves_no_gap_in_the_receivers_sequence_numbers(env):
    _, producer, sender, target = await env.producer_side(opus_producer(7101), kind="audio")
    _, consumer, sink = await env.consumer_side(producer["id"])
    seq = 100

    async def send(n):
        nonlocal seq
        for _ in range(n):
            seq += 1
            sender.sock.sendto(build_rtp(payload_type=111, seq=seq, ts=seq * 960, ssrc=7101, payload=bytes(60),
                                         extensions=[(1, bytes([0x80 | 30]))]), target)
            await asyncio.sleep(0.004)

    await send(10)
    await until(lambda: len(sink.rtp) >= 10)
    assert await set_forwarding(env, consumer["id"], forwardable=False) == {"missing": []}
    await send(25)  # not selected: nothing leaves
    await asyncio.sleep(0.1)
    assert len(sink.rtp) == 10
    await set_forwarding(env, consumer["id"], forwardable=True)
    await send(10)
    await until(lambda: len(sink.rtp) >= 20)
    await asyncio.sleep(0.05)
    parsed = [parse_rtp(p) for p in sink.rtp]
    assert len(parsed) == 20
    seqs = [p[2] for p in parsed]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:])), seqs  # no gap for the receiver
    ts = [p[3] for p in parsed]
    assert all(0 < (b - a) & 0xFFFFFFFF < 2**31 for a, b in zip(ts, ts[1:]))  # timestamps move forward
    dump = (await env.channel.request("dump", {}))
    assert dump is not None and env.worker.consumers[consumer["id"]].forwardable is True


async def test_video_reentering_last_n_asks_for_and_starts_from_a_keyframe(env):
    _, producer, sender, target = await env.producer_side(vp8_producer(ssrc=2101))
    _, consumer, sink = await env.consumer_side(producer["id"])
    seq = 0

    def send(payload):
        nonlocal seq
        seq += 1
        sender.sock.sendto(build_rtp(payload_type=96, seq=seq, ts=seq * 3000, ssrc=2101, payload=payload,
                                     marker=True), target)

    send(VP8_KEY)
    for _ in range(4):
        send(VP8_DELTA)
    await until(lambda: len(sink.rtp) >= 5)
    await set_forwarding(env, consumer["id"], forwardable=False)
    plis_before = len(sender.find(206, 1))
    for _ in range(5):
        send(VP8_DELTA)
    await asyncio.sleep(0.1)
    assert len(sink.rtp) == 5  # outside last-N: no packet leaves
    await set_forwarding(env, consumer["id"], forwardable=True)
    await until(lambda: len(sender.find(206, 1)) > plis_before)  # a keyframe is asked for at once
    for _ in range(3):
        send(VP8_DELTA)  # deltas before the keyframe would not decode: held back
    await asyncio.sleep(0.1)
    assert len(sink.rtp) == 5
    send(VP8_KEY)
    send(VP8_DELTA)
    await until(lambda: len(sink.rtp) >= 7)
    assert sink.rtp[5].endswith(VP8_KEY)
    seqs = [parse_rtp(p)[2] for p in sink.rtp]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))


async def test_max_height_caps_the_simulcast_layer_by_keyframe_heights(env):
    encodings = [{"rid": "r0", "scalabilityMode": "L1T1"}, {"rid": "r1"}, {"rid": "r2"}]
    ext = [{"uri": MID_URI, "id": 9}, {"uri": RID_URI, "id": 10}]
    _, producer, sender, target = await env.producer_side(vp8_producer(encodings=encodings, extensions=ext, mid="0"))
    _, consumer, sink = await env.consumer_side(producer["id"])
    sizes = {0: (320, 180), 1: (640, 360), 2: (1280, 720)}
    seq = {0: 0, 1: 1000, 2: 2000}

    def send_all(key: bool):
        for layer in (0, 1, 2):
            seq[layer] += 1
            sender.sock.sendto(build_rtp(payload_type=96, seq=seq[layer], ts=seq[layer] * 3000, ssrc=5100 + layer,
                                         payload=vp8_key(*sizes[layer]) if key else VP8_DELTA,
                                         extensions=[(9, b"0"), (10, f"r{layer}".encode())]), target)

    send_all(key=True)
    for _ in range(3):
        send_all(key=False)
    c = env.worker.consumers[consumer["id"]]
    await until(lambda: c.current_layer == 2)
    assert env.worker.producers[producer["id"]].layer_heights() == [180, 360, 720]
    await set_forwarding(env, consumer["id"], maxHeight=360)
    send_all(key=True)
    send_all(key=False)
    await until(lambda: c.current_layer == 1)
    await set_forwarding(env, consumer["id"], maxHeight=100)  # below every layer: the lowest still flows
    send_all(key=True)
    await until(lambda: c.current_layer == 0)
    await set_forwarding(env, consumer["id"], maxHeight=None)  # on stage: the best layer again
    send_all(key=True)
    await until(lambda: c.current_layer == 2)
    assert c.max_height is None and c.forwardable


async def test_set_consumers_forwarding_validates_and_reports_unknown_ids(env):
    _, producer, _, _ = await env.producer_side(opus_producer(7201), kind="audio")
    _, consumer, _ = await env.consumer_side(producer["id"])
    for bad in ({"consumers": []}, {"consumers": {consumer["id"]: {"forwardable": "no"}}},
                {"consumers": {consumer["id"]: {"maxHeight": -5}}},
                {"consumers": {consumer["id"]: {"paused": True}}}, {},
                {"consumers": {consumer["id"]: {"speakerRecency": -1}}},
                {"consumers": {consumer["id"]: {"speakerRecency": True}}},
                {"consumers": {consumer["id"]: {"speaker": 1}}}):
        with pytest.raises(InvalidRequestError):
            await env.channel.request("set_consumers_forwarding", bad)
    assert env.worker.consumers[consumer["id"]].forwardable is True  # a bad batch changes nothing
    reply = await env.channel.request("set_consumers_forwarding",
                                      {"consumers": {"gone": {"forwardable": False},
                                                     consumer["id"]: {"forwardable": False}}})
    assert reply == {"missing": ["gone"]} and env.worker.consumers[consumer["id"]].forwardable is False
