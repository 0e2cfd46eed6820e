"""FrameHub: latest frame, one-slot subscribers over real socketpair transports, DHT, limits."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Sequence

import pytest
import simplejpeg

from mcastcam.jpeg import STANDARD_DHT, ensure_dht
from mcastcam.protocol.frame import Frame
from mcastcam.receiver.fanout import FrameHub, HubFullError, Piece, Subscriber
from tests.conftest import DataFiles, naive_split

LEN = struct.Struct(">II")  # test wire format: frame id, length


def frame_of(jpeg: bytes | memoryview, frame_id: int) -> Frame:
    return Frame(
        jpeg=jpeg,
        frame_id=frame_id,
        capture_ts_ns=time.time_ns(),
        stream_id=1,
        completed_at=asyncio.get_running_loop().time(),
    )


class Counting:
    """An encoder (one long-lived object) that counts how often it encodes."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, frame: Frame) -> Sequence[Piece]:
        self.calls += 1
        view = memoryview(frame.jpeg)
        return LEN.pack(frame.frame_id, view.nbytes), view


class Relay(asyncio.Protocol):
    """Server side of a socketpair: tells the subscriber when its transport drains."""

    sub: Subscriber | None = None

    def resume_writing(self) -> None:
        if self.sub is not None:
            self.sub.drained()


async def attach(
    hub: FrameHub, encoder: Counting, *, sndbuf: int | None = None, name: str = "socketpair"
) -> tuple[Subscriber, socket.socket, asyncio.Transport]:
    ours, theirs = socket.socketpair()
    if sndbuf is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
    theirs.setblocking(False)
    transport, relay = await asyncio.get_running_loop().connect_accepted_socket(Relay, ours)
    try:
        sub = hub.subscribe(transport, kind="tcp", address=name, encoder=encoder)
    except HubFullError:
        transport.close()
        theirs.close()
        await asyncio.sleep(0)
        raise
    relay.sub = sub
    return sub, theirs, transport


async def read_all(sock: socket.socket, idle: float = 0.3) -> bytes:
    """Read until nothing arrives for ``idle`` seconds (bounded: 200 rounds)."""
    loop = asyncio.get_running_loop()
    chunks = []
    for _ in range(200):
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), idle)
        except TimeoutError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def parse(stream: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(stream):
        fid, n = LEN.unpack_from(stream, pos)
        out.append((fid, stream[pos + 8 : pos + 8 + n]))
        pos += 8 + n
    assert pos == len(stream)
    return out


@pytest.fixture(scope="module")
def webcam(data_files: DataFiles) -> list[bytes]:
    return naive_split((data_files / "webcam_640x480_420.mjpeg").read_bytes())


@pytest.fixture(scope="module")
def bedroom(data_files: DataFiles) -> list[bytes]:
    return naive_split((data_files / "bedroom_960x540_420_first100.mjpeg").read_bytes())[:60]


def test_latest_online_and_memoryview_frames(webcam: list[bytes]) -> None:
    async def main() -> None:
        hub = FrameHub()
        assert hub.latest is None and not hub.online and hub.offline_reason
        view = memoryview(bytearray(webcam[0])).toreadonly()
        frame = frame_of(view, 1)
        served = hub.publish(frame)
        assert served is not None and hub.latest is served and hub.online
        assert served is frame and served.jpeg is view  # a reassembled frame is not copied
        assert served.jpeg == webcam[0]
        hub.set_online(False, "sender lost: no heartbeat for 3 s")
        assert not hub.online and hub.offline_reason == "sender lost: no heartbeat for 3 s"
        assert hub.latest is served  # kept for when it comes back
        hub.publish(frame_of(webcam[1], 2))
        assert hub.online and hub.offline_reason == "" and hub.frames_published == 2

    asyncio.run(main())


def test_dht_inserted_for_uvc_frames_and_bytes_kept_otherwise(
    data_files: DataFiles, webcam: list[bytes]
) -> None:
    uvc = (data_files / "synthetic_uvc_640x480_422_nodht.jpg").read_bytes()

    async def main() -> None:
        hub = FrameHub()
        original = frame_of(webcam[0], 1)
        assert hub.publish(original) is original  # has a DHT: the very same object
        served = hub.publish(frame_of(uvc, 2))
        assert served is not None
        assert served.jpeg == ensure_dht(uvc)
        assert len(served.jpeg) == len(uvc) + len(STANDARD_DHT)
        assert b"\xff\xc4" not in uvc and STANDARD_DHT in served.jpeg
        assert simplejpeg.decode_jpeg(bytes(served.jpeg)).shape == (480, 640, 3)

    asyncio.run(main())


@pytest.mark.parametrize("bad", [b"", b"not a jpeg at all", b"\xff\xd8\xff\xd9"])
def test_malformed_frames_counted_and_dropped(webcam: list[bytes], bad: bytes) -> None:
    async def main() -> None:
        hub = FrameHub()
        good = hub.publish(frame_of(webcam[0], 1))
        assert hub.publish(frame_of(bad, 2)) is None
        assert hub.frames_malformed == 1 and hub.latest is good and hub.frames_published == 1
        assert hub.stats()["frames_malformed"] == 1

    asyncio.run(main())


def test_wait_newer(webcam: list[bytes]) -> None:
    async def main() -> None:
        hub = FrameHub()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await hub.wait_newer(None, 0.1) is None
        assert 0.05 <= loop.time() - t0 < 1.0
        first = hub.publish(frame_of(webcam[0], 1))
        assert await hub.wait_newer(None, 0.1) is first  # already newer than nothing
        assert await hub.wait_newer(first, 0.05) is None
        loop.call_later(0.05, hub.publish, frame_of(webcam[1], 2))
        waiters = [hub.wait_newer(first, 5) for _ in range(3)]
        got = await asyncio.gather(*waiters)
        assert all(g is hub.latest and g is not first for g in got)

    asyncio.run(main())


def test_every_client_gets_every_frame_and_one_encoding_per_frame(webcam: list[bytes]) -> None:
    frames = webcam[:20]

    async def main() -> None:
        hub = FrameHub()
        encoder = Counting()
        clients = [await attach(hub, encoder) for _ in range(5)]
        for i, jpeg in enumerate(frames):
            hub.publish(frame_of(jpeg, i))
            await asyncio.sleep(0.005)
        for sub, sock, transport in clients:
            assert parse(await read_all(sock)) == list(enumerate(frames))
            assert sub.frames_sent == len(frames) and sub.frames_skipped == 0
            assert sub.fps(hub.now()) > 0
            transport.close()
            sock.close()
        assert encoder.calls == len(frames)  # shared by all five clients
        await asyncio.sleep(0)

    asyncio.run(main())


def test_busy_client_keeps_only_the_newest_frame(bedroom: list[bytes]) -> None:
    async def main() -> None:
        hub = FrameHub()
        encoder = Counting()
        slow, slow_sock, slow_tr = await attach(hub, encoder, sndbuf=4096, name="slow")
        fast, fast_sock, fast_tr = await attach(hub, encoder, name="fast")
        fast_reader = asyncio.create_task(read_all(fast_sock, idle=1.0))
        for i, jpeg in enumerate(bedroom):  # nobody reads the slow socket meanwhile
            hub.publish(frame_of(jpeg, i))
            await asyncio.sleep(0.002)
        assert slow.busy and slow.pending and slow.frames_skipped > 0
        assert slow.frames_sent + slow.frames_skipped + slow.pending == len(bedroom)
        stats = {c["address"]: c for c in hub.stats()["clients"]}
        assert stats["slow"]["frames_skipped"] == slow.frames_skipped and stats["slow"]["busy"]
        assert stats["fast"]["kind"] == "tcp" and stats["fast"]["frames_skipped"] == 0
        # the fast client was not held back by the slow one
        assert parse(await fast_reader) == list(enumerate(bedroom))
        assert fast.frames_skipped == 0
        # draining the slow socket releases its slot: it gets the newest frame, last
        got = parse(await read_all(slow_sock))
        ids = [fid for fid, _ in got]
        assert ids == sorted(ids) and ids[-1] == len(bedroom) - 1
        assert all(jpeg == bedroom[fid] for fid, jpeg in got)
        assert len(got) == slow.frames_sent and not slow.busy and not slow.pending
        for sub, sock, tr in ((slow, slow_sock, slow_tr), (fast, fast_sock, fast_tr)):
            hub.unsubscribe(sub)
            tr.close()
            sock.close()
        totals = hub.stats()
        assert totals["clients_count"] == 0
        assert totals["frames_skipped_total"] == slow.frames_skipped
        assert totals["frames_sent_total"] == slow.frames_sent + fast.frames_sent
        await asyncio.sleep(0)

    asyncio.run(main())


def test_max_clients_and_new_client_gets_latest(webcam: list[bytes]) -> None:
    with pytest.raises(ValueError, match="max_clients"):
        FrameHub(max_clients=0)

    async def main() -> None:
        hub = FrameHub(max_clients=2)
        encoder = Counting()
        hub.publish(frame_of(webcam[3], 3))
        a = await attach(hub, encoder)
        b = await attach(hub, encoder)
        with pytest.raises(HubFullError, match="max_clients=2"):
            await attach(hub, encoder)
        assert hub.clients_refused == 1 and len(hub) == 2
        assert parse(await read_all(a[1])) == [(3, webcam[3])]  # the latest at once
        hub.unsubscribe(a[0])
        hub.unsubscribe(a[0])  # idempotent
        assert len(hub) == 1
        hub.set_online(False, "lost")
        c = await attach(hub, encoder)  # offline: no stale frame for a new client
        assert await read_all(c[1], idle=0.1) == b""
        for sub, sock, tr in (a, b, c):
            hub.unsubscribe(sub)
            tr.close()
            sock.close()
        await asyncio.sleep(0)

    asyncio.run(main())
