"""A media worker / front process raises its open-file soft limit to the hard limit (a socket per
transport, a WebSocket per participant): checked in a child process started with a low soft limit."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import resource, socket
from actors.fdlimit import raise_nofile_limit
before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
now = raise_nofile_limit()
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(300)]  # past the old limit
print(before, now, resource.getrlimit(resource.RLIMIT_NOFILE)[0], len(socks))
"""


def test_the_soft_limit_is_raised_so_sockets_past_the_old_limit_open():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 512:
        import pytest
        pytest.skip(f"hard open-file limit {hard} too low to show the raise")

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))

    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         preexec_fn=low, check=True).stdout.split()
    before, now, effective, opened = map(int, out)
    assert before == 128 and now == effective >= 512 and opened == 300
