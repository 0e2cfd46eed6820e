"""A sender whose source ended still answers a NACK for its last frame before it says so.

A real ``mcastcam-send --count`` on ``lo`` (multicast pinned to 127.0.0.1, TTL 0) and a
receiver made of a joined socket and the protocol's own ``Reporter``: it reports (so the
sender has an audience), then NACKs the last frame as soon as that frame's first datagram
arrives. Fresh repair symbols of that frame (ESI >= k + R) must arrive before the final
heartbeat (``source_state`` ENDED); ``--fec off`` has no such wait.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcastcam import net
from mcastcam.errors import DecodeError
from mcastcam.protocol.codec import Heartbeat, NackEntry, Symbol, decode
from mcastcam.protocol.reports import Reporter
from mcastcam.protocol.wire import SourceState

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "pi_hqcam_640x480_420_static.mjpeg"
COUNT = 12


def run(fec: str, status: Path) -> tuple[bool, float, float | None]:
    """(repair for the last frame arrived before the final heartbeat, when the NACK left,
    when the final heartbeat came)."""
    group = f"239.255.{os.getpid() % 200 + 30}.{ {'auto': 71, 'off': 72}[fec] }"
    lo = net.resolve_interface("lo")
    rx = net.open_multicast_receiver(group, 0, lo)
    port = rx.getsockname()[1]
    tx = net.open_unicast_sender()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcastcam", "send", "--source", str(SAMPLE), "--loop", "--count",
         str(COUNT), "--fps", "20", "--group", f"{group}:{port}", "--interface", "lo", "--ttl",
         "0", "--fec", fec, "--heartbeat-interval", "0.1", "--status-json", str(status)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    rep = Reporter(0x5EED, "rx", "127.0.0.1", rng=None)
    nacked_at: float | None = None
    repaired = False
    ended_at: float | None = None
    datagrams = 0
    deadline = time.monotonic() + 20
    try:
        rx.settimeout(0.05)
        while time.monotonic() < deadline and ended_at is None:
            now = time.monotonic()
            try:
                data, addr = rx.recvfrom(65535)
            except TimeoutError:
                data = b""
            if data:
                try:
                    msg = decode(data)
                except DecodeError:
                    continue
                if isinstance(msg, Heartbeat):
                    rep.on_heartbeat(msg, addr, now)
                    if msg.source_state == SourceState.ENDED:
                        ended_at = now
                elif isinstance(msg, Symbol):
                    datagrams += 1
                    last = msg.frame_id == COUNT - 1
                    if last and nacked_at is None:
                        nack = rep.nack((NackEntry(frame_id=COUNT - 1, needed=msg.k),))
                        assert nack is not None
                        tx.sendto(*nack)
                        nacked_at = now
                    elif last and msg.esi >= msg.k + msg.repair_planned:
                        repaired = True
            got = rep.report(now, frames_completed=0, frames_dropped=0, datagrams=datagrams,
                             lost=0, stream_bytes=0)  # fmt: skip
            if got is not None:
                tx.sendto(*got)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
        rx.close()
        tx.close()
    assert nacked_at is not None, f"the last frame never arrived: {err}"
    return repaired, nacked_at, ended_at


def test_the_last_frame_is_repaired_before_the_final_heartbeat(tmp_path: Path) -> None:
    repaired, nacked_at, ended_at = run("auto", tmp_path / "status.json")
    assert ended_at is not None and repaired, (tmp_path / "status.json").read_text()
    assert ended_at - nacked_at >= 0.1  # it waited for NACKs (LAST_FRAME_LINGER)


@pytest.mark.parametrize("fec", ["off"])
def test_without_fec_there_is_nothing_to_wait_for(fec: str, tmp_path: Path) -> None:
    repaired, nacked_at, ended_at = run(fec, tmp_path / "status.json")
    assert ended_at is not None and not repaired
    assert ended_at - nacked_at < 0.15
