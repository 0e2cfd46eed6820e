"""Raw TCP re-serve on loopback: exact header layout, byte-identical frames, limits, stalls."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from mcastcam.receiver.fanout import FrameHub
from mcastcam.receiver.tcp import TCP_HEADER, encode_tcp_frame
from tests.conftest import DataFiles
from tests.receiver import helpers_http as H


def test_header_layout_is_20_bytes_big_endian() -> None:
    assert TCP_HEADER.size == 20

    async def main() -> None:
        frame = H.served(b"\xff\xd8jpeg\xff\xd9", 0xDEADBEEF)
        header, jpeg = encode_tcp_frame(frame)
        assert isinstance(jpeg, memoryview) and bytes(jpeg) == b"\xff\xd8jpeg\xff\xd9"
        assert header[:4] == b"MCTF"
        assert header[4:8] == (8).to_bytes(4, "big")
        assert header[8:16] == frame.capture_ts_ns.to_bytes(8, "big")
        assert header[16:20] == b"\xde\xad\xbe\xef"

    asyncio.run(main())


def test_tcp_clients_get_identical_frames_in_order(data_files: DataFiles) -> None:
    frames = H.webcam_frames(data_files, 30)

    async def read_frames(port: int, n: int) -> list[tuple[bytes, int, int]]:
        reader, writer = await asyncio.open_connection(H.LOOPBACK, port)
        out = []
        try:
            for _ in range(n):
                magic, length, ts_ns, frame_id = struct.unpack(
                    ">4sIQI", await asyncio.wait_for(reader.readexactly(20), 5)
                )
                assert magic == b"MCTF"
                out.append((await reader.readexactly(length), ts_ns, frame_id))
        finally:
            await H.close_writer(writer)
        return out

    async def main() -> None:
        hub = FrameHub()
        async with H.tcp_server(hub) as server:
            readers = [asyncio.create_task(read_frames(server.port, len(frames))) for _ in range(3)]
            await H.wait_for(lambda: len(hub) == 3)
            sent = await H.publish_paced(hub, frames, 0.01)
            results = await asyncio.wait_for(asyncio.gather(*readers), 20)
            stats = hub.stats()
        for got in results:
            assert [g[0] for g in got] == frames
            assert [g[2] for g in got] == list(range(len(frames)))
            assert [g[1] for g in got] == [f.capture_ts_ns for f in sent]
        assert {c["kind"] for c in stats["clients"]} == {"tcp"}
        assert stats["frames_sent_total"] == 3 * len(frames)

    asyncio.run(main())


def test_tcp_client_gets_latest_frame_at_once_and_input_is_ignored(data_files: DataFiles) -> None:
    frames = H.webcam_frames(data_files, 2)

    async def main() -> None:
        hub = FrameHub()
        async with H.tcp_server(hub) as server:
            hub.publish(H.served(frames[0], 5))
            reader, writer = await asyncio.open_connection(H.LOOPBACK, server.port)
            try:
                writer.write(b"GET / HTTP/1.0\r\n\r\n garbage \x00\xff")
                writer.write_eof()  # half-close: the server keeps sending
                header = await asyncio.wait_for(reader.readexactly(20), 5)
                assert header[:4] == b"MCTF" and header[16:20] == (5).to_bytes(4, "big")
                assert await reader.readexactly(len(frames[0])) == frames[0]
                hub.publish(H.served(frames[1], 6))
                header = await asyncio.wait_for(reader.readexactly(20), 5)
                assert header[16:20] == (6).to_bytes(4, "big")
            finally:
                await H.close_writer(writer)
            # after a half-close only a write can tell that the client has gone (RST)
            for i in range(100):
                if len(hub) == 0:
                    break
                hub.publish(H.served(frames[1], 7 + i))
                await asyncio.sleep(0.02)
            assert len(hub) == 0

    asyncio.run(main())


def test_tcp_max_clients_closes_extra_connection() -> None:
    async def main() -> None:
        hub = FrameHub(max_clients=1)
        async with H.tcp_server(hub) as server:
            _, w1 = await asyncio.open_connection(H.LOOPBACK, server.port)
            await H.wait_for(lambda: len(hub) == 1)
            r2, w2 = await asyncio.open_connection(H.LOOPBACK, server.port)
            with contextlib.suppress(ConnectionResetError):  # aborted: also a refusal
                assert await asyncio.wait_for(r2.read(), 5) == b""  # closed at once
            assert hub.clients_refused == 1 and len(hub) == 1
            await H.close_writer(w2)
            await H.close_writer(w1)

    asyncio.run(main())


def test_tcp_stalled_client_is_dropped(data_files: DataFiles) -> None:
    big = H.naive_split((data_files / "bedroom_960x540_420_first100.mjpeg").read_bytes())[:40]

    async def main() -> None:
        hub = FrameHub()
        async with H.tcp_server(hub, stall_timeout=0.5) as server:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                await asyncio.to_thread(sock.connect, (H.LOOPBACK, server.port))
                await H.wait_for(lambda: len(hub) == 1)
                (sub,) = hub.subscribers
                publisher = asyncio.create_task(H.publish_paced(hub, big * 8, 0.01))
                await H.wait_for(lambda: len(hub) == 0, timeout=15)
                publisher.cancel()
                assert sub.frames_skipped > 0
            finally:
                sock.close()

    asyncio.run(main())


def test_tcp_close_disconnects_clients() -> None:
    async def main() -> None:
        hub = FrameHub()
        server = await H.start_tcp(hub, H.LOOPBACK, 0)
        reader, writer = await asyncio.open_connection(H.LOOPBACK, server.port)
        await H.wait_for(lambda: len(hub) == 1)
        await asyncio.wait_for(server.close(), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await H.close_writer(writer)
        await H.wait_for(lambda: len(hub) == 0)

    asyncio.run(main())
