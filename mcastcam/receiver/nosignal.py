"""The "no signal" JPEG the HTTP re-serve shows while no frame is available (µStreamer-style).

:func:`no_signal_jpeg` draws dimmed colour bars on a dark frame with "NO SIGNAL" written
across the middle in a 5×7 bitmap font of its own, and encodes it with simplejpeg. It is made
once when the server starts (a few milliseconds), then served as is.
"""

from __future__ import annotations

import numpy as np
import simplejpeg

__all__ = ["DEFAULT_SIZE", "no_signal_jpeg"]

DEFAULT_SIZE = (640, 480)
"""``(width, height)`` in pixels when the stream's size is not known."""

# 5x7 glyphs, one string per row, "#" = lit. Only the letters the page needs.
_FONT: dict[str, tuple[str, ...]] = {
    "N": ("#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "I": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "#####"),
    "G": (".####", "#....", "#....", "#.###", "#...#", "#...#", ".###."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    " ": (".....",) * 7,
}
# SMPTE-like bar colours (white, yellow, cyan, green, magenta, red, blue), dimmed.
_BARS = np.array(
    [(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0),
     (192, 0, 192), (192, 0, 0), (0, 0, 192)],
    dtype=np.float32,
)  # fmt: skip


def _text_mask(text: str) -> np.ndarray:
    """A boolean ``7 × (6·len - 1)`` bitmap of ``text`` (one blank column between letters)."""
    columns: list[np.ndarray] = []
    for i, char in enumerate(text):
        glyph = np.array([[c == "#" for c in row] for row in _FONT[char]], dtype=bool)
        if i:
            columns.append(np.zeros((7, 1), dtype=bool))
        columns.append(glyph)
    return np.hstack(columns)


def no_signal_jpeg(
    width: int = DEFAULT_SIZE[0], height: int = DEFAULT_SIZE[1], *, quality: int = 80
) -> bytes:
    """A baseline 4:2:0 JPEG of ``width × height`` pixels saying "NO SIGNAL" over colour bars.

    Raises:
        ValueError: a side below 16 or above 8192 pixels.
    """
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise ValueError(f"no-signal frame size {width}x{height}: sides must be 16..8192 px")
    img = np.full((height, width, 3), 16, dtype=np.float32)
    # the upper two thirds: seven bars at 35 % brightness
    bars_h = height * 2 // 3
    columns = (np.arange(width) * len(_BARS)) // width
    img[:bars_h] = _BARS[columns][None, :, :] * 0.35
    # the lower third: a grey ramp, so a viewer sees the frame is a picture, not a blank
    ramp = np.linspace(16, 96, width, dtype=np.float32)
    img[bars_h:] = ramp[None, :, None]
    # the text on a dark band across the middle, as large as fits in 80 % of the width
    mask = _text_mask("NO SIGNAL")
    scale = max(1, min(int(width * 0.8) // mask.shape[1], height // 5 // mask.shape[0]))
    big = np.kron(mask, np.ones((scale, scale), dtype=bool))
    th, tw = big.shape
    top, left = (height - th) // 2, (width - tw) // 2
    pad = max(2, scale * 2)
    band = img[max(0, top - pad) : min(height, top + th + pad)]
    band *= 0.25
    img[top : top + th, left : left + tw][big] = (235, 235, 235)
    pixels = np.ascontiguousarray(img.astype(np.uint8))
    return bytes(
        simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB", colorsubsampling="420")
    )
