"""cluster.yaml beyond offline validation: Ray's fake multi-node provider (``RAY_FAKE_CLUSTER=1``,
provider ``fake_multinode``) runs the autoscaler on this machine with cluster.yaml's node types and
resources; it launches the ``media`` node by itself (min_workers), and ``studyrooms serve --address``
(a subprocess, as on the real head) places signaling on the head (``signaling``) and one media worker
per ``media_slots`` on the launched node; a client joins a room through it.

What cannot run locally is left out of the derived config and said here: the AWS provider and its
``node_config`` (instances, security group), and the SSH-run setup/start commands (the fake provider
starts nodes as local processes). The head type is named ``ray.head.default`` because that is the
type the fake provider tags its head with. Everything started is one process group, killed at the end.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent

pytestmark = [pytest.mark.multinode, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]


def free_port(low: int = 0) -> int:
    """A free TCP port (``low``: at least this, e.g. outside Ray's worker port range)."""
    for _ in range(200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 0 if not low else low + int.from_bytes(os.urandom(2), "big") % 9000))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def fake_config(gcs_address: str) -> dict:
    """cluster.yaml's node types for the fake provider (see the module docstring)."""
    real = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = real["available_node_types"]
    head = real["head_node_type"]
    fake_types = {"ray.head.default": {"resources": dict(types[head]["resources"]), "node_config": {},
                                       "max_workers": 0}}
    for name, spec in types.items():
        if name != head:
            fake_types[name] = {"resources": dict(spec["resources"]), "labels": dict(spec.get("labels", {})),
                                "node_config": {}, "min_workers": 1, "max_workers": 1}
    blank = {key: [] for key in ("cluster_synced_files", "rsync_exclude", "rsync_filter", "initialization_commands",
                                 "setup_commands", "head_setup_commands", "worker_setup_commands",
                                 "head_start_ray_commands", "worker_start_ray_commands")}
    return {"cluster_name": f"{real['cluster_name']}-fake", "max_workers": len(fake_types) - 1,
            "upscaling_speed": 1.0, "idle_timeout_minutes": 10,
            "provider": {"type": "fake_multinode", "gcs_address": gcs_address},
            "auth": {"ssh_user": "ray"}, "available_node_types": fake_types, "head_node_type": "ray.head.default",
            "file_mounts": {}, "file_mounts_sync_continuously": False, **blank}


def env(**extra: str) -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("STUDYROOMS_", "RAY_"))}
    out.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PYTHONUNBUFFERED="1", **extra)
    return out


def read_line(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """The first stdout line containing ``needle`` (Ray's autoscaler may print before it)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline and proc.poll() is None:
        if sel.select(timeout=0.5):
            line = proc.stdout.readline()
            seen.append(line)
            if needle in line:
                return line
    return "".join(seen)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_cluster_yaml_node_types_on_the_fake_multinode_provider(tmp_path):
    import ray

    real = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    media_type = next(n for n in real["available_node_types"] if n != real["head_node_type"])
    slots = int(real["available_node_types"][media_type]["resources"]["media_slots"])
    head_resources = dict(real["available_node_types"][real["head_node_type"]]["resources"])
    port = free_port(20000)  # outside Ray's worker port range (design/ray.md P4)
    config = tmp_path / "fake.yaml"
    config.write_text(yaml.safe_dump(fake_config(f"127.0.0.1:{port}")))
    ray_tmp = tempfile.mkdtemp(prefix="sr-fake-")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", f"--autoscaling-config={config}",
         f"--num-cpus={int(head_resources.pop('CPU', 0))}", f"--resources={json.dumps(head_resources)}",
         "--include-dashboard=false", f"--ray-client-server-port={free_port(20000)}",
         f"--dashboard-agent-listen-port={free_port(20000)}", "--block"],
        env=env(RAY_FAKE_CLUSTER="1", RAY_TMPDIR=ray_tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    serve = None
    if ray.is_initialized():
        ray.shutdown()  # (the session's Ray: multi-node tests run last)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not ray.is_initialized():
            assert head.poll() is None, head.stderr.read()[-3000:]
            try:
                ray.init(address=f"127.0.0.1:{port}", log_to_driver=False, namespace="fake-probe")
            except Exception:  # noqa: BLE001 - the head is still starting
                time.sleep(1)
        media_node = None
        while time.monotonic() < deadline and media_node is None:  # the autoscaler launches `media` itself
            media_node = next((n for n in ray.nodes() if n["Alive"] and n["Resources"].get("media_slots")), None)
            time.sleep(0.5)
        assert media_node is not None, "the autoscaler did not launch the media node"
        assert media_node["Resources"]["media_slots"] == slots
        head_node = next(n for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])
        assert head_node["Resources"].get("signaling") == 1 and not head_node["Resources"].get("CPU")

        web = free_port()
        serve = subprocess.Popen([str(BIN / "studyrooms"), "serve", "--address", f"127.0.0.1:{port}",
                                  "--port", str(web)], env=env(RAY_TMPDIR=ray_tmp, RAY_SCHEDULER_EVENTS="0"), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
        line = read_line(serve, "serving on", 120)
        assert f"http://127.0.0.1:{web}/" in line, (line, serve.stderr.read()[-3000:] if serve.poll() else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/stats", timeout=20) as resp:
            stats = json.loads(resp.read())
        assert len(stats["workers"]) == slots  # one media worker per media slot...
        assert {w["node"] for w in stats["workers"]} == {media_node["NodeID"]}  # ...all on the launched node

        import asyncio

        import socketio

        async def join() -> dict:
            with urllib.request.urlopen(urllib.request.Request(
                    f"http://127.0.0.1:{web}/api/token", data=json.dumps({"roomId": "fake", "displayName": "Fay"})
                    .encode(), headers={"Content-Type": "application/json"}), timeout=20) as resp:
                token = json.loads(resp.read())["token"]
            sio = socketio.AsyncClient(reconnection=False)
            await sio.connect(f"http://127.0.0.1:{web}", auth={"token": token}, transports=["websocket"],
                              wait_timeout=20)
            try:
                reply = await sio.call("join-room", {"roomId": "fake", "displayName": "Fay"}, timeout=30)
                transport = await sio.call("create-transport", {"direction": "recv"}, timeout=30)
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/rooms", timeout=20) as resp:
                    rooms = json.loads(resp.read())["rooms"]
                return {"join": reply, "transport": transport, "rooms": rooms}
            finally:
                await sio.disconnect()

        seen = asyncio.run(join())
        assert seen["join"]["ok"] and seen["transport"]["ok"], seen
        assert seen["transport"]["data"]["iceCandidates"][0]["ip"] == "127.0.0.1"
        assert [r["roomId"] for r in seen["rooms"]] == ["fake"]
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    finally:
        if serve is not None:
            kill_group(serve, signal.SIGKILL)
        if ray.is_initialized():
            ray.shutdown()
        kill_group(head)  # `ray start --block` stops its processes, the fake nodes with them
        shutil.rmtree(ray_tmp, ignore_errors=True)
