"""Ray's environment for a local server, set BEFORE Ray is imported (this module imports no Ray).

Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` (and its logging switches) once, when ``ray`` is
imported: setting them later does nothing. So the console script calls :func:`prepare` first thing,
and :func:`actors.runtime.init_ray` also passes the node IP ``127.0.0.1`` to a local Ray. With both,
a local ``studyrooms serve`` listens on loopback only (GCS, raylet, object manager, workers, the
driver), whatever the environment says; attaching to a cluster (``--address``) changes nothing here.
"""

from __future__ import annotations

import os
from typing import MutableMapping

LOCAL_NODE_IP = "127.0.0.1"

LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # P1: keep every Ray listener on 127.0.0.1
    "RAY_AUTH_MODE": "disabled",  # P2: same behaviour on fresh and used machines
    "RAY_USAGE_STATS_ENABLED": "0",
}
#: forced for a local server: a user's RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 must not open it to the LAN
FORCED_LOCAL = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",)

#: a server's log output: every actor line forwarded (no "[repeated 3x across cluster]" folding)
SERVER_LOG_ENV = {"RAY_DEDUP_LOGS": "0"}


def set_loopback_env(env: MutableMapping[str, str] | None = None, *, force: bool = False) -> None:
    """Default the loopback Ray variables (an explicit value wins unless ``force``)."""
    target = os.environ if env is None else env
    for key, value in LOOPBACK_ENV.items():
        if force and key in FORCED_LOCAL:
            target[key] = value
        else:
            target.setdefault(key, value)


def is_local(address: str | None, env: MutableMapping[str, str] | None = None) -> bool:
    """True when ``studyrooms serve`` will start its own Ray (no ``--address`` nor ``RAY_ADDRESS``)."""
    env = os.environ if env is None else env
    address = address or env.get("RAY_ADDRESS") or None
    return address in (None, "local")


def prepare(address: str | None, *, log_format: str = "text", env: MutableMapping[str, str] | None = None) -> None:
    """Called by the console script before anything imports Ray."""
    target = os.environ if env is None else env
    if is_local(address, target):
        set_loopback_env(target, force=True)
    for key, value in SERVER_LOG_ENV.items():
        target.setdefault(key, value)
    if log_format == "json":  # one JSON object per line: no "(Actor pid=...)" prefix in front of it
        target.setdefault("RAY_DISABLE_WORKER_LOG_PREFIX", "1")
