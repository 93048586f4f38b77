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
    #: sha256 of the participant's resume key (docs/protocol.md "Session resume"); None: the client
    #: did not ask to resume, so a disconnect is a leave
    resume_hash: str | None = field(default=None, repr=False)
    #: set while no socket is bound (the socket went without leave-room; within the resume grace)
    detached_at: float | None = None
    #: a media-reset that came while detached (sent again on resume: the client's media is stale)
    missed_reset: dict | None = field(default=None, repr=False)

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
            "detached": self.detached_at is not None,
        }
