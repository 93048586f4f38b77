"""A worker counts the transports that closed themselves, by reason (``get_stats()
["transportsClosedByReason"]``): what a load run reads to tell lost transports from leaves."""

from __future__ import annotations

import asyncio

from studyrooms.sfu.options import WorkerOptions
from studyrooms.sfu.worker import Worker


async def test_a_dtls_timeout_is_counted_and_a_plain_close_is_not():
    worker = await Worker.create("w-fail", WorkerOptions(rtc_min_port=46000, rtc_max_port=46999, dtls_timeout_s=0.3))
    try:
        router = worker.create_router()
        failing = await router.create_webrtc_transport()
        closing = await router.create_webrtc_transport()
        fingerprints = [{"algorithm": f.algorithm, "value": f.value} for f in worker.certificate.getFingerprints()]
        await failing.connect({"role": "server", "fingerprints": fingerprints})  # ICE never comes
        for _ in range(300):
            if failing.closed:
                break
            await asyncio.sleep(0.01)
        assert failing.closed and failing.closed_reason == "dtls-failed"
        closing.close()
        assert worker.get_stats()["transportsClosedByReason"] == {"dtls-failed": 1}
    finally:
        await worker.close()
