"""A person in a room: identity, socket route, and the media objects they own (bookkeeping only;
the objects themselves live in a media worker)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class Participant:
    id: str
    display_name: str
    user_id: str
    sid: str
    route: str
    joined_at: float
    #: transport id -> "send" | "recv"
    transports: dict[str, str] = field(default_factory=dict)
    #: transport ids whose connect-transport succeeded
    connected: set[str] = field(default_factory=set)
    #: producer id -> {"kind", "source", "transportId", "paused"}
    producers: dict[str, dict] = field(default_factory=dict)
    #: consumer id -> {"producerId", "transportId", "kind", "paused"}
    consumers: dict[str, dict] = field(default_factory=dict)
    #: the media worker whose router carries this participant's transports (a room may span several)
    worker_id: str | None = None

    def info(self) -> dict:
        return {"participantId": self.id, "displayName": self.display_name}

    def transport_count(self, direction: str) -> int:
        return sum(1 for d in self.transports.values() if d == direction)

    def dump(self) -> dict:
        return {
            "participantId": self.id,
            "displayName": self.display_name,
            "userId": self.user_id,
            "sid": self.sid,
            "route": self.route,
            "joinedAt": self.joined_at,
            "transports": dict(self.transports),
            "producers": {k: dict(v) for k, v in self.producers.items()},
            "consumers": {k: dict(v) for k, v in self.consumers.items()},
            "workerId": self.worker_id,
        }
