"""The page's RoomClient under Node's test runner (web/test/*.test.js): mediasoup-client's FakeHandler
and a scripted fake server check the signaling the page sends and how it handles notifications.
Fast (about 1 s), no browser and no server; the real-browser test is test_study_room.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
WEB = Path(__file__).resolve().parents[2] / "web"


def test_room_client_node_unit_tests(web_dist):  # web_dist: npm ci + build done when missing
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js >= 18) is required to build and test the page", pytrace=False)
    if not (WEB / "node_modules" / "mediasoup-client").is_dir():
        subprocess.run(["bash", str(WEB.parent / "scripts" / "build-web.sh")], check=True, timeout=300)
    proc = subprocess.run([node, "--test", "test/"], cwd=WEB, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"node --test failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert "# fail 0" in proc.stdout
