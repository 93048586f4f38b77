"""Real load on a media worker actor for placement tests: a router, a plain-RTP producer and N
consumers (real objects; no media needs to flow for the worker to count them)."""

from __future__ import annotations

from actors.hop import call

VP8 = {"codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}],
       "encodings": [{"ssrc": 777}], "rtcp": {"cname": "load"}}


async def add_consumers(worker, count: int) -> str:
    """Returns the router id (close it to remove the load)."""
    router = (await call(worker.request.remote("create_router", {})))["routerId"]
    caps = (await call(worker.request.remote("router_rtp_capabilities", {"routerId": router})))["rtpCapabilities"]
    send = await call(worker.request.remote("create_plain_transport", {"routerId": router, "comedia": True}))
    producer = await call(worker.request.remote("produce", {"transportId": send["id"], "kind": "video",
                                                            "rtpParameters": VP8}))
    recv = await call(worker.request.remote("create_plain_transport", {"routerId": router, "comedia": True}))
    for _ in range(count):
        await call(worker.request.remote("consume", {"transportId": recv["id"], "producerId": producer["id"],
                                                     "rtpCapabilities": caps}))
    return router
