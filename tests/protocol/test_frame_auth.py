"""The frame AEAD and the receiver's lazy per-datagram verification (protocol §8.3a, §8.5).

Pure cores, no sockets: a :class:`~mcastcam.protocol.trust.Sealer` seals each frame once and
tags every symbol (the sender's fragmenter cuts the sealed object), a keyed
:class:`~mcastcam.protocol.reassembly.Reassembler` takes the datagrams with forged ones mixed
in. The socket-level attacks are tests/test_auth_sockets.py.
"""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastcam.errors import DecodeError
from mcastcam.protocol.auth import (
    FRAME_AAD_BYTES,
    TAG_BYTES,
    Aead,
    MasterKey,
    RunKeys,
    frame_nonce,
    open_frame,
    seal_frame,
)
from mcastcam.protocol.events import FrameCompleted
from mcastcam.protocol.fragmenter import SymbolFrame
from mcastcam.protocol.integrity import crc32c
from mcastcam.protocol.reassembly import Reassembler
from mcastcam.protocol.trust import Sealer, Verifier
from mcastcam.protocol.wire import Flag

KEY = MasterKey(3, bytes(range(1, 33)))
SID, RUN, TS = 0xABCD_0001, 0x77, 1_700_000_000_000_000_000
ADDR = ("127.0.0.1", 5000)
AEADS = (Aead.AES_128_GCM, Aead.CHACHA20_POLY1305)


def keys() -> RunKeys:
    return RunKeys.derive(KEY, SID, RUN)


def symbols(
    sealer: Sealer,
    jpeg: bytes,
    frame_id: int,
    *,
    seq: int,
    t: int = 128,
    repair: int = 0,
    extra: int = 0,
    scheme: int = 1,
) -> list[bytes]:
    """The keyed datagrams of one frame: k source, ``repair`` planned, ``extra`` NACK repair
    (FEC ``scheme`` 1 RaptorQ or 2 Reed–Solomon)."""
    crc = crc32c(jpeg)
    obj = sealer.seal_frame(jpeg, frame_id=frame_id, capture_ts_ns=TS, frame_crc32c=crc)
    sf = SymbolFrame(
        obj,
        stream_id=SID,
        run_nonce=RUN,
        frame_id=frame_id,
        capture_ts_ns=TS,
        symbol_size=t,
        repair=repair,
        fec=True,
        scheme=scheme,
        flags=sealer.flags,
        key_id=sealer.key_id,
        frame_crc32c=crc,
    )
    parts = sf.datagrams(seq)
    if extra:
        parts += sf.repair_datagrams(sf.k + sf.repair_planned, extra, seq + len(parts))
    out = []
    for i, (header, payload) in enumerate(parts):
        h, p, tag = sealer.seal_symbol(header, payload, seq + i)
        out.append(h + bytes(p) + tag)
    return out


def forge(real: bytes, rnd: random.Random, esi: int | None = None) -> bytes:
    """``real``'s header (optionally another ESI), garbage payload, random tag."""
    header = bytearray(real[:48])
    if esi is not None:
        header[18:22] = esi.to_bytes(4, "big")
    return bytes(header) + rnd.randbytes(len(real) - 48 - TAG_BYTES) + rnd.randbytes(TAG_BYTES)


def completed(r: Reassembler) -> list[FrameCompleted]:
    out = []
    while (ev := r.next_event()) is not None:
        if isinstance(ev, FrameCompleted):
            out.append(ev)
    return out


def errors(r: Reassembler) -> dict[str, int]:
    stats = r.stream_stats(SID)
    return {} if stats is None else dict(stats.decode_errors)


# ---------------------------------------------------------------- the frame AEAD itself


@settings(max_examples=60, deadline=None)
@given(
    jpeg=st.binary(min_size=1, max_size=3000),
    frame_id=st.integers(0, 2**32 - 1),
    aead=st.sampled_from(AEADS),
    encrypt=st.booleans(),
    flip=st.integers(0, 10_000),
)
def test_frame_aead_round_trip_and_any_flip_fails(
    jpeg: bytes, frame_id: int, aead: Aead, encrypt: bool, flip: int
) -> None:
    k = keys()
    flags = int(Flag.AUTH) | (int(Flag.ENCRYPTED) if encrypt else 0)
    seal = {"frame_id": frame_id, "capture_ts_ns": TS, "frame_crc32c": crc32c(jpeg)}
    obj = bytes(seal_frame(k, jpeg, flags=flags, aead=aead, encrypt=encrypt, **seal))
    assert len(obj) == len(jpeg) + TAG_BYTES
    if encrypt:
        assert obj[: len(jpeg)] != jpeg or len(jpeg) < 4
    else:
        assert obj[: len(jpeg)] == jpeg  # tag-only: the JPEG travels as is, then the tag
    room = bytearray(FRAME_AAD_BYTES) + obj
    got = open_frame(k, room, flags=flags, aead=aead, encrypted=encrypt, **seal)
    assert bytes(got) == jpeg
    bad = bytearray(FRAME_AAD_BYTES) + obj
    bad[FRAME_AAD_BYTES + flip % len(obj)] ^= 1 << (flip % 8)
    with pytest.raises(DecodeError) as exc:
        open_frame(k, bad, flags=flags, aead=aead, encrypted=encrypt, **seal)
    assert exc.value.reason == "bad_frame_tag"
    # bound to its frame: another frame id, capture time, CRC, flags or run does not verify
    for change in (
        {"frame_id": (frame_id + 1) % 2**32},
        {"capture_ts_ns": TS + 1},
        {"frame_crc32c": crc32c(jpeg) ^ 1},
    ):
        with pytest.raises(DecodeError):
            room = bytearray(FRAME_AAD_BYTES) + obj
            open_frame(k, room, flags=flags, aead=aead, encrypted=encrypt, **{**seal, **change})
    with pytest.raises(DecodeError):
        room = bytearray(FRAME_AAD_BYTES) + obj
        open_frame(k, room, flags=flags ^ int(Flag.CHACHA), aead=aead, encrypted=encrypt, **seal)
    with pytest.raises(DecodeError):
        other = RunKeys.derive(KEY, SID, RUN + 1)
        room = bytearray(FRAME_AAD_BYTES) + obj
        open_frame(other, room, flags=flags, aead=aead, encrypted=encrypt, **seal)


def test_frame_nonce_is_stream_and_frame_and_never_reused_by_a_sealer() -> None:
    assert frame_nonce(0x01020304, 0x0A0B0C0D) == bytes.fromhex("01020304" "000000000A0B0C0D")
    s = Sealer(KEY, SID, RUN)
    s.seal_frame(b"a", frame_id=2**32 - 1, capture_ts_ns=0, frame_crc32c=0)
    s.seal_frame(b"b", frame_id=0, capture_ts_ns=0, frame_crc32c=0)  # wraps forward: fine
    for fid in (0, 2**32 - 1, 2**31):  # again, older, or not newer: refused (nonce reuse)
        with pytest.raises(ValueError):
            s.seal_frame(b"c", frame_id=fid, capture_ts_ns=0, frame_crc32c=0)
    assert s.frames_sealed == 2


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 365_048])
def test_tag_only_frame_tag_is_gmac_over_aad_then_jpeg(n: int) -> None:
    """The tag-only object is ``JPEG ‖ GMAC(k_frame, nonce, frame_aad ‖ JPEG)`` (§8.3a).

    Computed here independently, with cryptography's streaming GCM context fed the 32 aad
    bytes and the JPEG as two pieces (what seal_frame did before issue #12's change): the
    one-shot AEAD object it uses now must give the same bytes, so the wire is unchanged.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    k = keys()
    jpeg = random.Random(n).randbytes(n)
    flags, fid, crc = int(Flag.AUTH), 0xFEED_0042, crc32c(jpeg)
    aad = bytes.fromhex(  # stream, run, frame id, F = n + 16, CRC, capture ts, flags, key, v2
        f"{SID:08x}{RUN:08x}{fid:08x}{n + 16:08x}{crc:08x}{TS:016x}{flags:04x}0302"
    )
    ctx = Cipher(algorithms.AES(k.k_frame_aes), modes.GCM(frame_nonce(SID, fid))).encryptor()
    ctx.authenticate_additional_data(aad)
    ctx.authenticate_additional_data(jpeg)
    ctx.finalize()
    seal = {"frame_id": fid, "capture_ts_ns": TS, "frame_crc32c": crc, "flags": flags}
    obj = seal_frame(k, jpeg, aead=Aead.AES_128_GCM, **seal)
    assert isinstance(obj, bytes)
    assert obj == jpeg + ctx.tag
    assert seal_frame(k, memoryview(jpeg), **seal) == obj  # any buffer
    chacha = ChaCha20Poly1305(k.k_frame_chacha).encrypt(frame_nonce(SID, fid), b"", aad + jpeg)
    assert seal_frame(k, jpeg, aead=Aead.CHACHA20_POLY1305, **seal) == jpeg + chacha


def test_frame_and_symbol_keys_are_separate() -> None:
    k = keys()
    assert k.k_frame_aes != k.k_data_aes and k.k_frame_chacha != k.k_data_chacha
    assert len(k.k_frame_aes) == 16 and len(k.k_frame_chacha) == 32


# ---------------------------------------------------------------- lazy verification


@pytest.mark.parametrize("aead", AEADS)
@pytest.mark.parametrize("encrypt", [False, True])
def test_keyed_frames_complete_with_few_tag_checks(aead: Aead, encrypt: bool) -> None:
    sealer = Sealer(KEY, SID, RUN, aead=aead, encrypt=encrypt)
    r = Reassembler(verifier=Verifier([KEY]))
    frames = [bytes([i]) * 3000 + b"end" for i in range(4)]
    seq = 0
    for i, jpeg in enumerate(frames):
        data = symbols(sealer, jpeg, i, seq=seq)
        seq += len(data)
        for d in data:
            r.receive_datagram(d, ADDR, 1.0 + i)
    got = [bytes(ev.frame.jpeg) for ev in completed(r)]
    assert got == frames
    stats = r.stream_stats(SID)
    assert stats is not None
    assert stats.datagrams == seq and stats.lost == 0  # counted once each frame verified
    assert not stats.decode_errors
    state = next(iter(r.verifier.runs._runs.values()))  # type: ignore[union-attr]
    assert state.window.highest == seq - len(data)  # only each frame's first was verified


@settings(max_examples=80, deadline=None)
@given(
    size=st.integers(1, 2500),
    repair=st.integers(0, 4),
    seed=st.integers(0, 2**32 - 1),
    forged_share=st.floats(0, 1),
    loss=st.floats(0, 0.4),
    encrypt=st.booleans(),
    scheme=st.sampled_from([1, 2]),
)
def test_any_forged_symbols_never_publish_another_frame(
    size: int,
    repair: int,
    seed: int,
    forged_share: float,
    loss: float,
    encrypt: bool,
    scheme: int,
) -> None:
    """Forged symbols (right header, garbage, random tag) for any ESIs, before or after the
    real ones, real ones lost at random: whatever is published is exactly the sent frame, and
    with nothing lost it is published."""
    rnd = random.Random(seed)
    sealer = Sealer(KEY, SID, RUN, encrypt=encrypt)
    r = Reassembler(verifier=Verifier([KEY]))
    warm = symbols(sealer, b"warm-up frame", 0, seq=0)
    for d in warm:
        r.receive_datagram(d, ADDR, 0.5)
    assert [bytes(ev.frame.jpeg) for ev in completed(r)] == [b"warm-up frame"]
    jpeg = rnd.randbytes(size)
    real = symbols(sealer, jpeg, 1, seq=len(warm), t=64, repair=repair, extra=2, scheme=scheme)
    n_source = -(-(size + TAG_BYTES) // 64)
    lost = {i for i in range(len(real)) if rnd.random() < loss}
    queue: list[bytes] = []
    for i, d in enumerate(real):
        forged = []
        if rnd.random() < forged_share:
            forged.append(forge(d, rnd))
        if rnd.random() < forged_share / 2:  # an ESI no real symbol uses
            forged.append(forge(real[-1], rnd, esi=n_source + repair + 2 + rnd.randrange(50)))
        before = rnd.random() < 0.5
        if i == 0:
            before = False  # the frame's first real symbol opens it (else nothing differs)
        mine = [] if i in lost else [d]
        queue += forged + mine if before else mine + forged
    for d in queue:
        r.receive_datagram(d, ADDR, 1.0)
    r.handle_timer(5.0)
    out = [bytes(ev.frame.jpeg) for ev in completed(r)]
    assert all(f == jpeg for f in out)
    assert len(out) <= 1
    if not lost:
        assert out == [jpeg]
    assert r.bytes_in_flight == 0


@pytest.mark.parametrize("scheme", [1, 2])
def test_forged_repair_symbol_takes_the_slow_path_and_the_frame_still_decodes(
    scheme: int,
) -> None:
    rnd = random.Random(1)
    sealer = Sealer(KEY, SID, RUN)
    r = Reassembler(verifier=Verifier([KEY]))
    jpeg = rnd.randbytes(2000)
    real = symbols(sealer, jpeg, 0, seq=0, t=128, repair=3, scheme=scheme)
    k = -(-(len(jpeg) + TAG_BYTES) // 128)
    # Source symbol 5 lost; a forged repair symbol of an ESI never sent (within the code's
    # m(k) = 32 ESIs for Reed–Solomon) arrives first.
    queue = [real[0], forge(real[k], rnd, esi=k + 20)]
    queue += [d for i, d in enumerate(real[1:], 1) if i != 5]
    for d in queue:
        r.receive_datagram(d, ADDR, 1.0)
    assert [bytes(ev.frame.jpeg) for ev in completed(r)] == [jpeg]
    e = errors(r)
    assert e["bad_frame_tag"] == 1 and e["bad_tag"] == 1
    stats = r.stream_stats(SID)
    assert stats is not None and stats.repaired_fec == 1 and stats.corrupt == 0


def test_a_forged_source_symbol_whose_real_one_is_lost_never_publishes() -> None:
    rnd = random.Random(2)
    sealer = Sealer(KEY, SID, RUN)
    r = Reassembler(verifier=Verifier([KEY]))
    jpeg = rnd.randbytes(1500)
    real = symbols(sealer, jpeg, 0, seq=0, t=128)
    queue = [d if i != 3 else forge(d, rnd) for i, d in enumerate(real)]  # 3 replaced
    for d in queue:
        r.receive_datagram(d, ADDR, 1.0)
    assert completed(r) == []  # frame AEAD failed: slow path found the forgery
    assert errors(r)["bad_frame_tag"] == 1 and errors(r)["bad_tag"] == 1
    assert r.held(SID, 0) == len(real) - 1  # waiting for symbol 3 (a NACK would ask)
    r.receive_datagram(real[3], ADDR, 1.1)  # the real one, late: verified on arrival
    assert [bytes(ev.frame.jpeg) for ev in completed(r)] == [jpeg]


def test_forged_before_and_after_the_real_symbol() -> None:
    rnd = random.Random(3)
    sealer = Sealer(KEY, SID, RUN)
    r = Reassembler(verifier=Verifier([KEY]))
    jpeg = rnd.randbytes(1500)
    real = symbols(sealer, jpeg, 0, seq=0, t=128)
    queue = [real[0]]
    for d in real[1:]:
        queue += [forge(d, rnd), d, forge(d, rnd), d]  # before, real, after, duplicate
    for d in queue:
        r.receive_datagram(d, ADDR, 1.0)
    assert [bytes(ev.frame.jpeg) for ev in completed(r)] == [jpeg]
    e = errors(r)
    n = len(real) - 1
    # ESIs 1 … n − 1: the real one (verified: it differs from the forged one held) displaced
    # the forgery (``conflict``); the forgery after it was verified and refused (``bad_tag``);
    # the duplicate (same bytes as held) cost no crypto. The last ESI: its forgery completed
    # the frame, whose frame AEAD failed; the slow path refused the forgery (``bad_tag``);
    # the real one, checked on arrival now, completed it; what came after was ``late``.
    assert e == {"conflict": n - 1, "bad_tag": n, "duplicate": n - 1, "bad_frame_tag": 1, "late": 2}


def test_forged_symbol_for_a_new_frame_creates_no_state() -> None:
    rnd = random.Random(4)
    sealer = Sealer(KEY, SID, RUN)
    r = Reassembler(verifier=Verifier([KEY]))
    first = symbols(sealer, b"x" * 500, 0, seq=0)
    for d in first:
        r.receive_datagram(d, ADDR, 1.0)
    completed(r)
    nxt = symbols(sealer, b"y" * 500, 1, seq=len(first))
    for fid in (1, 2, 100):
        fake = bytearray(forge(nxt[0], rnd))
        fake[14:18] = fid.to_bytes(4, "big")
        r.receive_datagram(bytes(fake), ADDR, 1.1)
    assert r.bytes_in_flight == 0 and r.held(SID, 1) is None
    assert errors(r)["bad_tag"] == 3
    for d in nxt:
        r.receive_datagram(d, ADDR, 1.2)
    assert [bytes(ev.frame.jpeg) for ev in completed(r)] == [b"y" * 500]


def test_replays_of_earlier_frames_serve_nothing_and_count_nothing() -> None:
    sealer = Sealer(KEY, SID, RUN)
    r = Reassembler(verifier=Verifier([KEY]))
    sent: list[bytes] = []
    for i in range(3):
        data = symbols(sealer, bytes([i]) * 900, i, seq=len(sent), repair=2)
        sent += data
        for d in data:
            r.receive_datagram(d, ADDR, 1.0 + i)
    assert len(completed(r)) == 3
    stats = r.stream_stats(SID)
    assert stats is not None
    before = (stats.datagrams, stats.lost, r.bytes_in_flight)
    for d in sent:
        r.receive_datagram(d, ADDR, 4.0)
    assert completed(r) == []
    assert (stats.datagrams, stats.lost, r.bytes_in_flight) == before
    e = errors(r)
    assert e.get("late", 0) + e.get("replayed", 0) + e.get("replayed_old", 0) == len(sent)
