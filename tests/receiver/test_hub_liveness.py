"""FrameHub keeps no online flag when it has a liveness source: it asks the session."""

from __future__ import annotations

import asyncio

import pytest

from mcastcam.protocol.frame import Frame
from mcastcam.protocol.receiver import ReceiverSession
from mcastcam.receiver.fanout import FrameHub
from tests.protocol.test_receiver_session import SENDER, heartbeat

JPEG = b"\xff\xd8\xff\xc4\x00\x02\xff\xda\x00\x02\xff\xd9"  # SOI, empty DHT, SOS, EOI


def test_online_is_the_liveness_of_the_latest_frames_stream() -> None:
    async def main() -> None:
        session = ReceiverSession()
        hub = FrameHub(liveness=session.offline_reason)
        assert not hub.online and hub.offline_reason == "no frame received yet"
        session.receive_datagram(heartbeat(7, "cam"), SENDER, 0.0)
        assert hub.offline_reason == "no frame received yet"  # alive, but nothing to serve
        assert hub.publish(Frame(JPEG, 1, 0, 7, 0.0)) is not None
        assert hub.online and hub.stats()["online"] is True
        session.handle_timer(1.3)  # stale still serves
        assert hub.online
        session.handle_timer(3.0)
        assert not hub.online
        assert hub.offline_reason == "sender cam lost: no datagram"
        assert hub.stats()["offline_reason"] == "sender cam lost: no datagram"
        session.receive_datagram(heartbeat(7, "cam", seq=1), SENDER, 4.0)
        assert hub.online  # nobody told the hub: it asked
        with pytest.raises(RuntimeError, match="liveness source"):
            hub.set_online(False, "no")

    asyncio.run(main())
