"""Tests for the V4L2 source against a fake device at the ioctl/mmap boundary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simplejpeg

from mcastcam.errors import ConfigError, SourceError
from mcastcam.jpeg import split_jpegs
from mcastcam.protocol.frame import CapturedFrame
from mcastcam.sender.sources import open_source
from mcastcam.sender.sources.v4l2 import V4L2Source, list_devices, monotonic_to_wall_ns
from tests.conftest import DataFiles

from .fake_v4l2 import FakeCamera

DEV = Path("/dev/video42")


@pytest.fixture(scope="module")
def webcam_frames(data_files: DataFiles) -> list[bytes]:
    data = (data_files / "webcam_640x480_420.mjpeg").read_bytes()
    return [data[s:e] for s, e in split_jpegs(data)][:40]


@pytest.fixture
def cam(webcam_frames: list[bytes]) -> Iterator[FakeCamera]:
    with FakeCamera(DEV, webcam_frames, formats=("YUYV", "MJPG"), padding=64) as c:
        yield c


async def _wait_for(cond: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def _run(coro_fn: Callable[[], Any]) -> Any:
    errors: list[dict[str, Any]] = []

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
        return await asyncio.wait_for(coro_fn(), 60)

    result = asyncio.run(main())
    assert errors == [], errors  # nothing raised inside the event loop (no QueueFull etc.)
    return result


def test_mjpeg_frames_are_the_recorded_frames(cam: FakeCamera, webcam_frames: list[bytes]) -> None:
    src = open_source(str(DEV))
    assert isinstance(src, V4L2Source)
    assert src.pixel_format == "MJPG"  # preferred although YUYV is listed first
    assert (src.width, src.height, src.fps) == (640, 480, 30.0)
    assert src.describe() == "V4L2 /dev/video42 (Fake Camera): MJPG 640x480 at 30 fps"

    async def body() -> list[CapturedFrame]:
        got: list[CapturedFrame] = []
        it = src.frames()
        for _ in range(6):
            assert cam.push()
            got.append(await anext(it))
        await it.aclose()
        return got

    before = time.time_ns()
    got = _run(body)
    src.close()
    assert [f.jpeg for f in got] == webcam_frames[:6]  # padding after EOI trimmed
    assert [f.seq for f in got] == list(range(6))
    assert all(before - 1_000_000_000 < f.capture_ts_ns <= time.time_ns() for f in got)
    assert src.frames_captured == 6
    assert not cam.streaming


def test_yuyv_frames_are_encoded_to_jpeg(data_files: DataFiles) -> None:
    data = (data_files / "synthetic_160x120_420.mjpeg").read_bytes()
    jpegs = [data[s:e] for s, e in split_jpegs(data)][:3]
    yuyv_frames, rgbs = [], []
    for j in jpegs:
        rgb = simplejpeg.decode_jpeg(j).astype(np.float64)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        # JFIF (ITU-R BT.601 full range) RGB -> YCbCr, then 4:2:2 by averaging pixel pairs
        y = 0.299 * r + 0.587 * g + 0.114 * b
        cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
        h, w = y.shape
        packed = np.empty((h, 2 * w), dtype=np.uint8)
        packed[:, 0::2] = np.clip(np.rint(y), 0, 255)
        packed[:, 1::4] = np.clip(np.rint((cb[:, 0::2] + cb[:, 1::2]) / 2), 0, 255)
        packed[:, 3::4] = np.clip(np.rint((cr[:, 0::2] + cr[:, 1::2]) / 2), 0, 255)
        yuyv_frames.append(packed.tobytes())
        rgbs.append(rgb)
    with FakeCamera(DEV, yuyv_frames, formats=("YUYV",), width=160, height=120) as cam:
        src = open_source(f"v4l2:{DEV}", quality=95, subsampling="422")
        assert src.describe().endswith("YUYV 160x120 at 30 fps -> JPEG q95")

        async def body() -> list[CapturedFrame]:
            it = src.frames()
            got = []
            for _ in range(3):
                cam.push()
                got.append(await anext(it))
            await it.aclose()
            return got

        got = _run(body)
        src.close()
    for f, rgb in zip(got, rgbs, strict=True):
        assert simplejpeg.decode_jpeg_header(f.jpeg) == (120, 160, "YCbCr", "422")
        out = simplejpeg.decode_jpeg(f.jpeg).astype(np.float64)
        assert np.abs(out - rgb).mean() < 4.0  # same picture, colours included


def test_slow_consumer_gets_the_newest_frame(cam: FakeCamera, webcam_frames: list[bytes]) -> None:
    src = open_source(str(DEV))

    async def body() -> tuple[CapturedFrame, CapturedFrame, int]:
        it = src.frames()
        cam.push()
        first = await anext(it)
        # The camera keeps delivering while the consumer is busy: 12 frames, more than the
        # 4 driver buffers; each readable event hands the buffer straight back.
        for _ in range(12):
            assert cam.push()
            await asyncio.sleep(0.005)
        newest = cam.frames_pushed - 1
        second = await anext(it)
        await it.aclose()
        return first, second, newest

    first, second, newest = _run(body)
    src.close()
    assert first.jpeg == webcam_frames[0]
    assert second.jpeg == webcam_frames[newest]
    assert second.seq == 1
    assert src.frames_skipped_stale == 11
    assert cam.frames_dropped_no_buffer == 0


def test_unplug_goes_offline_then_reopens_live(cam: FakeCamera, webcam_frames: list[bytes]) -> None:
    src = open_source(str(DEV))
    assert isinstance(src, V4L2Source)
    src.reopen_initial_interval = 0.05
    got: list[CapturedFrame] = []

    async def consume() -> None:
        async for f in src.frames():
            got.append(f)

    async def body() -> list[str]:
        states = []
        task = asyncio.create_task(consume())
        cam.push()
        await _wait_for(lambda: len(got) == 1)
        cam.unplug()
        await _wait_for(lambda: src.state == "offline")
        states.append(src.state)
        await asyncio.sleep(0.2)  # reopen attempts fail while unplugged
        states.append(src.state)
        cam.replug()
        await _wait_for(lambda: src.state == "live" and cam.streaming)
        states.append(src.state)
        cam.push()
        await _wait_for(lambda: len(got) == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return states

    states = _run(body)
    src.close()
    assert states == ["offline", "offline", "live"]
    assert cam.opens == 2
    assert got[0].jpeg == webcam_frames[0]
    assert got[1].jpeg == webcam_frames[1]
    assert [f.seq for f in got] == [0, 1]


def test_controls_by_kernel_name(cam: FakeCamera) -> None:
    src = open_source(str(DEV), controls={"brightness": "200", "white_balance_automatic": "off"})
    src.close()
    values = {c.name: c.value for c in cam.controls}
    assert values[b"Brightness"] == 200
    assert values[b"White Balance, Automatic"] == 0


@pytest.mark.parametrize(
    ("controls", "pattern"),
    [
        (
            {"sharpness": "3"},
            r"--control sharpness: unknown V4L2 control on /dev/video42; "
            r"valid: brightness, contrast, gain, white_balance_automatic",
        ),
        ({"brightness": "256"}, r"--control brightness=256: out of range 0\.\.255"),
        ({"brightness": "bright"}, r"--control brightness=bright: not an integer"),
        ({"white_balance_automatic": "maybe"}, r"takes 0/1 or true/false"),
        ({"gain": "1"}, r"--control gain: read-only"),
    ],
)
def test_bad_controls_are_config_errors(
    cam: FakeCamera, controls: dict[str, str], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        open_source(str(DEV), controls=controls)
    assert cam.opens == 1 and not cam.streaming


def test_format_choice(webcam_frames: list[bytes]) -> None:
    with FakeCamera(DEV, webcam_frames, formats=("YUYV", "MJPG")):
        src = open_source(str(DEV), fmt="yuyv", size=(320, 240))
        assert (src.pixel_format, src.width, src.height) == ("YUYV", 320, 240)  # type: ignore[attr-defined]
        src.close()
        with pytest.raises(ConfigError, match=r"--format 'H264': use one of MJPG, YUYV"):
            open_source(str(DEV), fmt="H264")
    with (
        FakeCamera(DEV, webcam_frames, formats=("YUYV",)),
        pytest.raises(ConfigError, match=r"--format MJPG: /dev/video42 offers YUYV"),
    ):
        open_source(str(DEV), fmt="MJPG")


def test_list_devices_text(cam: FakeCamera) -> None:
    text = list_devices([DEV, Path("/dev/video-absent")])
    assert text.splitlines() == [
        "/dev/video42: Fake Camera (driver fakecam, bus usb-fake-1)",
        "  YUYV (YUYV 4:2:2)",
        "    640x480: 30, 15 fps",
        "    320x240: 30, 15 fps",
        "  MJPG (Motion-JPEG)",
        "    640x480: 30, 15 fps",
        "    320x240: 30, 15 fps",
        "cannot open V4L2 device /dev/video-absent: no such device",
    ]
    assert list_devices([]) == "no V4L2 capture device found (/dev/video*)"


def test_open_failure_is_a_source_error(cam: FakeCamera) -> None:
    cam.unplug()
    with pytest.raises(SourceError, match=r"cannot open V4L2 device /dev/video42: no such device"):
        open_source(str(DEV))


def test_monotonic_timestamps_become_wall_clock() -> None:
    mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - 50_000_000  # 50 ms ago
    wall = monotonic_to_wall_ns(mono)
    now = time.clock_gettime_ns(time.CLOCK_REALTIME)
    assert 40_000_000 <= now - wall <= 1_000_000_000
    assert abs(monotonic_to_wall_ns(0) - now) < 1_000_000_000  # missing timestamp: now
