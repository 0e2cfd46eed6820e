"""Sender and receiver CLIs in-process on loopback multicast, read by real clients.

Both programs run as tasks of one event loop in a background thread (``run(parse(argv))``,
exactly what ``main`` runs); curl, ffmpeg and mcastcam.client read from the receiver.
Multicast is pinned to ``lo`` with TTL 0; every group is in 239.255.0.0/16.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcastcam.client import iter_frames
from mcastcam.receiver import cli as recv_cli
from mcastcam.sender import cli as send_cli
from tests.conftest import DataFiles, naive_split

pytestmark = pytest.mark.multicast

SAMPLE = Path(__file__).resolve().parents[1] / "mcastcam" / "data" / "sample_webcam_640x480.mjpeg"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Loop:
    """An event loop in a thread, running CLI programs as tasks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: list[tuple[asyncio.Task[int], concurrent.futures.Future[int | None]]] = []

    def start(self, coro: Any) -> concurrent.futures.Future[int | None]:
        """Run ``coro`` as a task; the returned future ends when the task has ended."""
        done: concurrent.futures.Future[int | None] = concurrent.futures.Future()

        async def make() -> asyncio.Task[int]:
            task = asyncio.ensure_future(coro)

            def finished(t: asyncio.Task[int]) -> None:
                if t.cancelled():
                    done.set_result(None)
                elif t.exception() is not None:
                    done.set_exception(t.exception())  # type: ignore[arg-type]
                else:
                    done.set_result(t.result())

            task.add_done_callback(finished)
            return task

        task = asyncio.run_coroutine_threadsafe(make(), self.loop).result(5)
        self.tasks.append((task, done))
        return done

    def stop(self, done: concurrent.futures.Future[int | None]) -> None:
        """Cancel one program (as Ctrl-C would) and wait until it has ended."""
        for task, fut in self.tasks:
            if fut is done:
                self.loop.call_soon_threadsafe(task.cancel)
                with contextlib.suppress(Exception):
                    fut.result(timeout=10)

    def close(self) -> None:
        for task, done in self.tasks:
            self.loop.call_soon_threadsafe(task.cancel)
            with contextlib.suppress(Exception):
                done.result(timeout=10)
        asyncio.run_coroutine_threadsafe(self.loop.shutdown_asyncgens(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def programs() -> Iterator[Loop]:
    loop = Loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def group() -> str:
    return (
        f"239.255.{random.randint(2, 254)}.{random.randint(1, 254)}:{free_port(socket.SOCK_DGRAM)}"
    )


def receiver(
    programs: Loop, group: str, *extra: str
) -> tuple[int, concurrent.futures.Future[int | None]]:
    port = free_port()
    argv = ["--interface", "lo", "--group", group, "--http", f"127.0.0.1:{port}", "--quiet", *extra]
    fut = programs.start(recv_cli.run(recv_cli.parse(argv)))
    wait_for(lambda: http_get(port, "/status") is not None, 10)
    return port, fut


def sender(
    programs: Loop, group: str, source: str, *extra: str
) -> concurrent.futures.Future[int | None]:
    argv = [
        "--source",
        source,
        "--interface",
        "lo",
        "--ttl",
        "0",
        "--group",
        group,
        "--mtu",
        "1500",
        "--quiet",
        *extra,
    ]
    return programs.start(send_cli.run(send_cli.parse(argv)))


def http_get(port: int, path: str, timeout: float = 5) -> tuple[int, bytes, dict[str, str]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)
    except OSError:
        return None


def status(port: int) -> dict[str, Any]:
    got = http_get(port, "/status")
    assert got is not None and got[0] == 200
    return json.loads(got[1])  # type: ignore[no-any-return]


def wait_for(cond: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def parse_multipart(body: bytes) -> list[bytes]:
    """Frames of an mjpg-streamer multipart body (by Content-Length)."""
    frames = []
    pos = 0
    while True:
        start = body.find(b"--boundarydonotcross\r\n", pos)
        if start < 0:
            break
        head_end = body.find(b"\r\n\r\n", start)
        if head_end < 0:
            break
        headers = body[start:head_end].decode().split("\r\n")
        length = next(
            (int(h.split(":")[1]) for h in headers if h.lower().startswith("content-length")), None
        )
        if length is None or head_end + 4 + length > len(body):
            break
        frames.append(body[head_end + 4 : head_end + 4 + length])
        pos = head_end + 4 + length
    return frames


def assert_in_order(got: list[bytes], source: list[bytes]) -> None:
    index = {f: i for i, f in reversed(list(enumerate(source)))}
    positions = []
    for f in got:
        assert f in index, "a served frame is not byte-identical to any source frame"
        positions.append(index[f])
    assert positions == sorted(positions) or _wraps(positions), positions


def _wraps(positions: list[int]) -> bool:  # a looping source starts again at 0
    drops = sum(1 for a, b in itertools.pairwise(positions) if b < a)
    return drops <= 1


def recording(data_files: DataFiles, name: str) -> tuple[str, list[bytes]]:
    path = data_files / name
    return str(path), naive_split(path.read_bytes())


@pytest.mark.clients
@pytest.mark.parametrize("name", ["webcam_640x480_420.mjpeg", "synthetic_1280x720_422.mjpeg"])
def test_curl_reads_byte_identical_frames_in_order(
    programs: Loop, group: str, data_files: DataFiles, name: str
) -> None:
    path, source = recording(data_files, name)
    port, _ = receiver(programs, group)
    sender(programs, group, path, "--fps", "30", "--loop")
    wait_for(lambda: status(port)["online"], 10)
    out = subprocess.run(
        ["curl", "-s", "-N", "--max-time", "3", f"http://127.0.0.1:{port}/?action=stream"],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert out.returncode == 28, out.stderr  # 28: stopped by --max-time, as meant
    frames = parse_multipart(out.stdout)
    assert len(frames) >= 45  # ~3 s at 30 fps
    assert_in_order(frames, source)
    st = status(port)["streams"][0]
    assert st["frames_dropped"] == {} and st["lost"] == 0


@pytest.mark.clients
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg (Debian package ffmpeg) missing")
def test_ffmpeg_reads_the_stream(programs: Loop, group: str, data_files: DataFiles) -> None:
    path, source = recording(data_files, "webcam_640x480_420.mjpeg")
    port, _ = receiver(programs, group)
    sender(programs, group, path, "--fps", "30", "--loop")
    wait_for(lambda: status(port)["online"], 10)
    out = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "mpjpeg",
            "-i",
            f"http://127.0.0.1:{port}/stream",
            "-frames:v",
            "20",
            "-c",
            "copy",
            "-f",
            "image2pipe",
            "-",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    frames = naive_split(out.stdout)
    assert len(frames) == 20
    assert_in_order(frames, source)


def test_snapshot_503_before_frames_then_latest_then_fresh_timeout(
    programs: Loop, group: str
) -> None:
    port, _ = receiver(programs, group)
    t0 = time.monotonic()
    got = http_get(port, "/snapshot")
    assert got is not None and got[0] == 503 and time.monotonic() - t0 < 2
    assert got[1].strip() and b"\n" not in got[1].strip()
    source = naive_split(SAMPLE.read_bytes())
    snd = sender(programs, group, "sample", "--fps", "30", "--count", "20")
    assert snd.result(timeout=20) == 0
    got = http_get(port, "/?action=snapshot")
    assert got is not None and got[0] == 200
    assert got[1] == source[19]
    t0 = time.monotonic()
    got = http_get(port, "/snapshot?fresh=1&timeout=0.2")
    elapsed = time.monotonic() - t0
    assert got is not None and got[0] == 503 and 0.15 <= elapsed < 1.5


def test_two_receivers_on_one_host_get_every_frame(programs: Loop, group: str) -> None:
    p1, _ = receiver(programs, group)
    p2, _ = receiver(programs, group)
    snd = sender(programs, group, "sample", "--fps", "60", "--count", "90")
    assert snd.result(timeout=30) == 0
    for port in (p1, p2):
        wait_for(lambda port=port: status(port)["streams"][0]["frames_completed"] >= 90, 5)
        st = status(port)["streams"][0]
        assert st["frames_completed"] == 90 and st["frames_dropped"] == {} and st["lost"] == 0


def test_tcp_re_serve_and_client_deliver_the_same_frames(programs: Loop, group: str) -> None:
    tcp_port = free_port()
    port, _ = receiver(programs, group, "--tcp", f"127.0.0.1:{tcp_port}")
    sender(programs, group, "sample", "--fps", "30", "--loop")
    wait_for(lambda: status(port)["online"], 10)
    source = naive_split(SAMPLE.read_bytes())
    via_tcp = list(iter_frames(f"tcp://127.0.0.1:{tcp_port}", max_frames=15, timeout=5))
    via_http = list(iter_frames(f"http://127.0.0.1:{port}/stream", max_frames=15, timeout=5))
    for frames in (via_tcp, via_http):
        assert len(frames) == 15
        assert_in_order([f.jpeg for f in frames], source)
        ids = [f.frame_id for f in frames]
        assert all(i is not None for i in ids)
        assert ids == sorted(ids)  # type: ignore[type-var]


def test_restarted_sender_is_followed_and_stream_clients_resume(programs: Loop, group: str) -> None:
    port, _ = receiver(programs, group, "--liveness-timeout", "1")
    first = sender(programs, group, "sample", "--fps", "30", "--name", "cam", "--count", "15")
    assert first.result(timeout=20) == 0
    wait_for(lambda: not status(port)["online"], 5)  # lost after 1 s of silence
    assert http_get(port, "/snapshot")[0] == 503  # type: ignore[index]
    old = status(port)["followed"]
    sender(programs, group, "sample", "--fps", "30", "--name", "cam", "--loop")
    wait_for(lambda: status(port)["online"] and status(port)["followed"] != old, 5)
    got = http_get(port, "/snapshot")
    assert got is not None and got[0] == 200


def test_sender_sees_its_receivers_and_a_stopped_one_leaves(
    programs: Loop, group: str, tmp_path: Path
) -> None:
    _, rx1 = receiver(programs, group, "--receiver-name", "rx-one")
    receiver(programs, group, "--receiver-name", "rx-two")
    status_file = tmp_path / "send-status.json"
    sender(
        programs,
        group,
        "sample",
        "--loop",
        "--heartbeat-interval",
        "0.2",
        "--status-json",
        str(status_file),
    )

    def audience() -> dict[str, Any]:
        try:
            return json.loads(status_file.read_text())["audience"]  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {"receivers": -1, "listeners": []}

    wait_for(lambda: audience()["receivers"] == 2, 10)
    aud = audience()
    assert sorted(entry["name"] for entry in aud["listeners"]) == ["rx-one", "rx-two"]
    assert aud["rtt_ms_median"] is not None and 0 <= aud["rtt_ms_median"] < 100
    assert aud["worst_loss_pct"] == 0.0
    programs.stop(rx1)  # this receiver goes away: it must leave the sender's audience
    wait_for(lambda: [e["name"] for e in audience()["listeners"]] == ["rx-two"], 10)


def test_garbage_is_counted_by_reason_and_logged_once_per_minute(
    programs: Loop, group: str, caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = receiver(programs, group)
    addr, udp_port = group.split(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        for i in range(200):
            tx.sendto(b"garbage" * (i % 5) + b"MC\x02\x63" + bytes(10), (addr, int(udp_port)))
    wait_for(lambda: sum(status(port)["decode_errors"].values()) == 200, 5)
    errors = status(port)["decode_errors"]
    assert errors == {"bad_magic": 160, "unknown_kind": 40}
    sender(programs, group, "sample", "--fps", "30", "--count", "10")
    wait_for(lambda: status(port)["online"], 10)  # still serving
    time.sleep(1.5)  # the status loop logs once a second at most
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert sorted(lines) == [
        "dropped 160 datagram(s): bad_magic (160 in all)",
        "dropped 40 datagram(s): unknown_kind (40 in all)",
    ]
