"""mcastcam.client against the real HTTP and TCP re-serve on loopback."""

from __future__ import annotations

import asyncio

import pytest

from mcastcam.client import (
    ClientFrame,
    StreamConnectionError,
    StreamFormatError,
    aiter_frames,
    iter_frames,
)
from mcastcam.errors import ConfigError
from mcastcam.receiver.fanout import FrameHub
from tests.conftest import DataFiles
from tests.receiver import helpers_http as H


async def _collect_sync(url: str, n: int, **kwargs: object) -> list[ClientFrame]:
    return await asyncio.to_thread(
        lambda: list(iter_frames(url, max_frames=n, timeout=5, **kwargs))  # type: ignore[arg-type]
    )


async def _collect_async(url: str, n: int) -> list[ClientFrame]:
    return [f async for f in aiter_frames(url, max_frames=n, timeout=5)]


def test_http_and_tcp_deliver_the_same_frames(data_files: DataFiles) -> None:
    frames = H.webcam_frames(data_files, 20)

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub) as http, H.tcp_server(hub) as tcp:
            urls = [f"{http.url}/stream", f"http://127.0.0.1:{http.port}/?action=stream",
                    f"tcp://127.0.0.1:{tcp.port}"]  # fmt: skip
            tasks = [asyncio.create_task(_collect_sync(u, len(frames))) for u in urls]
            tasks += [asyncio.create_task(_collect_async(u, len(frames))) for u in urls]
            await H.wait_for(lambda: len(hub) == len(tasks), timeout=10)
            sent = await H.publish_paced(hub, frames, 0.01)
            results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        for got in results:
            assert [f.jpeg for f in got] == frames
            assert [f.frame_id for f in got] == list(range(len(frames)))
        tcp_ts = [f.capture_ts_ns for f in results[2]]
        assert tcp_ts == [f.capture_ts_ns for f in sent]
        http_ts = [f.capture_ts_ns for f in results[0]]
        assert http_ts == [t // 1000 * 1000 for t in tcp_ts]  # X-Timestamp: microseconds

    asyncio.run(main())


def test_reconnects_with_backoff_after_server_restart(data_files: DataFiles) -> None:
    frames = H.webcam_frames(data_files, 10)
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:  # records the backoff, still really waits
        sleeps.append(seconds)
        import time

        time.sleep(seconds)

    async def main() -> list[ClientFrame]:
        hub = FrameHub()
        server = await H.start_tcp(hub, H.LOOPBACK, 0)
        port = server.port
        url = f"tcp://127.0.0.1:{port}"
        task = asyncio.create_task(_collect_sync(url, 11, sleep=fake_sleep))
        try:
            await H.wait_for(lambda: len(hub) == 1)
            await H.publish_paced(hub, frames[:5], 0.01)
            await server.close()
            await H.wait_for(lambda: len(hub) == 0)
            await asyncio.sleep(0.3)  # the client fails to connect a few times
            server = await H.start_tcp(hub, H.LOOPBACK, port)
            await H.wait_for(lambda: len(hub) == 1, timeout=10)
            await H.publish_paced(hub, frames[5:], 0.01, first_id=5)
            return await asyncio.wait_for(task, 20)
        finally:
            await server.close()

    got = asyncio.run(main())
    # on reconnecting, the client first gets the latest frame again (4), then new ones
    order = [0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9]
    assert [f.frame_id for f in got] == order
    assert [f.jpeg for f in got] == [frames[i] for i in order]
    assert sleeps[:2] == [0.1, 0.2]  # doubling backoff
    assert all(s <= 5.0 for s in sleeps)


def test_no_reconnect_raises_when_the_stream_ends(data_files: DataFiles) -> None:
    frame = H.webcam_frames(data_files, 1)[0]

    async def main() -> None:
        hub = FrameHub()
        server = await H.start_http(hub, H.LOOPBACK, 0)
        hub.publish(H.served(frame, 1))
        got: list[ClientFrame] = []

        def consume() -> None:
            for f in iter_frames(f"{server.url}/stream", reconnect=False, timeout=5):
                got.append(f)

        task = asyncio.create_task(asyncio.to_thread(consume))
        await H.wait_for(lambda: len(got) == 1)
        await server.close()
        with pytest.raises(StreamConnectionError):
            await asyncio.wait_for(task, 10)
        assert got[0].jpeg == frame

    asyncio.run(main())


def test_http_auth_in_url_and_401_is_permanent(data_files: DataFiles) -> None:
    frame = H.webcam_frames(data_files, 1)[0]

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub, auth=("cam", "p@ss word")) as server:
            hub.publish(H.served(frame, 3))
            url = f"http://cam:p%40ss%20word@127.0.0.1:{server.port}/stream"
            got = await _collect_sync(url, 1)
            assert got[0].jpeg == frame and got[0].frame_id == 3
            bad = f"http://cam:nope@127.0.0.1:{server.port}/stream"
            with pytest.raises(StreamConnectionError) as info:
                await _collect_sync(bad, 1)  # reconnect=True, but 401 cannot get better
            assert info.value.status == 401
            with pytest.raises(StreamConnectionError) as ainfo:
                await _collect_async(bad, 1)
            assert ainfo.value.status == 401

    asyncio.run(main())


@pytest.mark.parametrize(
    "url", ["udp://127.0.0.1:5000", "http://127.0.0.1/stream", "tcp://:80", "tcp://h:99999"]
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        next(iter_frames(url))


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (b"XXXX" + bytes(16), "tcp"),
        (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello", "http"),
        (
            b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: image/jpeg\r\nContent-Length: lots\r\n\r\n",
            "http",
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=b\r\n\r\n"
            b"--wrong\r\n",
            "http",
        ),
    ],
)
def test_malformed_streams_raise_format_error(reply: bytes, kind: str) -> None:
    async def main() -> None:
        writers: list[asyncio.StreamWriter] = []

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            writer.write(reply)
            await writer.drain()

        server = await asyncio.start_server(answer, H.LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(StreamFormatError):
                await asyncio.to_thread(
                    lambda: next(iter_frames(f"{kind}://127.0.0.1:{port}/", reconnect=False))
                )
            with pytest.raises(StreamFormatError):
                async for _ in aiter_frames(f"{kind}://127.0.0.1:{port}/", reconnect=False):
                    pass
        finally:
            server.close()
            await server.wait_closed()
            for writer in writers:
                await H.close_writer(writer)

    asyncio.run(main())


def test_max_frames_zero_yields_nothing() -> None:
    assert list(iter_frames("tcp://127.0.0.1:9", max_frames=0)) == []
