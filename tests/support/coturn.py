"""Real coturn (Debian's ``coturn`` package, scripts/install-coturn.sh) for the TURN tests.

:func:`start_coturn` runs ``turnserver`` with its own config file on free loopback ports, in the
TURN REST (``use-auth-secret``) mode StudyRooms hands out credentials for. The config is the one of
docs/deployment.md trimmed to loopback, plus ``allow-loopback-peers``, which only a test needs: here
the media worker's host candidate is 127.0.0.1. ``udp=False`` / ``tcp=False`` leave out the UDP /
TCP client listener (a client that can reach the TURN server only over TCP is one on a network
that blocks UDP).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT_S = 15.0
REALM = "studyrooms.test"
RELAY_PORTS = 40  # relay endpoints (two per client transport at most here)


def turnserver_path() -> str:
    path = shutil.which("turnserver") or ("/usr/bin/turnserver" if os.access("/usr/bin/turnserver", os.X_OK) else None)
    if path is None:
        import pytest

        pytest.fail("coturn is not installed: run `bash scripts/install-coturn.sh` (apt-get install -y coturn); "
                    "`make test` does this itself. The TURN tests are never skipped.", pytrace=False)
    return path


def free_tcp_udp_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free TCP+UDP port on 127.0.0.1")


def free_udp_range(size: int = RELAY_PORTS) -> int:
    """The first port of ``size`` consecutive UDP ports free now (relay endpoints), below the
    media workers' default range (40000-49999) and the kernel's ephemeral range."""
    for _ in range(100):
        base = random.randrange(20000, 32000 - size)
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range for coturn's relays")


@dataclass
class Coturn:
    port: int
    secret: str
    relay_min: int
    relay_max: int
    proc: subprocess.Popen
    log_path: Path
    udp: bool
    tcp: bool

    def urls(self) -> list[str]:
        out = []
        if self.udp:
            out.append(f"turn:127.0.0.1:{self.port}?transport=udp")
        if self.tcp:
            out.append(f"turn:127.0.0.1:{self.port}?transport=tcp")
        return out

    def is_relay_port(self, port: int) -> bool:
        return self.relay_min <= port <= self.relay_max

    def log(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as err:
            return f"(no coturn log: {err})"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # our own child only
                self.proc.wait(timeout=10)


def start_coturn(workdir: Path, secret: str, *, udp: bool = True, tcp: bool = True, port: int | None = None) -> Coturn:
    """coturn in the TURN REST mode on free loopback ports (the test-only config)."""
    port = port or free_tcp_udp_port()
    relay_min = free_udp_range(RELAY_PORTS)
    relay_max = relay_min + RELAY_PORTS - 1
    lines = [
        "listening-ip=127.0.0.1",
        f"listening-port={port}",
        "relay-ip=127.0.0.1",
        f"min-port={relay_min}",
        f"max-port={relay_max}",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        f"realm={REALM}",
        "fingerprint",
        "no-tls",
        "no-dtls",
        "no-cli",
        "no-multicast-peers",
        "allow-loopback-peers",  # TEST ONLY: the media worker's candidate is 127.0.0.1 here
    ]
    if not udp:
        lines.append("no-udp")
    if not tcp:
        lines.append("no-tcp")
    return run_turnserver(workdir, lines, secret=secret, port=port, relay=(relay_min, relay_max), udp=udp, tcp=tcp)


def run_turnserver(workdir: Path, lines: list[str], *, secret: str, port: int, relay: tuple[int, int],
                   udp: bool = True, tcp: bool = True) -> Coturn:
    """``turnserver -c <lines + pid/db/log files in workdir>``; returns once it answers on ``port``."""
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [*lines, f"pidfile={workdir / 'turnserver.pid'}", f"userdb={workdir / 'turndb'}",
             "log-file=stdout", "simple-log"]
    conf = workdir / "turnserver.conf"
    conf.write_text("\n".join(lines) + "\n")
    log_path = workdir / "turnserver.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([turnserver_path(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                cwd=workdir, start_new_session=True)
    server = Coturn(port, secret, relay[0], relay[1], proc, log_path, udp, tcp)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"turnserver exited with {proc.returncode}:\n{server.log()}")
        if _answers(port, udp, tcp):
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"turnserver not answering on 127.0.0.1:{port} within {READY_TIMEOUT_S} s:\n"
                               f"{server.log()}")
        time.sleep(0.1)


def _answers(port: int, udp: bool, tcp: bool) -> bool:
    """A STUN Binding request gets a response (UDP), or the TCP listener accepts."""
    if tcp:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False
    binding = bytes.fromhex("0001000021122442") + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        try:
            s.sendto(binding, ("127.0.0.1", port))
            data = s.recv(2048)
        except OSError:
            return False
        return data[:2] == b"\x01\x01" and data[8:20] == binding[8:20]
