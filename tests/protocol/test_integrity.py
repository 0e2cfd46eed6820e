import itertools
import zlib

from hypothesis import given
from hypothesis import strategies as st

from mcastcam.protocol.integrity import (
    CHECK_VALUE,
    CHUNK_BYTES,
    IMPLEMENTATION,
    Crc32c,
    crc32c,
    frame_matches,
)


def reference_crc32c(data: bytes) -> int:
    """Bitwise CRC-32C (reflected polynomial 0x82F63B78), independent of the library."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_check_value() -> None:
    assert crc32c(b"123456789") == CHECK_VALUE == 0xE3069283
    assert reference_crc32c(b"123456789") == CHECK_VALUE
    assert crc32c(b"") == 0
    # CRC-32C, not zlib's CRC-32
    assert zlib.crc32(b"123456789") != CHECK_VALUE


def test_the_fast_implementation_is_used() -> None:
    assert IMPLEMENTATION == "c"


def test_every_buffer_type_gives_the_same_value() -> None:
    data = bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 7)  # several chunks and a tail
    expected = crc32c(data)
    assert crc32c(bytearray(data)) == expected
    assert crc32c(memoryview(data)) == expected
    assert crc32c(memoryview(bytearray(data))) == expected
    assert crc32c(memoryview(data).toreadonly()) == expected
    # a non-byte format is read as its bytes
    assert crc32c(memoryview(data[:4000]).cast("I")) == crc32c(data[:4000])


@given(st.binary(max_size=3000))
def test_matches_the_bitwise_reference(data: bytes) -> None:
    assert crc32c(data) == reference_crc32c(data)


@given(st.binary(max_size=5000), st.lists(st.integers(0, 5000), max_size=8))
def test_pieces_and_incremental_equal_the_whole(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    view = memoryview(data)
    pieces = [view[a:b] for a, b in itertools.pairwise(bounds)]
    assert crc32c(pieces) == crc32c(data)
    assert crc32c(iter([bytes(p) for p in pieces])) == crc32c(data)
    acc = Crc32c()
    for piece in pieces:
        acc.update(piece)
    assert acc.value == crc32c(data)
    assert acc.length == len(data)


def test_empty_accumulator() -> None:
    acc = Crc32c()
    assert acc.value == 0
    assert acc.length == 0
    acc.update(b"123456789")
    assert acc.value == CHECK_VALUE


def test_frame_matches_and_any_bit_flip_is_detected() -> None:
    frame = bytearray(b"\xff\xd8" + bytes(range(256)) * 40 + b"\xff\xd9")
    crc = crc32c(frame)
    assert frame_matches(frame, crc)
    assert frame_matches(memoryview(frame), crc)
    for bit in range(0, len(frame) * 8, 37):  # CRC-32C detects every single-bit error
        frame[bit // 8] ^= 1 << (bit % 8)
        assert not frame_matches(frame, crc), bit
        frame[bit // 8] ^= 1 << (bit % 8)
    assert not frame_matches(frame, crc ^ 1)
    assert not frame_matches(frame[:-1], crc)
