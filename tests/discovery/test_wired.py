"""Issue #5's acceptance with the real programs, in a namespaced LAN.

``mcastcam-send`` on h0 (test pattern, multicast on eth0) must be listed by
``mcastcam-discover`` on h1 within 1 s, and ``mcastcam-recv --http`` with no group on h2 must
find it and serve its frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
SEND = [sys.executable, "-m", "mcastcam.sender.cli", "--source", "testpattern", "--size",
        "320x240", "--fps", "10", "--interface", "eth0", "--group", "239.255.9.9:9000",
        "--name", "cam0", "--quiet"]


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _discover_until_found(lab: Any, i: int, tries: int = 20) -> list[dict[str, Any]]:
    """Run the CLI (1 s each) until it lists something; the sender may still be importing."""
    for _ in range(tries):
        done = lab.host(i).run([sys.executable, "-m", "mcastcam.discovery.cli", "--interface",
                                "eth0", "--json", "--timeout", "1"], check=False, timeout=30)
        assert done.returncode in (0, 3), done.stderr  # 3: nothing answered (yet)
        found: list[dict[str, Any]] = json.loads(done.stdout)
        if found:
            return found
    return []


def test_real_sender_is_discovered_within_one_second(netlab: Any) -> None:
    lab = netlab(hosts=2)
    sender = lab.host(0).popen(SEND, cwd=str(REPO), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        found = _discover_until_found(lab, 1)
    finally:
        _stop(sender)
    assert [(f["name"], f["host"], f["transport"], f["group"], f["port"], f["width"],
             f["height"]) for f in found] == [
        ("cam0", lab.host(0).address, "multicast", "239.255.9.9", 9000, 320, 240)]


def test_receiver_without_group_follows_the_discovered_sender(netlab: Any,
                                                               tmp_path: Path) -> None:
    lab = netlab(hosts=3)
    sender = lab.host(0).popen(SEND, cwd=str(REPO), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    receiver = None
    try:
        assert _discover_until_found(lab, 1), "the sender never answered"
        receiver = lab.host(2).popen(
            [sys.executable, "-m", "mcastcam.receiver.cli", "--interface", "eth0", "--http",
             "0.0.0.0:8080", "--quiet"], cwd=str(REPO), stdout=subprocess.DEVNULL)
        url = f"http://{lab.host(2).address}:8080/snapshot"
        snapshot = tmp_path / "snapshot.jpg"
        for _ in range(100):  # up to ~20 s: discovery, then the first frame
            done = lab.host(2).run(["curl", "-s", "--fail", "--max-time", "2", "-o",
                                    str(snapshot), url], check=False, timeout=10)
            if done.returncode == 0 and snapshot.exists() and snapshot.stat().st_size:
                break
            assert receiver.poll() is None, f"mcastcam-recv exited: {receiver.stderr.read()}"  # type: ignore[union-attr]
            time.sleep(0.2)
        data = snapshot.read_bytes() if snapshot.exists() else b""
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9", "no JPEG served"
    finally:
        if receiver is not None:
            _stop(receiver)
        _stop(sender)
