"""Fixtures of the browser tests: Debian's Chromium, the built page, the real server as a subprocess.

The server is started with the product's own command (``studyrooms serve``) on a free loopback
port, with its own Ray (private ``RAY_TMPDIR``) unless ``RAY_ADDRESS`` names a cluster to attach
to. These tests are never skipped: without Chromium they FAIL and say how to install it
(``scripts/install-chromium.sh``). For determinism run them in a loopback-only network namespace
(see /work/shared/design/browser-e2e.md):

    unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -m browser tests/browser'

Outside one, Chrome renominates its ICE pair to eth0 (loopback has network-cost 50); the packets
still stay on this host and the ICE-lite server follows the renomination.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEB_DIST = REPO / "web" / "dist"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
HEALTH_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
ROOM_CAPACITY = 3  # small on purpose: the scenario fills a room and checks the room-full message
AUDIO_ONLY_THRESHOLD = 2  # a third person crosses it: everyone gets the recommend-audio-only banner

# Flags measured in browser-e2e.md. Never add --disable-features (it would replace Playwright's list).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    for path in CHROMIUM_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    pytest.fail(
        "Chromium is not installed (looked for " + ", ".join(CHROMIUM_CANDIDATES) + "). "
        "Install it with `bash scripts/install-chromium.sh` (apt-get install -y chromium); "
        "`make test` does this itself. The browser tests are never skipped.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def chromium_args() -> list[str]:
    return list(CHROMIUM_ARGS)


@pytest.fixture(scope="session")
def web_dist() -> Path:
    """The built page; builds it (scripts/build-web.sh: npm ci + esbuild) when web/dist is missing."""
    if not (WEB_DIST / "index.html").is_file() or not (WEB_DIST / "app.js").is_file():
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "build-web.sh")],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )
        if proc.returncode != 0:
            output = f"{proc.stdout}\n{proc.stderr}"
            pytest.fail(f"scripts/build-web.sh failed ({proc.returncode}):\n{output}", pytrace=False)
    for name in ("index.html", "app.js", "style.css"):
        assert (WEB_DIST / name).is_file(), f"web/dist/{name} missing after the build"
    return WEB_DIST


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, data: dict | None = None, timeout: float = 5.0) -> tuple[int, object]:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, raw.decode(errors="replace")


def http_text(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


@dataclass
class Server:
    base_url: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as err:
            return f"(no server log: {err})"
        return "\n".join(text.splitlines()[-lines:])

    def rooms(self) -> list[dict]:
        status, body = http_json(self.base_url + "/api/rooms")
        assert status == 200, f"GET /api/rooms -> {status} {body}"
        return body["rooms"]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"studyrooms serve (pid {proc.pid}) ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s; "
              "killing its process group")
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what this fixture started
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """Extra environment of the module's server (a test module overrides it, e.g. TURN settings)."""
    return {}


@pytest.fixture(scope="module")
def server(web_dist, tmp_path_factory, server_env, request) -> Server:
    """`studyrooms serve --host 127.0.0.1 --port <free>`; waits for /healthz == 200; SIGTERM at the end.
    The environment gets the module's ``server_env`` fixture, then a module-level ``SERVER_ENV`` dict."""
    exe = REPO / ".venv" / "bin" / "studyrooms"
    if not exe.exists():
        exe = Path(sys.executable).with_name("studyrooms")
    if not exe.exists():
        pytest.fail(f"`studyrooms` not found next to {sys.executable}; run `make setup`", pytrace=False)
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "studyrooms-serve.log"
    ray_tmp = tempfile.mkdtemp(prefix="sr-br-")  # short path: Ray puts unix sockets there
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("STUDYROOMS_"):
            del env[key]  # the test decides the configuration; dev mode needs no auth secret
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TMPDIR=ray_tmp,
        PYTHONUNBUFFERED="1",
        STUDYROOMS_ROOMS_CAPACITY=str(ROOM_CAPACITY),
        STUDYROOMS_ROOMS_AUDIO_ONLY_THRESHOLD=str(AUDIO_ONLY_THRESHOLD),
        STUDYROOMS_SERVER_WEB_ROOT=str(web_dist),
    )
    env.update(server_env)
    env.update(getattr(request.module, "SERVER_ENV", {}))
    # RAY_ADDRESS (a cluster CI started) is passed through unchanged: the server attaches to it.
    host = getattr(request.module, "SERVER_HOST", "127.0.0.1")  # a module may serve on another local address
    cmd = [str(exe), "serve", "--host", host, "--port", str(port)]
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Server(f"http://{host}:{port}", port, proc, log_path)
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        last = "no answer yet"
        while True:
            if proc.poll() is not None:
                pytest.fail(f"`{' '.join(cmd)}` exited with {proc.returncode} before /healthz answered:\n"
                            f"{srv.log_tail()}", pytrace=False)
            try:
                status, body = http_json(srv.base_url + "/healthz", timeout=2.0)
                last = f"{status} {body}"
                if status == 200:
                    break
            except OSError as err:
                last = repr(err)
            if time.monotonic() > deadline:
                pytest.fail(f"GET /healthz not 200 within {HEALTH_TIMEOUT_S:.0f} s (last: {last}):\n"
                            f"{srv.log_tail()}", pytrace=False)
            time.sleep(0.5)
        status, text = http_text(srv.base_url + "/")
        assert status == 200 and 'src="app.js"' in text, (
            f"the server does not serve the built page at / (HTTP {status}, web root {web_dist}):\n"
            f"{text[:500]}")
        yield srv
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        print(f"\n--- studyrooms serve log (tail) ---\n{srv.log_tail(40)}")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
