"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.netlab_fixture"]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real camera recordings); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (real recordings live beside the project)")
    return SHARED_DATA


def naive_split(data: bytes) -> list[bytes]:
    """Split a raw concatenated-JPEG stream at FFD8 ... FFD9.

    Exact for every recording in ``../shared/data`` (its README checked it against a full
    marker walk); tests use it as an independent oracle for the real splitter.
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
def recordings(shared_data: Path) -> dict[str, list[bytes]]:
    """Every ``.mjpeg`` recording in ``../shared/data``, split into frames (name -> frames)."""
    return {p.name: naive_split(p.read_bytes()) for p in sorted(shared_data.glob("*.mjpeg"))}
