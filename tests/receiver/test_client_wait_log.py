"""mcastcam.client says what it waits for while it reconnects (real sockets on loopback)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from mcastcam import client
from mcastcam.client import iter_frames
from mcastcam.receiver.fanout import FrameHub
from tests.conftest import naive_split
from tests.receiver import helpers_http as H

SAMPLE = Path(client.__file__).parent / "data" / "sample_webcam_640x480.mjpeg"


class _Stop(Exception):
    pass


def _stop_after(n: int) -> tuple[list[float], Callable[[float], None]]:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= n:
            raise _Stop

    return sleeps, sleep


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((H.LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _client_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "mcastcam.client"]


def test_refused_connections_warn_once_then_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mcastcam.client")
    url = f"tcp://127.0.0.1:{_free_port()}"
    sleeps, sleep = _stop_after(4)
    with pytest.raises(_Stop):
        next(iter_frames(url, sleep=sleep))
    assert sleeps == [0.1, 0.2, 0.4, 0.8]
    records = _client_records(caplog)
    assert records == [
        (
            logging.WARNING,
            f"{url}: connection refused (waiting for a receiver to listen there); "
            "retrying in 0.1 s",
        )
    ]  # the next three attempts fall inside WAIT_LOG_INTERVAL


def test_still_waiting_lines_count_attempts(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, "mcastcam.client")
    monkeypatch.setattr(client, "WAIT_LOG_INTERVAL", 0.0)
    url = f"http://127.0.0.1:{_free_port()}/stream"
    _, sleep = _stop_after(3)
    with pytest.raises(_Stop):
        next(iter_frames(url, sleep=sleep))
    levels = [level for level, _ in _client_records(caplog)]
    messages = [message for _, message in _client_records(caplog)]
    assert levels == [logging.WARNING, logging.INFO, logging.INFO]
    assert "still no frames after" in messages[1] and "2 attempts" in messages[1]
    assert "3 attempts" in messages[2] and "connection refused" in messages[2]


def test_silent_server_then_frames_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mcastcam.client")
    frame = naive_split(SAMPLE.read_bytes())[0]
    _, sleep = _stop_after(8)  # bounds the thread if the test fails

    async def main() -> list[client.ClientFrame]:
        hub = FrameHub()
        async with H.tcp_server(hub) as tcp:  # accepts, but has no frame yet
            url = f"tcp://127.0.0.1:{tcp.port}"
            task = asyncio.create_task(
                asyncio.to_thread(
                    lambda: list(iter_frames(url, timeout=0.3, max_frames=1, sleep=sleep))
                )
            )
            await H.wait_for(
                lambda: any("waiting for frames" in m for _, m in _client_records(caplog))
            )
            hub.publish(H.served(frame, 9))
            return await asyncio.wait_for(task, 10)

    got = asyncio.run(main())
    assert [(f.frame_id, f.jpeg) for f in got] == [(9, frame)]
    records = _client_records(caplog)
    assert records[0][0] == logging.WARNING
    assert "nothing received for 0.3 s (waiting for frames)" in records[0][1]
    assert records[-1][0] == logging.INFO and "frames again after" in records[-1][1]
