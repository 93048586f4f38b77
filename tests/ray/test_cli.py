"""`studyrooms serve` as a user runs it: a subprocess that starts its own local Ray, prints the URL,
answers /healthz, and exits cleanly on SIGTERM; configuration errors exit 2 with one line."""

from __future__ import annotations

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

import psutil
import pytest

BIN = pathlib.Path(sys.executable).with_name("studyrooms")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A port p with p and p + 1 free (bounded tries)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports")


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDYROOMS_", "RAY_ADDRESS"))}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "args, env, needle",
    [
        (["--host", "0.0.0.0"], {}, "STUDYROOMS_AUTH_SECRET"),
        ([], {"STUDYROOMS_RTC_MIN_PORT": "abc"}, "rtc_min_port"),
        (["--workers", "0"], {}, "num_workers"),
        ([], {"STUDYROOMS_TURN_URLS": "turn:turn.example.org:3478"}, "STUDYROOMS_TURN_SECRET"),
    ],
)
def test_bad_setting_exits_2_with_one_line(args, env, needle):
    proc = subprocess.run([str(BIN), "serve", *args], env=clean_env(**env), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)  # a local Ray start takes 4-6 s idle, up to a minute on a loaded 2-core box
def test_serve_starts_answers_and_stops_on_sigterm():
    """Two signaling fronts on the one local node (the second on port + 1): the stdout line names
    both URLs, first the one to open, and both serve."""
    tmp = tempfile.mkdtemp(prefix="sr-cli-")
    port = free_port_pair()
    t0 = time.monotonic()
    proc = subprocess.Popen([str(BIN), "serve", "--port", str(port), "--workers", "1"],
                            env=clean_env(RAY_TMPDIR=tmp, STUDYROOMS_SERVER_SIGNALING_FRONTS="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = _read_line(proc, timeout=150)
        urls = [f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port + 1}/"]
        assert line.startswith(f"StudyRooms serving on {urls[0]} {urls[1]} ("), line
        assert "2 signaling fronts" in line, line
        started = time.monotonic() - t0
        for url in urls:
            with urllib.request.urlopen(url + "healthz", timeout=10) as resp:
                assert resp.status == 200 and b'"ok"' in resp.read()
        print(f"studyrooms serve: both front URLs printed and /healthz ok on each after {started:.1f} s")
        t1 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        print(f"studyrooms serve: exited after SIGTERM in {time.monotonic() - t1:.1f} s")
        err = proc.stderr.read()
        assert "Traceback" not in err, err
        deadline = time.monotonic() + 15
        while _ray_processes(tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _ray_processes(tmp) == []  # its local Ray went with it
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """First stdout line (the URL), bounded; the process's stderr is shown on failure."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=0.5):
            line = proc.stdout.readline()
            if line:
                return line
        if proc.poll() is not None:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    pytest.fail(f"no URL within {timeout} s (exit {proc.returncode}); stderr:\n{proc.stderr.read()[-3000:]}")


def _ray_processes(tmp: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(tmp in part for part in (p.info["cmdline"] or [])):
                out.append(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_serve_attaches_to_a_running_cluster(ray_session):
    import ray

    address = ray.get_runtime_context().gcs_address
    port = free_port()
    proc = subprocess.Popen([str(BIN), "serve", "--port", str(port), "--workers", "1", "--address", address],
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = _read_line(proc, timeout=90)
        assert f"http://127.0.0.1:{port}/" in line and "Ray cluster" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == "studyrooms"}
        assert {"studyrooms:directory", "studyrooms:media-0", "studyrooms:room-host-0",
                "studyrooms:signaling-0"} <= names
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # its actors are gone, the cluster stays up
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                     if a["namespace"] == "studyrooms"]
            if not names:
                break
            time.sleep(0.2)
        assert names == []
        assert ray.is_initialized() and ray.cluster_resources().get("CPU")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
