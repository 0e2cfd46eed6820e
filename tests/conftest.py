"""Fixtures shared by every test package.

Test data lives in the repository, so that a plain clone runs every test: the recordings in
``tests/data`` (MIT/Apache-2.0, see ``tests/data/README.md``), the bundled sample
``mcastcam/data/sample_webcam_640x480.mjpeg`` (MIT) and synthetic recordings generated once per
session (the ``data_files`` fixture). The larger real recordings in ``../shared/data`` are
for the benchmarks in ``tools/``; no test needs them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

pytest_plugins = ["tests.netlab_fixture"]

REPO = Path(__file__).resolve().parents[1]
TESTS_DATA = REPO / "tests" / "data"
SAMPLE = REPO / "mcastcam" / "data" / "sample_webcam_640x480.mjpeg"
# tests/data/README.md: the bundled sample is webcam_640x480_420.mjpeg byte for byte.
WEBCAM_SHA256 = "6f8a4ceeeea11407562889e49350b0737fd32b1db232bcc6770f9df55aada7fc"

SHIPPED = {
    "webcam_640x480_420.mjpeg": SAMPLE,
    "pi_hqcam_640x480_420_static.mjpeg": TESTS_DATA / "pi_hqcam_640x480_420_static.mjpeg",
    "bedroom_960x540_420_first100.mjpeg": TESTS_DATA / "bedroom_960x540_420_first100.mjpeg",
}


@dataclass(frozen=True)
class Synthetic:
    """A deterministic synthetic MJPEG recording (simplejpeg, libjpeg-turbo).

    Every frame is the same texture (three crossed sine waves with Gaussian luma noise of
    ``noise`` grey levels, features ``scale`` times larger than the base pattern) shifted by
    a few pixels per frame, with the frame index stamped as a 16-bit bar code in the top-left
    corner, so no two frames are equal. The noise sets the frame size.
    """

    width: int
    height: int
    subsampling: str
    quality: int
    frames: int
    noise: float
    scale: float = 1.0
    seed: int = 1

    def texture(self) -> np.ndarray:
        """The unshifted picture, ``(height, width, 3)`` uint8 RGB."""
        rng = np.random.default_rng(self.seed)
        y, x = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32) / self.scale
        base = np.stack(
            [
                128 + 60 * np.sin(x / 37 + y / 53),
                128 + 60 * np.sin(y / 29 - x / 71),
                128 + 60 * np.cos((x + y) / 43),
            ],
            axis=-1,
        )
        grain = rng.normal(0.0, self.noise, (self.height, self.width, 1)).astype(np.float32)
        return np.clip(base + grain, 0, 255).astype(np.uint8)

    def picture(self, texture: np.ndarray, index: int) -> np.ndarray:
        """Frame ``index``: ``texture`` shifted, with ``index`` stamped (8x8 cells, 16 bits)."""
        img = np.roll(texture, (3 * index, 5 * index), axis=(0, 1))
        for bit in range(16):
            img[0:8, 8 * bit : 8 * bit + 8] = 255 if index >> bit & 1 else 0
        return img

    def render(self) -> bytes:
        """All frames, concatenated JPEGs (a raw MJPEG stream)."""
        tex = self.texture()
        return b"".join(
            simplejpeg.encode_jpeg(
                self.picture(tex, i), quality=self.quality, colorsubsampling=self.subsampling
            )
            for i in range(self.frames)
        )


SYNTHETIC = {
    # 1080p-size frames (~370-390 KB, ~270 datagrams of 1400 bytes), portrait like a phone.
    "synthetic_1080x1920_420.mjpeg": Synthetic(1080, 1920, "420", 95, 20, noise=1.0),
    # HD webcam-like 4:2:2 frames (~35-40 KB, ~26 datagrams).
    "synthetic_1280x720_422.mjpeg": Synthetic(1280, 720, "422", 70, 200, noise=0.5, scale=3),
    # Tiny frames (~3 KB, 3 datagrams).
    "synthetic_160x120_420.mjpeg": Synthetic(160, 120, "420", 90, 167, noise=1.0),
}
UVC_NODHT = "synthetic_uvc_640x480_422_nodht.jpg"


def strip_segments(jpeg: bytes, markers: set[int]) -> bytes:
    """``jpeg`` without the header segments (before SOS) whose marker byte is in ``markers``."""
    out = [jpeg[:2]]
    i = 2
    while jpeg[i + 1] != 0xDA:  # SOS: the entropy-coded data follows
        end = i + 2 + int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if jpeg[i + 1] not in markers:
            out.append(jpeg[i:end])
        i = end
    out.append(jpeg[i:])
    return b"".join(out)


def uvc_nodht_frame() -> bytes:
    """One 640x480 4:2:2 frame shaped like a UVC webcam's: no DHT, no APP0, restart interval 2.

    Pillow (libjpeg-turbo) writes the standard Huffman tables (T.81 Annex K.3), which is what
    a decoder falls back to when a frame carries none; the DHT segments and the JFIF APP0 are
    then cut out. simplejpeg cannot write restart markers, hence Pillow here.
    """
    from PIL import Image  # only this generator needs Pillow

    spec = Synthetic(640, 480, "422", 90, 1, noise=3.0, seed=7)
    buf = io.BytesIO()
    Image.fromarray(spec.picture(spec.texture(), 0)).save(
        buf, "JPEG", quality=90, subsampling=1, restart_marker_blocks=2
    )
    return strip_segments(buf.getvalue(), {0xC4, 0xE0})


class DataFiles:
    """Test recordings by file name: ``data_files / name`` is a :class:`Path` to read.

    Names are those of :data:`SHIPPED` (files in the repository), :data:`SYNTHETIC` and
    :data:`UVC_NODHT` (written into ``folder`` on first use, then reused for the session).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __truediv__(self, name: str) -> Path:
        if name in SHIPPED:
            return SHIPPED[name]
        path = self.folder / name
        if not path.exists():
            if name in SYNTHETIC:
                data = SYNTHETIC[name].render()
            elif name == UVC_NODHT:
                data = uvc_nodht_frame()
            else:
                raise KeyError(f"no test recording named {name!r}")
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(path)
        return path

    def recordings(self) -> list[str]:
        """The names of every ``.mjpeg`` recording, shipped then synthetic."""
        return [*SHIPPED, *SYNTHETIC]


@pytest.fixture(scope="session")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> DataFiles:
    """Shipped and synthetic test recordings (synthetic ones generated once per session)."""
    return DataFiles(tmp_path_factory.mktemp("data"))


def naive_split(data: bytes) -> list[bytes]:
    """Split a raw concatenated-JPEG stream at FFD8 ... FFD9.

    Exact for every recording the tests use (``tests/data/README.md`` checked the shipped ones
    against a full marker walk; simplejpeg's frames carry no thumbnail); tests use it as an
    independent oracle for the real splitter.
    """
    frames = []
    start = data.find(b"\xff\xd8")
    while start >= 0:
        end = data.find(b"\xff\xd9", start + 2)
        if end < 0:
            break
        frames.append(data[start : end + 2])
        start = data.find(b"\xff\xd8", end + 2)
    return frames


@pytest.fixture(scope="session")
def recordings(data_files: DataFiles) -> dict[str, list[bytes]]:
    """Every ``.mjpeg`` recording of :class:`DataFiles`, split into frames (name -> frames)."""
    return {name: naive_split((data_files / name).read_bytes()) for name in data_files.recordings()}
