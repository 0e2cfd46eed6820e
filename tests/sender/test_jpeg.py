"""Tests for mcastcam.jpeg: marker-walk split, DHT insertion, size and validity."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastcam.errors import SourceError
from mcastcam.jpeg import (
    STANDARD_DHT,
    SplitStats,
    ensure_dht,
    is_valid_jpeg,
    jpeg_end,
    jpeg_size,
    split_jpegs,
)
from tests.conftest import SHIPPED, TESTS_DATA, DataFiles


def _make_jpeg(w: int, h: int, seed: int, subsampling: str = "420") -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return bytes(simplejpeg.encode_jpeg(img, quality=80, colorsubsampling=subsampling))


def _readme_counts(data_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in (data_dir / "README.md").read_text().splitlines():
        m = re.match(r"\| `([^`]+\.mjpeg)` \| [^|]+ \| [^|]+ \| (\d+) \|", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


def _naive_split(data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while (s := data.find(b"\xff\xd8", pos)) >= 0:
        e = data.find(b"\xff\xd9", s)
        out.append(data[s : e + 2])
        pos = e + 2
    return out


def test_split_shared_recordings_match_readme(data_files: DataFiles) -> None:
    counts = _readme_counts(TESTS_DATA)
    assert set(counts) == set(SHIPPED), counts
    for name, expected in counts.items():
        data = (data_files / name).read_bytes()
        stats = SplitStats()
        frames = [data[s:e] for s, e in split_jpegs(data, stats)]
        assert len(frames) == expected, name
        assert stats == SplitStats(frames=expected, corrupt_skipped=0, garbage_bytes=0)
        # README: a naive split agrees on these files, and frames tile the file exactly.
        assert frames == _naive_split(data), name
        assert b"".join(frames) == data
        assert all(is_valid_jpeg(f) for f in frames[:20])


def _exif_with_thumbnail(main: bytes, thumb: bytes) -> bytes:
    payload = b"Exif\x00\x00" + b"II*\x00\x08\x00\x00\x00" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return main[:2] + app1 + main[2:]


def test_exif_thumbnail_does_not_cut_the_frame() -> None:
    thumb = _make_jpeg(16, 16, 1)
    a = _exif_with_thumbnail(_make_jpeg(64, 48, 2), thumb)
    b = _make_jpeg(32, 32, 3)
    stream = a + b
    frames = [stream[s:e] for s, e in split_jpegs(stream)]
    assert frames == [a, b]
    # the naive split would have cut frame a at the thumbnail's EOI
    assert _naive_split(stream)[0] != a
    assert jpeg_size(a) == (64, 48)
    assert simplejpeg.decode_jpeg_header(a)[:2] == (48, 64)


def test_garbage_and_truncated_frame_are_skipped_and_counted() -> None:
    f1, f2, f3 = (_make_jpeg(48, 32, s) for s in (10, 11, 12))
    truncated = f2[: len(f2) // 2]
    stream = b"junk" + f1 + b"\x00" * 7 + truncated + f3 + b"tail"
    stats = SplitStats()
    frames = [stream[s:e] for s, e in split_jpegs(memoryview(stream), stats)]
    assert frames == [f1, f3]
    assert stats.frames == 2
    assert stats.corrupt_skipped == 1
    assert stats.garbage_bytes == 4 + 7 + 4


def test_stuffing_in_entropy_data_is_walked() -> None:
    f = _make_jpeg(64, 64, 5)
    body = f[f.index(b"\xff\xda") :]
    assert b"\xff\x00" in body  # the entropy data really contains stuffing
    assert list(split_jpegs(f + f)) == [(0, len(f)), (len(f), 2 * len(f))]


def test_uvc_frame_with_restart_markers(data_files: DataFiles) -> None:
    uvc = (data_files / "synthetic_uvc_640x480_422_nodht.jpg").read_bytes()
    assert re.search(rb"\xff[\xd0-\xd7]", uvc[uvc.index(b"\xff\xda") :])
    assert list(split_jpegs(b"xx" + uvc + uvc)) == [
        (2, 2 + len(uvc)),
        (2 + len(uvc), 2 + 2 * len(uvc)),
    ]
    assert jpeg_size(uvc) == (640, 480)
    assert is_valid_jpeg(uvc)


def test_standard_dht_equals_libjpeg_default_tables() -> None:
    # libjpeg-turbo (simplejpeg) writes exactly the T.81 Annex K.3 tables unless optimizing.
    j = _make_jpeg(16, 16, 0)
    bodies = []
    i = 2
    while j[i + 1] != 0xDA:
        seg_len = int.from_bytes(j[i + 2 : i + 4], "big")
        if j[i + 1] == 0xC4:
            bodies.append(j[i + 4 : i + 2 + seg_len])
        i += 2 + seg_len
    assert b"".join(bodies) == STANDARD_DHT[4:]
    assert len(STANDARD_DHT) == 420


def test_ensure_dht_keeps_frames_with_dht_identical() -> None:
    j = _make_jpeg(32, 32, 7)
    assert ensure_dht(j) is j


def _ffmpeg_decode_gray(jpeg_path: Path) -> np.ndarray:
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(jpeg_path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    return np.frombuffer(out, dtype=np.uint8)


@pytest.mark.clients
def test_ensure_dht_fixes_uvc_frame(data_files: DataFiles, tmp_path: Path) -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe not installed")
    uvc = (data_files / "synthetic_uvc_640x480_422_nodht.jpg").read_bytes()
    assert b"\xff\xc4" not in uvc[: uvc.index(b"\xff\xda")]
    fixed = ensure_dht(uvc)
    assert len(fixed) == len(uvc) + len(STANDARD_DHT)
    assert fixed.index(STANDARD_DHT) == uvc.index(b"\xff\xda")
    assert is_valid_jpeg(fixed)
    assert ensure_dht(fixed) is fixed
    # libjpeg-turbo falls back to the standard tables: the pixels must not change.
    before = simplejpeg.decode_jpeg(uvc)
    after = simplejpeg.decode_jpeg(fixed)
    assert np.array_equal(before, after)
    p = tmp_path / "fixed.jpg"
    p.write_bytes(fixed)
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
            str(p),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    assert probe == "mjpeg,640,480"
    gray = _ffmpeg_decode_gray(p)
    assert gray.size == 640 * 480
    ref = simplejpeg.decode_jpeg(fixed, colorspace="GRAY").reshape(-1)
    assert np.abs(gray.astype(int) - ref.astype(int)).mean() < 2.0


def test_malformed_inputs_raise_source_error() -> None:
    j = _make_jpeg(16, 16, 9)
    with pytest.raises(SourceError, match="not a JPEG"):
        jpeg_size(b"GIF89a")
    with pytest.raises(SourceError, match="not a JPEG"):
        ensure_dht(b"")
    with pytest.raises(SourceError, match="truncated"):
        jpeg_end(j[:-10])
    with pytest.raises(SourceError, match="no SOS"):
        ensure_dht(b"\xff\xd8\xff\xe0\x00\x04ab\xff\xd9")
    with pytest.raises(SourceError, match="no SOF"):
        jpeg_size(b"\xff\xd8\xff\xe0\x00\x04ab\xff\xd9")
    assert not is_valid_jpeg(j + b"\x00")
    assert jpeg_end(j + b"\x00\x00padding") == len(j)


_FRAMES = [_make_jpeg(24, 16, s) for s in range(3)]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    stats = SplitStats()
    spans = list(split_jpegs(data, stats))
    assert stats.frames == len(spans)
    for s, e in spans:
        assert is_valid_jpeg(data[s:e])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(3)), st.binary(max_size=20)), max_size=8))
def test_frames_survive_garbage_between_them(parts: list[tuple[int, bytes]]) -> None:
    stream = b""
    expected = []
    for idx, junk in parts:
        junk = junk.replace(b"\xff", b"\x00")
        stream += junk + _FRAMES[idx]
        expected.append(_FRAMES[idx])
    assert [stream[s:e] for s, e in split_jpegs(stream)] == expected
