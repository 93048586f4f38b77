"""The console script's environment and log set-up, without starting Ray: Ray's loopback switches
are set before anything imports Ray (a user's value cannot open a local server to the LAN), and the
text log line carries the bound room/participant ids."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

from actors import logs, rayenv
from studyrooms import observability as obs


def test_the_console_script_does_not_import_ray_before_setting_its_environment():
    code = ("import sys, actors.cli, actors.logs, actors.rayenv, actors.telemetry; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_local_server_forces_loopback_and_a_cluster_is_left_alone():
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "token"}
    rayenv.prepare(None, env=env)
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # forced: whatever the environment says
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_DEDUP_LOGS"] == "0" and "RAY_DISABLE_WORKER_LOG_PREFIX" not in env
    cluster = {"RAY_ADDRESS": "10.0.0.5:6379"}
    rayenv.prepare(None, log_format="json", env=cluster)
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in cluster and cluster["RAY_DISABLE_WORKER_LOG_PREFIX"] == "1"
    assert not rayenv.is_local("auto", {}) and rayenv.is_local("local", {}) and rayenv.is_local(None, {})


def test_text_and_json_lines_carry_the_bound_ids(monkeypatch):
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        for fmt in ("text", "json"):
            stream = io.StringIO()
            logs.configure("INFO", fmt, stream=stream)
            with obs.log_context(room_id="maths", participant_id="p-1"):
                logging.getLogger("studyrooms.room").info("room maths: p-1 joined (1)")
            logging.getLogger("studyrooms.room").debug("not at INFO")
            lines = stream.getvalue().splitlines()
            assert len(lines) == 1, lines
            if fmt == "text":
                assert " INFO studyrooms.room: room maths: p-1 joined (1) [room=maths participant=p-1]" in lines[0]
            else:
                record = json.loads(lines[0])
                assert (record["room_id"], record["participant_id"], record["level"]) == ("maths", "p-1", "INFO")
        assert sum(1 for h in root.handlers if getattr(h, "_studyrooms_handler", False)) == 1  # idempotent
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def test_the_job_runtime_env_carries_level_format_and_hook():
    env = logs.job_runtime_env("debug", {"STUDYROOMS_LOG_FORMAT": "JSON", "STUDYROOMS_DEBUG_TAGS": "ice"})
    assert env["env_vars"] == {"STUDYROOMS_LOG_LEVEL": "DEBUG", "STUDYROOMS_LOG_FORMAT": "json",
                               "STUDYROOMS_DEBUG_TAGS": "ice"}
    assert env["worker_process_setup_hook"] == "actors.logs.setup_worker_logging"
    module, _, name = env["worker_process_setup_hook"].rpartition(".")
    assert callable(getattr(__import__(module, fromlist=[name]), name))
