"""Recording (``mcastcam-recv --record``): the pure policy, the recorder on a real hub and real
files, the free-space floor on a small tmpfs, and playback of a segment through the sender.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcastcam.errors import ConfigError
from mcastcam.protocol.recording import (
    Action,
    RecordingPolicy,
    RecordLimits,
    parse_bytes,
    parse_seconds,
)
from mcastcam.receiver import cli
from mcastcam.receiver.fanout import FrameHub
from mcastcam.receiver.recorder import Recorder
from tests.conftest import DataFiles, naive_split
from tests.receiver import helpers_http as H

GIB = 1 << 30
BIG_DISK = (500 * GIB, 1000 * GIB)

# -- the pure policy ---------------------------------------------------------------------


def test_policy_rotates_by_time_and_by_size() -> None:
    p = RecordingPolicy(RecordLimits(segment_seconds=10, segment_bytes=1000))
    assert p.decide(0.0, 400, *BIG_DISK) is Action.OPEN
    p.opened(0.0)
    p.wrote(400)
    assert p.decide(5.0, 400, *BIG_DISK) is Action.WRITE
    p.wrote(400)
    assert p.decide(6.0, 400, *BIG_DISK) is Action.ROTATE  # 1200 > 1000 bytes
    p.opened(6.0)
    p.wrote(400)
    assert p.decide(15.9, 10, *BIG_DISK) is Action.WRITE
    assert p.decide(16.0, 10, *BIG_DISK) is Action.ROTATE  # 10 s old
    p.opened(16.0)
    assert p.decide(16.1, 5000, *BIG_DISK) is Action.WRITE  # a big frame: a segment of its own
    p.wrote(5000)
    assert p.decide(16.2, 1, *BIG_DISK) is Action.ROTATE


def test_policy_floor_stops_before_crossing_and_resumes_after_recheck() -> None:
    p = RecordingPolicy(RecordLimits(min_free_bytes=1000))
    assert p.decide(0.0, 100, 2000, 10**6) is Action.OPEN
    p.opened(0.0)
    assert p.decide(1.0, 100, 1100, 10**6) is Action.WRITE  # leaves exactly the floor
    assert p.decide(2.0, 100, 1099, 10**6) is Action.STOP
    assert p.state == "stopped" and "below the floor of" in p.stopped_reason
    assert p.decide(3.0, 100, 10**5, 10**6) is Action.SKIP  # not re-checked before 5 s
    assert p.decide(7.5, 100, 1050, 10**6) is Action.SKIP  # checked: still too little
    assert p.decide(8.0, 100, 10**5, 10**6) is Action.SKIP  # next check at 12.5
    assert p.decide(12.5, 100, 10**5, 10**6) is Action.OPEN
    p.opened(12.5)
    assert p.state == "recording" and p.stopped_reason == "" and p.stops == 1


def test_policy_floor_defaults_to_the_smaller_of_5_percent_and_1_gib() -> None:
    assert RecordLimits().floor(4 << 20) == (4 << 20) // 20
    assert RecordLimits().floor(1000 * GIB) == GIB
    assert RecordLimits(min_free_percent=10).floor(1000) == 100
    assert RecordLimits(min_free_percent=10, min_free_bytes=500).floor(1000) == 500
    with pytest.raises(ConfigError, match="--record-keep 0"):
        RecordLimits(keep_segments=0)
    with pytest.raises(ConfigError, match="--record-segment"):
        RecordLimits(segment_seconds=0)


def test_policy_retention_by_count_and_bytes_never_the_current_segment() -> None:
    segs = [("a", 100), ("b", 100), ("c", 100), ("d", 100)]
    assert RecordingPolicy(RecordLimits(keep_segments=2)).expired(segs) == ["a", "b"]
    assert RecordingPolicy(RecordLimits(keep_bytes=250)).expired(segs) == ["a", "b"]
    assert RecordingPolicy(RecordLimits(keep_bytes=50)).expired(segs) == ["a", "b", "c"]
    assert RecordingPolicy(RecordLimits()).expired(segs) == []


def test_size_and_duration_parsing_and_the_cli_options() -> None:
    assert parse_bytes("512M") == 512 << 20 and parse_bytes("1.5KiB") == 1536
    assert parse_bytes("20G") == 20 * GIB and parse_bytes("100") == 100
    assert parse_seconds("90") == 90 and parse_seconds("10m") == 600 and parse_seconds("1h") == 3600
    cfg = cli.parse(["--record", "/srv/cam", "--record-segment", "30s", "--record-max-bytes", "64M",
                     "--record-keep", "10", "--record-min-free", "2%"])  # fmt: skip
    assert cfg.record == "/srv/cam"
    assert cfg.record_limits == RecordLimits(
        segment_seconds=30, segment_bytes=64 << 20, keep_segments=10, min_free_percent=2.0
    )
    cfg = cli.parse(["--record", "d", "--record-keep", "5G", "--record-min-free", "100M"])
    assert cfg.record_limits.keep_bytes == 5 * GIB and cfg.record_limits.min_free_bytes == 100 << 20
    assert cli.parse([]).record is None and cli.parse([]).no_signal
    assert not cli.parse(["--no-signal-frame", "off"]).no_signal
    assert cli.main(["--record", "d", "--record-segment", "soon"]) == 2
    assert cli.main(["--record", "d", "--record-keep", "0"]) == 2


# -- the recorder on a real hub ----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("mcastcam-*.mjpeg"))


def index_of(segment: Path) -> list[dict[str, int]]:
    lines = segment.with_suffix(".jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def check_segment(segment: Path) -> list[bytes]:
    """The segment's frames by its index; the index covers the file exactly."""
    data = segment.read_bytes()
    index = index_of(segment)
    pos = 0
    for rec in index:
        assert rec["offset"] == pos
        pos += rec["length"]
    assert pos == len(data)
    frames = [data[r["offset"] : r["offset"] + r["length"]] for r in index]
    assert frames == naive_split(data)
    return frames


async def publish_all(hub: FrameHub, rec: Recorder, frames: list[bytes], clock: Clock,
                      step: float, first_id: int = 0) -> None:  # fmt: skip
    """Publish each frame once the recorder has written the previous one (no skips)."""
    for i, jpeg in enumerate(frames):
        before = rec.frames + rec.frames_stopped
        assert hub.publish(H.served(jpeg, first_id + i)) is not None
        await H.wait_for(lambda: rec.frames + rec.frames_stopped > before, 10)  # noqa: B023
        clock.now += step


def test_recorder_rotates_by_time_and_indexes_every_frame(
    data_files: DataFiles, tmp_path: Path
) -> None:
    frames = H.webcam_frames(data_files, 25)
    clock = Clock()

    async def main() -> None:
        hub = FrameHub()
        limits = RecordLimits(segment_seconds=1.0)
        rec = Recorder(hub, tmp_path, limits, free_space=lambda _: BIG_DISK, clock=clock)
        rec.start()
        try:
            await publish_all(hub, rec, frames, clock, 0.1)  # 10 frames per segment
            st = rec.status()
            assert st["state"] == "recording" and st["frames"] == 25 and st["frames_skipped"] == 0
            assert st["bytes"] == sum(map(len, frames)) and st["segments_written"] == 3
        finally:
            await rec.close()

    asyncio.run(main())
    segs = segments(tmp_path)
    assert len(segs) == 3
    got = [check_segment(s) for s in segs]
    assert [len(g) for g in got] == [10, 10, 5]
    assert [f for g in got for f in g] == frames
    ids = [r["frame_id"] for s in segs for r in index_of(s)]
    assert ids == list(range(25))
    stamps = [r["capture_ts_ns"] for s in segs for r in index_of(s)]
    assert stamps == sorted(stamps) and abs(stamps[0] / 1e9 - time.time()) < 60


def test_recorder_rotates_by_size_and_keeps_n_segments(
    data_files: DataFiles, tmp_path: Path
) -> None:
    frames = H.webcam_frames(data_files, 30)
    limit = 3 * max(map(len, frames))
    clock = Clock()

    async def main() -> None:
        hub = FrameHub()
        limits = RecordLimits(segment_bytes=limit, keep_segments=3)
        rec = Recorder(hub, tmp_path, limits, free_space=lambda _: BIG_DISK, clock=clock)
        rec.start()
        try:
            await publish_all(hub, rec, frames, clock, 0.0)
            assert rec.status()["segments_deleted"] == rec.status()["segments_written"] - 3
        finally:
            await rec.close()

    asyncio.run(main())
    segs = segments(tmp_path)
    assert len(segs) == 3
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".jsonl" and
                p.with_suffix(".mjpeg") not in segs]  # fmt: skip
    kept = [f for s in segs for f in check_segment(s)]
    assert kept == frames[-len(kept) :]  # the newest frames, in order
    for s in segs:
        assert s.stat().st_size <= limit


def test_recorder_keeps_at_most_n_bytes(data_files: DataFiles, tmp_path: Path) -> None:
    frames = H.webcam_frames(data_files, 30)
    clock = Clock()
    keep = 4 * max(map(len, frames)) + 4096
    deleted: list[int] = []

    async def main() -> None:
        hub = FrameHub()
        limits = RecordLimits(segment_bytes=max(map(len, frames)), keep_bytes=keep)
        rec = Recorder(hub, tmp_path, limits, free_space=lambda _: BIG_DISK, clock=clock)
        rec.start()
        try:
            await publish_all(hub, rec, frames, clock, 0.0)
            deleted.append(rec.status()["segments_deleted"])
        finally:
            await rec.close()

    asyncio.run(main())
    # retention runs when a segment opens: what is kept before the newest is within the bound
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    newest = segments(tmp_path)[-1]
    assert total - newest.stat().st_size - newest.with_suffix(".jsonl").stat().st_size <= keep
    assert len(segments(tmp_path)) >= 4 and deleted and deleted[0] > 0


def test_recorder_stops_at_the_floor_says_why_and_resumes(
    data_files: DataFiles, tmp_path: Path
) -> None:
    """An injected disk: free space shrinks by what was written, then comes back."""
    frames = H.webcam_frames(data_files, 20)
    clock = Clock()
    disk = {"free": sum(map(len, frames[:10])) + 10 * 100 + (1 << 20)}  # 10 frames + indexes

    def free_space(path: str) -> tuple[int, int]:
        used = sum(p.stat().st_size for p in Path(path).iterdir())
        return disk["free"] - used, 100 << 20

    async def main() -> None:
        hub = FrameHub()
        rec = Recorder(hub, tmp_path, RecordLimits(min_free_bytes=1 << 20), free_space=free_space,
                       clock=clock)  # fmt: skip
        rec.start()
        try:
            await publish_all(hub, rec, frames[:15], clock, 0.5)
            st = rec.status()
            assert st["state"] == "stopped" and "below the floor of 1.0 MiB" in st["stopped_reason"]
            assert st["segment"] is None and 8 <= st["frames"] < 11 and st["frames_stopped"] >= 4
            free, _ = free_space(str(tmp_path))
            assert free >= 1 << 20  # never below the floor
            disk["free"] += 50 << 20  # space is back: the next check (5 s) resumes
            clock.now += 5
            await publish_all(hub, rec, frames[15:], clock, 0.1, first_id=15)
            st = rec.status()
            assert st["state"] == "recording" and st["stopped_reason"] == ""
        finally:
            await rec.close()

    asyncio.run(main())
    segs = segments(tmp_path)
    assert len(segs) == 2  # the one stopped by the floor, the one after resuming
    assert check_segment(segs[1]) == frames[15:]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
                          capture_output=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_recorder_never_fills_a_real_small_disk(data_files: DataFiles, tmpfs: Path) -> None:
    frames = H.webcam_frames(data_files)
    floor = 1 << 20

    async def main() -> None:
        hub = FrameHub()
        rec = Recorder(hub, tmpfs, RecordLimits(min_free_bytes=floor))  # real statvfs
        rec.start()
        try:
            i = 0
            while rec.status()["state"] != "stopped":
                assert i < 1000, "4 MiB never filled"
                before = rec.frames + rec.frames_stopped
                hub.publish(H.served(frames[i % len(frames)], i))
                await H.wait_for(lambda: rec.frames + rec.frames_stopped > before, 10)  # noqa: B023
                i += 1
            st = rec.status()
            assert "below the floor of 1.0 MiB" in st["stopped_reason"] and st["frames"] > 20
        finally:
            await rec.close()

    asyncio.run(main())
    st = os.statvfs(tmpfs)
    assert st.f_bavail * st.f_frsize >= floor


def test_slow_disk_skips_frames_and_never_blocks_the_loop_or_other_clients(
    data_files: DataFiles, tmp_path: Path
) -> None:
    """Each write takes 0.2 s: the recorder skips, an HTTP client gets every frame, the
    event loop stays responsive (the writes are on the recorder's thread)."""
    frames = H.webcam_frames(data_files, 40)
    gate = threading.Event()

    def slow_free_space(path: str) -> tuple[int, int]:
        gate.wait(0.2)
        return BIG_DISK

    async def main() -> None:
        hub = FrameHub()
        rec = Recorder(hub, tmp_path, RecordLimits(), free_space=slow_free_space)
        rec.start()
        loop = asyncio.get_running_loop()
        lags: list[float] = []

        async def ticker() -> None:
            while True:
                t = loop.time()
                await asyncio.sleep(0.005)
                lags.append(loop.time() - t - 0.005)

        tick = asyncio.create_task(ticker())
        try:
            async with H.http_server(hub) as server:
                reader = asyncio.create_task(H.fetch(server.port, "/stream"))
                await H.wait_for(lambda: len(hub) == 2, 5)
                await H.publish_paced(hub, frames, 0.01)
                await asyncio.sleep(0.05)
                st = rec.status()
                await server.close()
                _, _, body = await reader
        finally:
            tick.cancel()
            gate.set()
            await rec.close()
        assert [p.body for p in H.parse_multipart(body)] == frames
        assert st["frames_skipped"] > 10 and st["frames"] + st["frames_skipped"] <= len(frames)
        assert max(lags) < 0.1, max(lags)

    asyncio.run(main())
    assert all(check_segment(s) for s in segments(tmp_path))


# -- playback: a segment through the sender and ffprobe ----------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.multicast
def test_recorded_segment_plays_back_byte_exact(data_files: DataFiles, tmp_path: Path) -> None:
    """Record from a real sender on loopback multicast; replay the segment with
    ``mcastcam-send --source SEGMENT`` to a second receiver: the same bytes come out."""
    from mcastcam.client import aiter_frames
    from mcastcam.sender import cli as send_cli

    source = naive_split((data_files / H.WEBCAM).read_bytes())
    rec_dir = tmp_path / "rec"

    async def run_pair(src: str, group: str, http: int, *extra: str) -> list[bytes]:
        recv = asyncio.create_task(cli.run(cli.parse(
            ["--interface", "lo", "--group", group, "--http", f"127.0.0.1:{http}", "--quiet",
             "--no-signal-frame", "off", *extra])))  # fmt: skip
        await asyncio.sleep(0.5)
        client = asyncio.create_task(_take(aiter_frames(f"http://127.0.0.1:{http}/stream"), 20))
        await asyncio.sleep(0.3)
        send = asyncio.create_task(send_cli.run(send_cli.parse(
            ["--source", src, "--interface", "lo", "--ttl", "0", "--group", group, "--mtu",
             "1500", "--fps", "30", "--quiet"])))  # fmt: skip
        try:
            return await asyncio.wait_for(client, 30)
        finally:
            for task in (send, recv):
                task.cancel()
            await asyncio.gather(send, recv, return_exceptions=True)

    async def _take(it: object, n: int) -> list[bytes]:
        out = []
        async for f in it:  # type: ignore[attr-defined]
            out.append(f.jpeg)
            if len(out) == n:
                break
        return out

    async def main() -> None:
        src = str(data_files / H.WEBCAM)
        await run_pair(src, f"239.255.91.7:{free_port()}", free_port(), "--record", str(rec_dir))
        (segment,) = segments(rec_dir)
        recorded = check_segment(segment)
        assert len(recorded) >= 20
        start = source.index(recorded[0])
        assert recorded == source[start : start + len(recorded)]  # byte-exact, in order
        played = await run_pair(str(segment), f"239.255.91.8:{free_port()}", free_port())
        assert played == recorded[: len(played)] and len(played) == 20

    asyncio.run(main())


@pytest.mark.clients
@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (package ffmpeg) missing")
def test_ffprobe_reads_a_segment(data_files: DataFiles, tmp_path: Path) -> None:
    frames = H.webcam_frames(data_files, 12)
    clock = Clock()

    async def main() -> None:
        hub = FrameHub()
        rec = Recorder(hub, tmp_path, RecordLimits(), free_space=lambda _: BIG_DISK, clock=clock)
        rec.start()
        try:
            await publish_all(hub, rec, frames, clock, 0.1)
        finally:
            await rec.close()

    asyncio.run(main())
    (segment,) = segments(tmp_path)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(segment)],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    (stream,) = json.loads(out.stdout)["streams"]
    assert stream["codec_name"] == "mjpeg" and (stream["width"], stream["height"]) == (640, 480)
    assert int(stream["nb_read_frames"]) == len(frames) == len(index_of(segment))
