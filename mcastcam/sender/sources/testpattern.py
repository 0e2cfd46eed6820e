"""A synthetic test pattern: colour bars, a moving bar, the frame number and the time."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt
import simplejpeg

from mcastcam.protocol.frame import CapturedFrame
from mcastcam.sender.sources.base import DEFAULT_FPS, FrameClock, FrameSource, wall_clock_ns

# A 5x7 bitmap font (rows top to bottom, 5 bits each, MSB = left column).
FONT_5X7: dict[str, tuple[int, ...]] = {
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E),
    "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F),
    "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02),
    "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E),
    "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E),
    "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    ":": (0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00),
    ".": (0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C),
    "-": (0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00),
    "#": (0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A),
    " ": (0,) * 7,
}
_GLYPHS = {
    ch: np.array([[(row >> (4 - c)) & 1 for c in range(5)] for row in rows], dtype=bool)
    for ch, rows in FONT_5X7.items()
}
_BARS = np.array(
    [
        (192, 192, 192),
        (192, 192, 0),
        (0, 192, 192),
        (0, 192, 0),
        (192, 0, 192),
        (192, 0, 0),
        (0, 0, 192),
        (16, 16, 16),
    ],
    dtype=np.uint8,
)
SUBSAMPLING = {"444": "444", "422": "422", "420": "420"}


def text_layout(width: int, height: int) -> tuple[int, int, int]:
    """``(scale, x, y)``: pixel scale of one font dot and the top-left of the first text line."""
    scale = max(1, min(height // 60, width // 80))
    return scale, 2 * scale, 2 * scale


def draw_text(img: npt.NDArray[np.uint8], text: str, x: int, y: int, scale: int) -> None:
    """Draw ``text`` (characters of :data:`FONT_5X7`) white on black, in place.

    Each character is a 6x9-dot cell (5x7 glyph plus spacing) of ``scale``-pixel dots.
    Characters outside the font are drawn as blanks; text outside the image is clipped.
    """
    cell_w, cell_h = 6 * scale, 9 * scale
    h, w = img.shape[:2]
    y0, y1 = max(0, y - scale), min(h, y + cell_h)
    x1 = min(w, x + cell_w * len(text) + scale)
    if y0 >= y1 or x >= x1:
        return
    img[y0:y1, max(0, x - scale) : x1] = 0
    for i, ch in enumerate(text):
        glyph = _GLYPHS.get(ch, _GLYPHS[" "])
        big = np.kron(glyph, np.ones((scale, scale), dtype=bool))
        gx = x + i * cell_w
        gh, gw = big.shape
        sub = img[y : y + gh, gx : gx + gw]
        sub[big[: sub.shape[0], : sub.shape[1]]] = 255


def render_pattern(width: int, height: int, seq: int, ts_ns: int) -> npt.NDArray[np.uint8]:
    """One RGB frame (``height x width x 3`` uint8) for frame ``seq`` at ``ts_ns``.

    Colour bars, a bar moving with ``seq``, and two lines of text: ``#<seq>`` and the UTC
    wall-clock time ``HH:MM:SS.mmm`` of ``ts_ns`` (ns).
    """
    cols = (np.arange(width) * len(_BARS)) // width
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = _BARS[cols][np.newaxis, :, :]
    bar_w = max(4, width // 40)
    bx = (seq * max(1, width // 120)) % max(1, width - bar_w)
    img[height * 3 // 4 :, bx : bx + bar_w] = 255
    scale, x, y = text_layout(width, height)
    secs, ns = divmod(ts_ns, 1_000_000_000)
    clock = time.strftime("%H:%M:%S", time.gmtime(secs)) + f".{ns // 1_000_000:03d}"
    draw_text(img, f"#{seq}", x, y, scale)
    draw_text(img, clock, x, y + 10 * scale, scale)
    return img


class TestPatternSource(FrameSource):
    """Generates test-pattern JPEGs of ``size`` pixels at ``fps`` (live, never ends).

    Encoded with simplejpeg (libjpeg-turbo) at ``quality`` (1-100) with ``subsampling``
    ``"420"``, ``"422"`` or ``"444"``.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        size: tuple[int, int] = (640, 480),
        *,
        fps: float | None = None,
        quality: int = 80,
        subsampling: str = "420",
    ) -> None:
        super().__init__()
        self._width, self._height = size
        self._fps = DEFAULT_FPS if fps is None else float(fps)
        self._quality = quality
        self._subsampling = SUBSAMPLING[subsampling]

    def describe(self) -> str:
        """E.g. ``test pattern 640x480 at 30 fps, JPEG quality 80, 4:2:0``."""
        s = self._subsampling
        return (
            f"test pattern {self._width}x{self._height} at {self._fps:g} fps, "
            f"JPEG quality {self._quality}, {s[0]}:{s[1]}:{s[2]}"
        )

    def encode(self, seq: int, ts_ns: int) -> bytes:
        """The JPEG of frame ``seq`` stamped with wall-clock time ``ts_ns`` (ns)."""
        img = render_pattern(self._width, self._height, seq, ts_ns)
        return bytes(
            simplejpeg.encode_jpeg(
                img, quality=self._quality, colorsubsampling=self._subsampling, fastdct=True
            )
        )

    async def frames(self) -> AsyncIterator[CapturedFrame]:
        """Yield a freshly rendered frame every ``1 / fps`` seconds."""
        clock = FrameClock(self._fps)
        while True:
            await clock.wait()
            ts = wall_clock_ns()
            frame = CapturedFrame(self.encode(self.frames_captured, ts), self.frames_captured, ts)
            self.frames_captured += 1
            yield frame
