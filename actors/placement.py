"""Where a room's next router goes (the Directory's placement policy, kept apart from its registries).

- A room's **first** router: the least-loaded live worker anywhere (measured loop CPU in 25 % steps,
  then consumers, then routers; round robin on ties), never one over the admission limit.
- A router for a room that **already has one** (it outgrew its workers, docs/deployment.md "Rooms
  across nodes"): a worker on the room's **own node** first (the home router's node: the pipe between
  them is plain RTP over loopback), another node only when every other worker of that node is full
  (over ``rooms.max_consumers_per_worker`` consumers by its last load report, or over the CPU limit):
  the pipe then crosses the network and carries SRTP.
"""

from __future__ import annotations

from typing import Any, Iterable


def home_node(room_workers: Iterable[str], workers: dict[str, Any]) -> str | None:
    """The node of the room's home router (the first router placed for it), if the room has one."""
    for worker_id in room_workers:
        entry = workers.get(worker_id)
        if entry is not None and entry.node:
            return entry.node
    return None


def spread_candidates(candidates: list, node: str | None, consumer_limit: int | None) -> list:
    """Narrow the live, admissible ``candidates`` for a room whose home router is on ``node``:
    the not-full workers of that node; else the not-full workers of other nodes; else all of them
    (every worker is over the consumer limit: the least loaded one still takes the router)."""
    if node is None:
        return candidates

    def open_(entry: Any) -> bool:
        return consumer_limit is None or entry.consumer_count < consumer_limit

    same = [w for w in candidates if w.node == node and open_(w)]
    if same:
        return same
    return [w for w in candidates if open_(w)] or candidates
