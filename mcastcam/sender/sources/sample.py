"""The bundled sample recording (a 640x480 webcam clip), for trying mcastcam without a camera."""

from __future__ import annotations

from importlib import resources

from mcastcam.errors import SourceError
from mcastcam.sender.sources.file import JpegSequenceSource, split_mjpeg

SAMPLE_NAME = "sample_webcam_640x480.mjpeg"
"""File name of the sample inside the ``mcastcam/data`` package folder (see its README)."""


def sample_bytes() -> bytes:
    """The bundled sample MJPEG (528 frames, 640x480, 4:2:0), read via ``importlib.resources``.

    Raises:
        SourceError: the package data file is missing (a broken install).
    """
    try:
        return (resources.files("mcastcam") / "data" / SAMPLE_NAME).read_bytes()
    except OSError as exc:
        raise SourceError(f"bundled sample {SAMPLE_NAME} is missing: {exc}") from None


def open_sample(*, fps: float | None) -> JpegSequenceSource:
    """A source that plays the bundled sample, always looping, paced at ``fps`` (default 30)."""
    jpegs, corrupt = split_mjpeg(sample_bytes(), SAMPLE_NAME)
    return JpegSequenceSource(
        jpegs, name=f"sample {SAMPLE_NAME}", fps=fps, loop=True, corrupt_skipped=corrupt
    )
