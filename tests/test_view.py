"""mcastcam view / dump against a real receiver fed by a real sender on loopback multicast."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mcastcam.cli_util import UsageError
from mcastcam.client_cli import parse_dump, parse_view
from tests import test_end_to_end as e2e
from tests.conftest import naive_split
from tests.test_end_to_end import SAMPLE, Loop, free_port, receiver, sender, status, wait_for

pytestmark = pytest.mark.multicast

# the fixtures of the end-to-end tests: a loop running the CLIs, a random loopback group
programs = e2e.programs
group = e2e.group


def mcastcam(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcastcam", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_dump_saves_byte_exact_frames(programs: Loop, group: str, tmp_path: Path) -> None:
    port, _ = receiver(programs, group, "--tcp", f"127.0.0.1:{free_port()}")
    sender(programs, group, "sample", "--fps", "30", "--loop")
    wait_for(lambda: status(port)["online"], 10)
    source = set(naive_split(SAMPLE.read_bytes()))
    out = tmp_path / "frames"
    run = mcastcam("dump", f"http://127.0.0.1:{port}/stream", "--count", "12", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"saved 12 frames to {out}\n"
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"frame-{i:06d}.jpg" for i in range(12)]
    assert all(f.read_bytes() in source for f in files)  # byte-exact JPEGs of the sample


def test_view_prints_fps_and_latency_once_a_second(programs: Loop, group: str) -> None:
    port, _ = receiver(programs, group)
    sender(programs, group, "sample", "--fps", "30", "--loop")
    wait_for(lambda: status(port)["online"], 10)
    run = mcastcam("view", f"http://127.0.0.1:{port}/stream", "--count", "75")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == f"75 frames from http://127.0.0.1:{port}/stream"
    stats = [re.fullmatch(r" *([\d.]+) fps, latency ([\d.]+) ms \(median\), ([\d.]+) Mbit/s, "
                          r"([\d.]+) kB/frame", line) for line in lines[:-1]]  # fmt: skip
    assert len(stats) >= 1 and all(stats), lines
    for m in stats:
        assert m is not None
        assert 15 <= float(m.group(1)) <= 45  # about 30 fps
        assert 0 <= float(m.group(2)) < 1000  # one host's clock
        assert float(m.group(3)) > 0


def test_view_says_what_it_waits_for_and_bad_options_exit_2(tmp_path: Path) -> None:
    port = free_port()  # nothing listens
    run = mcastcam("view", f"http://127.0.0.1:{port}/stream", "--no-reconnect", "--timeout", "2")
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "mcastcam view: error:" in run.stderr
    run = mcastcam("dump", f"http://127.0.0.1:{port}/stream", "--count", "3")
    assert run.returncode == 2 and "--out" in run.stderr
    with pytest.raises(UsageError, match="--count 0: must be at least 1"):
        parse_view(["http://x/stream", "--count", "0"])
    assert parse_dump(["tcp://h:1", "--count", "2", "--out", str(tmp_path)]).out == tmp_path


@pytest.mark.clients
@pytest.mark.parametrize("path", ["/stream", "/video.mjpg"])
def test_opencv_reads_the_stream(programs: Loop, group: str, path: str) -> None:
    cv2 = pytest.importorskip("cv2")  # opencv-python-headless, a dev extra
    port, _ = receiver(programs, group)
    sender(programs, group, "sample", "--fps", "30", "--loop")
    wait_for(lambda: status(port)["online"], 10)
    capture = cv2.VideoCapture(f"http://127.0.0.1:{port}{path}", cv2.CAP_FFMPEG)
    try:
        assert capture.isOpened()
        shapes = []
        for _ in range(10):
            ok, image = capture.read()
            assert ok
            shapes.append(image.shape)
    finally:
        capture.release()
    assert shapes == [(480, 640, 3)] * 10  # the sample's 640x480 frames, decoded
