"""A simulated multi-node Ray cluster (``ray.cluster_utils.Cluster``, loopback) for one test module.

The head has ``num_cpus=0`` and advertises ``signaling`` (a front runs there); the other nodes are
given by name. The driver leaves the session Ray while the cluster runs (a driver talks to one
cluster at a time). No ``temp_dir`` is passed (ray.md P5: RAY_TMPDIR is set).

``cluster.ids`` maps ``"head"`` and every node's name to its Ray node id; ``cluster.nodes`` maps the
names to the node handles (for ``cluster.remove_node``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def simulated_cluster(namespace: str, nodes: dict[str, dict]) -> Iterator:
    """``nodes``: ``{name: add_node kwargs}``, e.g. ``{"a": dict(num_cpus=1, resources={"media_slots": 1})}``."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True,
                      head_node_args=dict(num_cpus=0, resources={"signaling": 1}, include_dashboard=False))
    try:
        cluster.nodes = {name: cluster.add_node(**kwargs) for name, kwargs in nodes.items()}
        cluster.wait_for_nodes(timeout=120)
        ray.init(address=cluster.address, log_to_driver=False, namespace=namespace)
        cluster.ids = {"head": cluster.head_node.node_id, **{k: n.node_id for k, n in cluster.nodes.items()}}
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
