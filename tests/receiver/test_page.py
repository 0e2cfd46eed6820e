"""The receiver's page in headless Chromium: live (a real sender on loopback multicast),
offline (no sender: the "no signal" frame, and the page finishes loading), and 400 px wide.

Each state is loaded twice in isolated Chromium (tests/browser.py): ``--dump-dom`` to read
what the script wrote (badge, name, numbers), ``--screenshot`` to check the pixels.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from mcastcam.receiver import cli as recv_cli
from mcastcam.receiver.nosignal import no_signal_jpeg
from mcastcam.sender import cli as send_cli
from tests.browser import chromium_dump_dom, chromium_screenshot, need_isolated_browser
from tests.conftest import DataFiles
from tests.receiver import helpers_http as H

pytestmark = [pytest.mark.clients, pytest.mark.slow, pytest.mark.multicast]

NAME = "pagecam"


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def receiver_and_sender(
    data_files: DataFiles | None, *extra: str
) -> AsyncIterator[int]:
    """``mcastcam-recv`` (with ``data_files`` also ``mcastcam-send``) on loopback: the port."""
    group = f"239.255.{random.randint(2, 254)}.{random.randint(1, 254)}:{_free_port(2)}"
    port = _free_port()
    tasks = [asyncio.create_task(recv_cli.run(recv_cli.parse(
        ["--interface", "lo", "--group", group, "--http", f"127.0.0.1:{port}", "--quiet",
         *extra])))]  # fmt: skip
    try:
        await H.wait_for(lambda: _listening(port), 10)
        if data_files is not None:
            tasks.append(asyncio.create_task(send_cli.run(send_cli.parse(
                ["--source", str(data_files / H.WEBCAM), "--loop", "--fps", "20", "--name", NAME,
                 "--interface", "lo", "--ttl", "0", "--group", group, "--mtu", "1500",
                 "--quiet"]))))  # fmt: skip
            for _ in range(100):
                code, _, body = await H.fetch(port, "/status")
                if code == 200 and b'"state": "live"' in body:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the receiver never went live")
        yield port
    finally:
        for task in reversed(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def load(port: int, work: Path, size: tuple[int, int]) -> tuple[str, np.ndarray]:
    """The page's DOM after ~3 s, and a screenshot as an ``H × W × 3`` array."""
    (work / "dom").mkdir(parents=True)
    (work / "shot").mkdir()
    code, dom, err = await chromium_dump_dom(port, "/", work / "dom", size=size)
    assert code == 0, err[-2000:]
    png = work / "page.png"
    code, err = await chromium_screenshot(port, "/", png, work / "shot", size=size)
    assert code == 0, err[-2000:]
    return dom, png_pixels(png, *size)


def png_pixels(png: Path, width: int, height: int) -> np.ndarray:
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(png), "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-"],
        check=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip
    assert len(out) == width * height * 3
    return np.frombuffer(out, dtype=np.uint8).reshape(height, width, 3).astype(np.int16)


def badge(dom: str) -> str:
    m = re.search(r'<span id="badge" class="badge (\w+)">([^<]*)</span>', dom)
    assert m, dom[:3000]
    return m.group(2)


def stat(dom: str, key: str) -> str:
    m = re.search(rf'id="stat-{key}">.*?<div class="value">([^<]*)</div>', dom, re.S)
    assert m, key
    return m.group(1)


@pytest.fixture(autouse=True)
def _browser() -> None:
    need_isolated_browser()
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg missing (decodes the screenshots)")


def test_page_live(data_files: DataFiles, tmp_path: Path) -> None:
    async def main() -> tuple[int, str, np.ndarray]:
        async with receiver_and_sender(data_files) as port:
            return port, *await load(port, tmp_path, (1200, 700))

    port, dom, px = asyncio.run(main())
    assert badge(dom) == "LIVE"
    assert f'<span id="name">{NAME}</span>' in dom
    assert float(stat(dom, "fps")) > 5  # frames/s from /status, as the page computed them
    assert float(stat(dom, "bitrate")) > 0.1
    assert f'value="http://127.0.0.1:{port}/stream"' in dom  # copyable URLs, made by the script
    assert f'value="http://127.0.0.1:{port}/snapshot"' in dom
    assert "lo has no broadcast address" in dom  # the picker says why it lists nothing
    # the 640x480 image at the top of the left column (1200 - 330 px panel): a real picture
    left = (870 - 640) // 2
    video = px[0:480, left : left + 640]
    assert video.std() > 20 and video.mean() > 30, (video.mean(), video.std())
    assert not _looks_like_no_signal(video)
    # the badge is green
    assert _has_colour(px[480:], (0x33, 0xCC, 0x33))


def test_page_offline_shows_no_signal_and_finishes_loading(tmp_path: Path) -> None:
    async def main() -> tuple[str, np.ndarray]:
        async with receiver_and_sender(None) as port:
            return await load(port, tmp_path, (800, 600))

    dom, px = asyncio.run(main())
    assert badge(dom) == "OFFLINE"
    assert "no frame received yet" in dom
    video = px[0:480, 80:720]
    assert _looks_like_no_signal(video)
    assert _has_colour(px[480:], (0xEE, 0x44, 0x44))  # the red badge under the image


def test_page_400_px_wide(data_files: DataFiles, tmp_path: Path) -> None:
    async def main() -> tuple[str, np.ndarray]:
        async with receiver_and_sender(data_files) as port:
            return await load(port, tmp_path, (400, 800))

    dom, px = asyncio.run(main())
    assert badge(dom) == "LIVE"
    # the image takes the full width (400 x 300), then the bar, then the numbers
    video = px[0:300, 0:400]
    assert video.std() > 20 and video.mean() > 30
    assert _has_colour(px[300:360], (0x33, 0xCC, 0x33))
    # below the bar: the stat boxes (#1b1b1b) on the page background, not the image
    assert _has_colour(px[360:600], (0x1B, 0x1B, 0x1B))


def _looks_like_no_signal(region: np.ndarray) -> bool:
    """``region`` (640 × 480) is the "no signal" frame: close to the JPEG, pixel by pixel."""
    want = simplejpeg.decode_jpeg(no_signal_jpeg(), colorspace="RGB").astype(np.int16)
    return bool(np.abs(region - want).mean() < 12)


def _has_colour(px: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 12) -> bool:
    close = np.abs(px - np.array(rgb, dtype=np.int16)).max(axis=-1) <= tolerance
    return int(close.sum()) >= 50
