import pytest

from mcastcam.errors import LocalProtocolError
from mcastcam.protocol.codec import Fragment, decode
from mcastcam.protocol.fragmenter import fragment_count, fragment_frame, max_payload_for_mtu


def test_payload_follows_the_mtu() -> None:
    assert max_payload_for_mtu(1500) == 1500 - 20 - 8 - 40 == 1432
    assert max_payload_for_mtu(9000) == 8932
    assert max_payload_for_mtu(65535) == 65535 - 68
    with pytest.raises(LocalProtocolError, match="MTU 500"):
        max_payload_for_mtu(500)


def test_fragments_are_balanced_views() -> None:
    jpeg = bytes(range(256)) * 20  # 5120 bytes
    datagrams = fragment_frame(
        jpeg, stream_id=9, first_seq=2**32 - 2, frame_id=5, capture_ts_ns=123, max_payload=1432
    )
    assert len(datagrams) == 4  # ceil(5120 / 1432)
    sizes = [len(p) for _, p in datagrams]
    assert sizes == [1280] * 4  # balanced, no runt
    assert all(p.obj is jpeg for _, p in datagrams)  # no payload copy
    decoded = [decode(h + bytes(p)) for h, p in datagrams]
    assert all(isinstance(f, Fragment) for f in decoded)
    assert [f.seq for f in decoded if isinstance(f, Fragment)] == [2**32 - 2, 2**32 - 1, 0, 1]
    assert b"".join(bytes(p) for _, p in datagrams) == jpeg


def test_last_fragment_is_not_a_runt() -> None:
    datagrams = fragment_frame(
        bytes(1433), stream_id=1, first_seq=0, frame_id=0, capture_ts_ns=0, max_payload=1432
    )
    assert [len(p) for _, p in datagrams] == [717, 716]


def test_too_large_and_empty_frames_are_refused_with_the_numbers() -> None:
    with pytest.raises(LocalProtocolError, match=r"65536 fragments of 100 bytes.*65535 fragments"):
        fragment_count(65536 * 100, 100)
    with pytest.raises(LocalProtocolError, match="empty"):
        fragment_frame(b"", stream_id=1, first_seq=0, frame_id=0, capture_ts_ns=0, max_payload=10)
