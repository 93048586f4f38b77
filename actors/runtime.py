"""Starting or attaching to Ray, and where things go (nodes, media slots).

Everything environment-specific about Ray on a workstation lives here (see design/ray.md):
loopback-only listeners (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), no token auth on loopback
(``RAY_AUTH_MODE=disabled``), no usage stats, no dashboard. ``ray stop`` is never used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import ray

from .rayenv import LOCAL_NODE_IP, LOOPBACK_ENV, set_loopback_env  # noqa: F401 - LOOPBACK_ENV re-exported

NAMESPACE = "studyrooms"
MEDIA_SLOTS = "media_slots"  # custom resource: one per media worker (one per core on media nodes)
SIGNALING = "signaling"  # custom resource: the node(s) that run signaling + directory

def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    media_slots: int | None = None,
    namespace: str = NAMESPACE,
    log_to_driver: bool = True,
    runtime_env: dict | None = None,
) -> bool:
    """Attach to ``address`` (or ``RAY_ADDRESS``), else start a local Ray on loopback.

    Returns True when a local Ray was started (the caller shuts it down). A local Ray advertises
    ``media_slots`` (default: one per core) and ``signaling`` on its single node. ``runtime_env``
    is the job's (the CLI passes the log settings, actors/logs.py).
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "local":
        ray.init(address=address, namespace=namespace, log_to_driver=log_to_driver, runtime_env=runtime_env)
        return False
    set_loopback_env()  # effective only if Ray was not imported yet: the CLI sets it before (rayenv.py)
    cpus = num_cpus or os.cpu_count() or 1
    ray.init(
        address="local",
        _node_ip_address=LOCAL_NODE_IP,  # the node's own address: GCS, raylet and workers on loopback
        num_cpus=cpus,
        resources={MEDIA_SLOTS: media_slots or cpus, SIGNALING: 1},
        include_dashboard=False,
        namespace=namespace,
        log_to_driver=log_to_driver,
        runtime_env=runtime_env,
    )
    return True


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str
    cpus: float
    media_slots: int
    signaling: bool
    is_head: bool


def alive_nodes() -> list[NodeInfo]:
    out = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res: Mapping[str, float] = node.get("Resources", {})
        out.append(
            NodeInfo(
                node_id=node["NodeID"],
                address=node.get("NodeManagerAddress", ""),
                cpus=float(res.get("CPU", 0)),
                media_slots=int(res.get(MEDIA_SLOTS, 0)),
                signaling=res.get(SIGNALING, 0) > 0,
                is_head="node:__internal_head__" in res,
            )
        )
    return out


@dataclass(frozen=True)
class Slot:
    node_id: str
    index: int  # global worker index (used for the worker's first UDP port: rtc_min_port + index)
    use_resource: bool  # request one `media_slots` (nodes that advertise it)


def plan_media_slots(nodes: list[NodeInfo], count: int | None = None) -> list[Slot]:
    """One media worker per slot, interleaved over nodes (a0, b0, c0, a1, ...).

    Nodes advertising ``media_slots`` get that many workers; when no node advertises it (a plain
    ``ray start`` or a test Ray), every node gets one per CPU. ``count`` caps (or, above the number
    of slots, cycles over) the plan.
    """
    with_slots = [n for n in nodes if n.media_slots > 0]
    if with_slots:
        per_node = [(n, n.media_slots, True) for n in with_slots]
    else:
        per_node = [(n, max(1, int(n.cpus)), False) for n in nodes if n.cpus > 0 or len(nodes) == 1]
        if not per_node:
            per_node = [(nodes[0], 1, False)]
    per_node.sort(key=lambda t: (t[0].is_head, t[0].node_id))
    order: list[tuple[NodeInfo, bool]] = []
    for round_ in range(max(c for _, c, _ in per_node)):
        for node, cap, use in per_node:
            if round_ < cap:
                order.append((node, use))
    total = len(order) if count is None else count
    if count is not None and count > len(order):
        # more workers than slots: only possible without the resource (it would stay pending)
        order = [(node, False) for node, _ in order]
    return [
        Slot(node_id=order[i % len(order)][0].node_id, index=i, use_resource=order[i % len(order)][1])
        for i in range(total)
    ]


def signaling_node(nodes: list[NodeInfo]) -> NodeInfo:
    """The node for the directory (and the front when no node advertises ``signaling``): the head
    when it advertises ``signaling`` (it outlives any other node: the cluster ends with it), else the
    first node advertising ``signaling`` (stable order: node id), else the head. With several
    signaling nodes, ``ray.nodes()`` order used to decide, and the directory could land on a node
    that a scale-down or a failure then removed."""
    signaling = sorted((n for n in nodes if n.signaling), key=lambda n: (not n.is_head, n.node_id))
    if signaling:
        return signaling[0]
    for node in nodes:
        if node.is_head:
            return node
    return nodes[0]


def plan_fronts(nodes: list[NodeInfo], count: int | None, port: int) -> list[tuple[str, int]]:
    """``(node_id, port)`` of each signaling front: one per node advertising ``signaling`` (else
    the one :func:`signaling_node` picks), or ``count`` round robin over them; the k-th front on one
    node binds ``port + k`` (port 0 stays 0: any free port)."""
    candidates = [n for n in nodes if n.signaling] or [signaling_node(nodes)]
    candidates.sort(key=lambda n: (not n.is_head, n.node_id))
    total = count or len(candidates)
    plan = []
    for i in range(total):
        k = i // len(candidates)
        plan.append((candidates[i % len(candidates)].node_id, port + k if port else 0))
    return plan
