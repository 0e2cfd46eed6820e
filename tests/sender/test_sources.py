"""Tests for the file, folder, sample and test-pattern sources and the open_source factory."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from mcastcam.errors import ConfigError, SourceError
from mcastcam.jpeg import is_valid_jpeg, split_jpegs
from mcastcam.protocol.frame import CapturedFrame
from mcastcam.sender.sources import FrameSource, open_source
from mcastcam.sender.sources.sample import sample_bytes
from mcastcam.sender.sources.testpattern import FONT_5X7, TestPatternSource, text_layout
from tests.conftest import WEBCAM_SHA256, DataFiles


def _jpeg(w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return bytes(simplejpeg.encode_jpeg(img, quality=75))


async def _take(source: FrameSource, n: int, limit_s: float = 30.0) -> list[CapturedFrame]:
    out: list[CapturedFrame] = []

    async def run() -> None:
        async for frame in source.frames():
            out.append(frame)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), limit_s)
    return out


def _collect(source: FrameSource, n: int) -> list[CapturedFrame]:
    try:
        return asyncio.run(_take(source, n))
    finally:
        source.close()


def test_mjpeg_file_frames_match_split_and_readme(data_files: DataFiles) -> None:
    path = data_files / "synthetic_160x120_420.mjpeg"
    data = path.read_bytes()
    expected = [data[s:e] for s, e in split_jpegs(data)]
    assert len(expected) == 167  # frames of the synthetic recording (tests/data/README.md)
    src = open_source(str(path), fps=1000)
    assert (src.width, src.height, src.fps) == (160, 120, 1000.0)
    assert "167 frames 160x120" in src.describe()
    frames = _collect(src, 1000)  # plays once: stops after the last frame
    assert [f.jpeg for f in frames] == expected
    assert [f.seq for f in frames] == list(range(167))
    assert src.state == "ended"
    assert src.frames_captured == 167
    assert src.frames_corrupt_skipped == 0


def test_capture_ts_is_wall_clock_at_hand_out(tmp_path: Path) -> None:
    p = tmp_path / "two.mjpeg"
    p.write_bytes(_jpeg(32, 32, 1) + _jpeg(32, 32, 2))
    before = time.time_ns()
    frames = _collect(open_source(str(p), fps=50), 2)
    after = time.time_ns()
    assert before <= frames[0].capture_ts_ns <= frames[1].capture_ts_ns <= after
    assert frames[1].capture_ts_ns - frames[0].capture_ts_ns >= 15_000_000  # ~1/50 s apart


def test_pacing_follows_fps(tmp_path: Path) -> None:
    p = tmp_path / "ten.mjpeg"
    p.write_bytes(b"".join(_jpeg(16, 16, i) for i in range(10)))
    t0 = time.monotonic()
    frames = _collect(open_source(str(p), fps=100), 10)
    elapsed = time.monotonic() - t0
    assert len(frames) == 10
    assert elapsed >= 0.09  # frame k is due at start + k/100 s


def test_corrupt_frame_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    good = [_jpeg(24, 24, i) for i in range(4)]
    bad = good[1][: len(good[1]) // 2]  # truncated
    p = tmp_path / "c.mjpg"
    p.write_bytes(good[0] + bad + good[2] + b"garbage" + good[3])
    src = open_source(str(p), fps=500)
    assert src.frames_corrupt_skipped == 1
    frames = _collect(src, 10)
    assert [f.jpeg for f in frames] == [good[0], good[2], good[3]]
    assert "1 corrupt frame(s) skipped" in src.describe()


def test_loop_mode_repeats(tmp_path: Path) -> None:
    good = [_jpeg(16, 16, i) for i in range(3)]
    p = tmp_path / "l.mjpeg"
    p.write_bytes(b"".join(good))
    src = open_source(str(p), fps=500, loop=True)
    frames = _collect(src, 8)
    assert [f.jpeg for f in frames] == (good * 3)[:8]
    assert [f.seq for f in frames] == list(range(8))
    assert src.state == "live"


def test_folder_in_name_order_with_bad_file(tmp_path: Path) -> None:
    frames_in = {name: _jpeg(40, 30, i) for i, name in enumerate(["b.jpg", "a.jpeg", "c.JPG"])}
    for name, data in frames_in.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(str(tmp_path), fps=500)
    assert src.frames_corrupt_skipped == 1
    frames = _collect(src, 10)
    order = ["a.jpeg", "b.jpg", "c.JPG"]
    assert [f.jpeg for f in frames] == [frames_in[n] for n in order]
    assert (src.width, src.height) == (40, 30)


def test_frames_without_dht_get_the_standard_one(data_files: DataFiles, tmp_path: Path) -> None:
    uvc = (data_files / "synthetic_uvc_640x480_422_nodht.jpg").read_bytes()
    p = tmp_path / "uvc.mjpeg"
    p.write_bytes(uvc + uvc)
    frames = _collect(open_source(str(p), fps=500), 2)
    for f in frames:
        assert b"\xff\xc4" in f.jpeg and is_valid_jpeg(f.jpeg)
        assert np.array_equal(simplejpeg.decode_jpeg(f.jpeg), simplejpeg.decode_jpeg(uvc))


def test_sample_source_loops_over_bundled_recording() -> None:
    data = sample_bytes()
    assert hashlib.sha256(data).hexdigest() == WEBCAM_SHA256  # the webcam recording
    expected = [data[s:e] for s, e in split_jpegs(data)]
    assert len(expected) == 528
    src = open_source("sample", fps=1000)
    assert (src.width, src.height) == (640, 480)
    assert "sample" in src.describe()
    frames = _collect(src, 530)
    assert [f.jpeg for f in frames] == expected + expected[:2]


def test_no_source_without_camera_falls_back_to_sample() -> None:
    if list(Path("/dev").glob("video*")):
        pytest.skip("this host has /dev/video* devices")
    src = open_source(None, fps=1000)
    assert "sample" in src.describe()
    src.close()


def _read_text(gray: np.ndarray, n_chars: int, x: int, y: int, scale: int) -> str:
    """Read characters back from a decoded frame by matching the 5x7 font."""
    out = []
    for i in range(n_chars):
        cell = np.zeros((7, 5), dtype=bool)
        for r in range(7):
            for c in range(5):
                cy = y + r * scale + scale // 2
                cx = x + i * 6 * scale + c * scale + scale // 2
                cell[r, c] = gray[cy, cx] > 128
        bits = tuple(int("".join("1" if b else "0" for b in row), 2) for row in cell)
        out.append(next((ch for ch, rows in FONT_5X7.items() if rows == bits), "?"))
    return "".join(out)


@pytest.mark.parametrize("size", [(640, 480), (1280, 720)])
def test_test_pattern_shows_frame_number_and_time(size: tuple[int, int]) -> None:
    src = open_source("testpattern", size=size, fps=200, quality=90, subsampling="420")
    assert isinstance(src, TestPatternSource)
    frames = _collect(src, 13)
    last = frames[-1]
    assert simplejpeg.decode_jpeg_header(last.jpeg)[:2] == (size[1], size[0])
    gray = simplejpeg.decode_jpeg(last.jpeg, colorspace="GRAY")[:, :, 0]
    scale, x, y = text_layout(*size)
    assert _read_text(gray, 3, x, y, scale) == "#12"
    clock = time.strftime("%H:%M:%S", time.gmtime(last.capture_ts_ns // 1_000_000_000))
    ms = (last.capture_ts_ns // 1_000_000) % 1000
    assert _read_text(gray, 12, x, y + 10 * scale, scale) == f"{clock}.{ms:03d}"
    assert len({f.jpeg for f in frames}) == 13


def test_test_pattern_is_fast_enough_for_30fps_720p() -> None:
    src = TestPatternSource((1280, 720))
    t0 = time.perf_counter()
    for i in range(10):
        src.encode(i, time.time_ns())
    # generous bound (behaviour: it can keep up with 30 fps on one core), not a benchmark
    assert (time.perf_counter() - t0) / 10 < 1 / 30


@pytest.mark.parametrize(
    ("spec", "kwargs", "exc", "pattern"),
    [
        ("nonexistent.mjpeg", {}, ConfigError, r"'nonexistent.mjpeg': no such file"),
        ("nothing-here", {}, ConfigError, r"not found; use 'sample', 'testpattern'"),
        ("sample", {"fps": 0}, ConfigError, r"--fps 0"),
        ("sample", {"quality": 101}, ConfigError, r"--quality 101"),
        ("sample", {"subsampling": "411"}, ConfigError, r"--subsampling '411'"),
        ("sample", {"size": (640, 480)}, ConfigError, r"--size applies to"),
        ("testpattern", {"size": (641, 480)}, ConfigError, r"--size 641x480"),
        ("sample", {"fmt": "YUYV"}, ConfigError, r"--format 'YUYV' applies only"),
        ("sample", {"controls": {"brightness": "1"}}, ConfigError, r"--control brightness"),
        ("v4l2:", {}, ConfigError, r"give a device path"),
        ("/dev/video-none-such", {}, SourceError, r"cannot open V4L2 device.*no such device"),
    ],
)
def test_bad_values_give_clear_errors(
    spec: str,
    kwargs: dict[str, object],
    exc: type[Exception],
    pattern: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(exc, match=pattern):
        open_source(spec, **kwargs)  # type: ignore[arg-type]


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.mjpeg").write_bytes(b"no jpeg here")
    with pytest.raises(SourceError, match=r"empty.mjpeg: no valid JPEG frame found"):
        open_source(str(tmp_path / "empty.mjpeg"))
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(ConfigError, match=r"unknown file type"):
        open_source(str(tmp_path / "x.png"))
    empty_dir = tmp_path / "d"
    empty_dir.mkdir()
    with pytest.raises(SourceError, match=r"holds no .jpg/.jpeg file"):
        open_source(str(empty_dir))
    (empty_dir / "bad.jpg").write_bytes(b"junk")
    with pytest.raises(SourceError, match=r"no valid JPEG frame found"):
        open_source(str(empty_dir))
