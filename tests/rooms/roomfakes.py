"""In-test stand-ins for the room layer's ports (unit tests only: the same flows run against the
real media worker in the integration tests). They record calls and answer in protocol shapes."""

from __future__ import annotations

import asyncio
import itertools

from studyrooms.errors import InvalidStateError, NotFoundError, ResourceExhaustedError

RTP_CAPABILITIES = {
    "codecs": [
        {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2,
         "preferredPayloadType": 100, "rtcpFeedback": []},
        {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000, "preferredPayloadType": 101,
         "rtcpFeedback": [{"type": "nack"}, {"type": "goog-remb"}]},
    ],
    "headerExtensions": [{"kind": "audio", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1}],
}


class FakeWorker:
    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.calls: list[tuple[str, dict]] = []
        self.fail: dict[str, Exception] = {}
        self.delay: dict[str, float] = {}
        self.routers: set[str] = set()
        self.transports: dict[str, str] = {}  # id -> router
        self.producers: dict[str, dict] = {}
        self.consumers: dict[str, dict] = {}
        self._seq = itertools.count(1)

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{self.worker_id}-{next(self._seq)}"

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]

    async def request(self, method: str, data: dict) -> dict:
        self.calls.append((method, data))
        if method in self.delay:
            await asyncio.sleep(self.delay[method])
        if method in self.fail:
            raise self.fail[method]
        handler = getattr(self, "_" + method, None)
        if handler is None:
            return {}
        return handler(data)

    def _create_router(self, data: dict) -> dict:
        rid = self._id("router")
        self.routers.add(rid)
        return {"routerId": rid, "rtpCapabilities": RTP_CAPABILITIES}

    def _close_router(self, data: dict) -> dict:
        self.routers.discard(data["routerId"])
        return {}

    def _create_webrtc_transport(self, data: dict) -> dict:
        if data["routerId"] not in self.routers:
            raise NotFoundError("router not found")
        tid = self._id("transport")
        self.transports[tid] = data["routerId"]
        return {
            "id": tid,
            "iceParameters": {"usernameFragment": "uf", "password": "pw", "iceLite": True},
            "iceCandidates": [{"foundation": "udpcandidate", "priority": 1, "address": "127.0.0.1",
                               "ip": "127.0.0.1", "protocol": "udp", "port": 40000, "type": "host"}],
            "dtlsParameters": {"role": "auto", "fingerprints": [{"algorithm": "sha-256", "value": "AA:BB"}]},
            "direction": data.get("direction"),
        }

    def _connect_webrtc_transport(self, data: dict) -> dict:
        if data["transportId"] not in self.transports:
            raise NotFoundError("transport not found")
        return {}

    def _restart_ice(self, data: dict) -> dict:
        return {"iceParameters": {"usernameFragment": "uf2", "password": "pw2", "iceLite": True}}

    def _close_transport(self, data: dict) -> dict:
        tid = data["transportId"]
        self.transports.pop(tid, None)
        for pid in [p for p, v in self.producers.items() if v["transportId"] == tid]:
            self.producers.pop(pid)
        for cid in [c for c, v in self.consumers.items() if v["transportId"] == tid]:
            self.consumers.pop(cid)
        return {}

    def _produce(self, data: dict) -> dict:
        if data["transportId"] not in self.transports:
            raise NotFoundError("transport not found")
        pid = self._id("producer")
        self.producers[pid] = {"transportId": data["transportId"], "kind": data["kind"]}
        return {"id": pid, "kind": data["kind"], "type": "simple"}

    def _consume(self, data: dict) -> dict:
        producer = self.producers.get(data["producerId"])
        if producer is None:
            raise NotFoundError("producer not found")
        cid = self._id("consumer")
        self.consumers[cid] = {"transportId": data["transportId"], "producerId": data["producerId"]}
        return {
            "id": cid,
            "producerId": data["producerId"],
            "kind": producer["kind"],
            "rtpParameters": {"codecs": [{"mimeType": "audio/opus", "payloadType": 100, "clockRate": 48000}],
                              "encodings": [{"ssrc": 1234}], "mid": "0"},
            "type": "simple",
            "producerPaused": False,
        }

    def _close_producer(self, data: dict) -> dict:
        self.producers.pop(data["producerId"], None)
        return {}

    def _get_stats(self, data: dict) -> dict:
        return {"workerId": self.worker_id, "pid": 1, "routerCount": len(self.routers),
                "transportCount": len(self.transports), "producerCount": len(self.producers),
                "consumerCount": len(self.consumers), "cpu": {}}


class FakeDirectory:
    def __init__(self, n_workers: int = 2) -> None:
        self.workers = {f"w{i}": FakeWorker(f"w{i}") for i in range(n_workers)}
        self.load = {wid: 0 for wid in self.workers}
        self.placed: list[tuple[str, str]] = []
        self.released: list[tuple[str, str]] = []
        self._rr = 0

    async def place_router(self, room_id: str, exclude=()) -> str:
        candidates = [w for w in self.workers if w not in exclude]
        if not candidates:
            raise ResourceExhaustedError("no media worker")
        least = min(self.load[w] for w in candidates)
        ties = [w for w in candidates if self.load[w] == least]
        wid = ties[self._rr % len(ties)]
        self._rr += 1
        self.load[wid] += 1
        self.placed.append((room_id, wid))
        return wid

    def worker(self, worker_id: str) -> FakeWorker:
        return self.workers[worker_id]

    async def release_router(self, room_id: str, worker_id: str) -> None:
        if (room_id, worker_id) not in self.placed:
            raise InvalidStateError("release of a router never placed")
        self.load[worker_id] -= 1
        self.released.append((room_id, worker_id))


class RecordingNotifier:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, dict]] = []

    async def notify(self, route: str, sid: str, event: str, data: dict) -> None:
        self.sent.append((route, sid, event, data))

    def to(self, sid: str, event: str | None = None) -> list:
        return [(e, d) if event is None else d for (_, s, e, d) in self.sent if s == sid and (event is None or e == event)]

    def clear(self) -> None:
        self.sent.clear()


def session(sid: str, rooms=("*",), user: str | None = None, route: str = "sig-1", token_name: str = "") -> dict:
    """A socket's session as the signaling server builds it; ``token_name``: the token's name claim."""
    return {"sid": sid, "route": route, "userId": user or f"user-{sid}", "displayName": token_name,
            "rooms": list(rooms)}


AUDIO_RTP = {"codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
             "encodings": [{"ssrc": 1111}], "mid": "0"}
VIDEO_RTP = {"codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}],
             "encodings": [{"ssrc": 2222}], "mid": "1"}
DTLS = {"role": "client", "fingerprints": [{"algorithm": "sha-256", "value": "AA:BB:CC"}]}
