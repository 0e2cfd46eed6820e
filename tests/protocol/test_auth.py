import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastcam.errors import DecodeError
from mcastcam.protocol.auth import (
    INFO_DATA,
    INFO_DISCOVERY,
    INFO_R2S,
    INFO_S2R,
    MAX_CACHED_RUNS,
    MAX_DERIVATIONS_PER_S,
    REPLAY_WINDOW_BITS,
    SYMBOL_HEADER_BYTES,
    TAG_BYTES,
    Aead,
    MasterKey,
    ReplayWindow,
    RunKeyCache,
    RunKeys,
    discovery_key,
    estimate_seq64,
    join_seq64,
    open_symbol,
    seal_symbol,
    symbol_nonce,
    tag_control,
    verify_control,
)

MASTER = MasterKey(7, bytes(range(32)))
OTHER_MASTER = MasterKey(7, bytes(range(1, 33)))  # same id, other secret
STREAM_ID = 0xCAFEF00D
RUN_NONCE = 0x12345678
AEADS = [Aead.AES_128_GCM, Aead.CHACHA20_POLY1305]
# (aead, encrypt) for every symbol mode
MODES = [(a, e) for a in AEADS for e in (False, True)]

# prefix, frame_id, esi, T, F, crc, capture_ts_ns, fec, key_id, R, run_nonce (protocol-v2 §4)
HEADER = struct.Struct(">HBBHII IIHII QBBHI")
assert HEADER.size == SYMBOL_HEADER_BYTES


def header(seq: int, *, flags: int = 0x0001, stream_id: int = STREAM_ID) -> bytes:
    return HEADER.pack(
        0x4D43, 2, 1, flags, stream_id, seq, 9, 0, 1408, 2000, 0xDEADBEEF, 1, 1, 7, 2, RUN_NONCE
    )


def keys(master: MasterKey = MASTER, stream_id: int = STREAM_ID, run_nonce: int = RUN_NONCE):
    return RunKeys.derive(master, stream_id, run_nonce)


def sealed(
    k: RunKeys, seq64: int, payload: bytes, aead: Aead = Aead.AES_128_GCM, encrypt: bool = False
) -> bytes:
    flags = 0x0001 | (0x0002 if encrypt else 0) | (0x0004 if aead is Aead.CHACHA20_POLY1305 else 0)
    hdr = header(seq64 & 0xFFFFFFFF, flags=flags, stream_id=k.stream_id)
    body, tag = seal_symbol(k, seq64, hdr, payload, aead=aead, encrypt=encrypt)
    assert len(tag) == TAG_BYTES
    return hdr + bytes(body) + tag


def reason_of(exc: pytest.ExceptionInfo[DecodeError]) -> str:
    return exc.value.reason


# ---------------------------------------------------------------- keys (HKDF, §8.2)


def rfc5869(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 from RFC 5869 §2 with the standard library only (the test's reference)."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def test_the_reference_hkdf_passes_rfc5869_test_case_1() -> None:
    okm = rfc5869(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_run_keys_follow_the_spec() -> None:
    k = keys()
    salt = STREAM_ID.to_bytes(4, "big") + RUN_NONCE.to_bytes(4, "big")
    assert k.k_data(Aead.AES_128_GCM) == rfc5869(MASTER.secret, salt, INFO_DATA, 16)
    assert k.k_data(Aead.CHACHA20_POLY1305) == rfc5869(MASTER.secret, salt, INFO_DATA, 32)
    assert k.k_s2r == rfc5869(MASTER.secret, salt, INFO_S2R, 32)
    assert k.k_r2s == rfc5869(MASTER.secret, salt, INFO_R2S, 32)
    assert discovery_key(MASTER) == rfc5869(MASTER.secret, b"", INFO_DISCOVERY, 32)
    assert k.run == (7, STREAM_ID, RUN_NONCE)
    # directions and uses never share a key (no reflection)
    assert len({k.k_data_chacha, k.k_s2r, k.k_r2s, discovery_key(MASTER)}) == 4


def test_keys_depend_on_run_and_master() -> None:
    base = keys()
    for other in (
        keys(stream_id=STREAM_ID + 1),
        keys(run_nonce=RUN_NONCE + 1),
        keys(master=OTHER_MASTER),
    ):
        assert other.k_data_aes != base.k_data_aes
        assert other.k_s2r != base.k_s2r
        assert other.k_r2s != base.k_r2s
    assert discovery_key(OTHER_MASTER) != discovery_key(MASTER)


def test_secrets_stay_out_of_repr() -> None:
    k = keys()
    assert MASTER.secret.hex() not in repr(MASTER)
    assert "secret" not in repr(MASTER)
    for key in (k.k_data_aes, k.k_data_chacha, k.k_s2r, k.k_r2s):
        assert key.hex() not in repr(k) and repr(key) not in repr(k)


@pytest.mark.parametrize(
    ("key_id", "secret"), [(0, bytes(32)), (256, bytes(32)), (1, bytes(31)), (1, bytes(33))]
)
def test_bad_master_keys(key_id: int, secret: bytes) -> None:
    with pytest.raises(ValueError):
        MasterKey(key_id, secret)


def test_bad_run_values() -> None:
    with pytest.raises(ValueError, match="run nonce"):
        RunKeys.derive(MASTER, STREAM_ID, 0)
    with pytest.raises(ValueError, match="stream id"):
        RunKeys.derive(MASTER, 2**32, 1)
    with pytest.raises(ValueError):
        keys().cipher(Aead.NONE)


# ---------------------------------------------------------------- symbols (AEAD, §8.3)


@pytest.mark.parametrize(("aead", "encrypt"), MODES)
def test_symbol_round_trip(aead: Aead, encrypt: bool) -> None:
    k = keys()
    payload = bytes(range(256)) * 5 + b"end"
    datagram = sealed(k, 2**32 + 17, payload, aead, encrypt)
    assert len(datagram) == SYMBOL_HEADER_BYTES + len(payload) + TAG_BYTES
    got = open_symbol(k, 2**32 + 17, datagram, aead=aead, encrypted=encrypt)
    assert bytes(got) == payload
    # a receiver's buffer types work as well
    got = open_symbol(k, 2**32 + 17, memoryview(bytearray(datagram)), aead=aead, encrypted=encrypt)
    assert bytes(got) == payload


def test_tag_only_keeps_the_payload_object_and_matches_the_spec_layout() -> None:
    k = keys()
    payload = memoryview(b"x" * 1408)
    hdr = header(5)
    body, tag = seal_symbol(k, 5, hdr, payload)
    assert body is payload  # no copy
    nonce = STREAM_ID.to_bytes(4, "big") + (5).to_bytes(8, "big")
    assert symbol_nonce(STREAM_ID, 5) == nonce
    assert tag == AESGCM(k.k_data_aes).encrypt(nonce, b"", hdr + bytes(payload))
    _, tag = seal_symbol(k, 5, hdr, payload, aead=Aead.CHACHA20_POLY1305)
    assert tag == ChaCha20Poly1305(k.k_data_chacha).encrypt(nonce, b"", hdr + bytes(payload))
    # open gives a view of the payload inside the datagram
    datagram = bytearray(hdr + bytes(payload) + tag)
    got = open_symbol(k, 5, datagram, aead=Aead.CHACHA20_POLY1305)
    assert isinstance(got, memoryview) and got.obj is datagram


@pytest.mark.parametrize("aead", AEADS)
def test_encrypt_hides_the_payload_and_keeps_its_length(aead: Aead) -> None:
    k = keys()
    payload = b"\xff\xd8JFIF-secret-image-bytes" * 50
    hdr = header(9, flags=0x0003)
    body, tag = seal_symbol(k, 9, hdr, payload, aead=aead, encrypt=True)
    assert len(body) == len(payload)
    assert bytes(body) != payload
    assert b"secret" not in bytes(body)
    nonce = symbol_nonce(STREAM_ID, 9)
    cipher = AESGCM(k.k_data_aes) if aead is Aead.AES_128_GCM else ChaCha20Poly1305(k.k_data_chacha)
    assert bytes(body) + tag == cipher.encrypt(nonce, payload, hdr)  # header is the AAD
    # the same payload at another seq64 encrypts differently (fresh nonce)
    body2, _ = seal_symbol(k, 10, hdr, payload, aead=aead, encrypt=True)
    assert bytes(body2) != bytes(body)


@pytest.mark.parametrize(("aead", "encrypt"), MODES)
def test_any_bit_flip_anywhere_fails(aead: Aead, encrypt: bool) -> None:
    k = keys()
    datagram = bytearray(sealed(k, 1000, bytes(range(200)), aead, encrypt))
    for bit in range(len(datagram) * 8):  # header, payload and tag, every bit
        datagram[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecodeError) as exc:
            open_symbol(k, 1000, datagram, aead=aead, encrypted=encrypt)
        assert reason_of(exc) == "bad_tag", bit
        datagram[bit // 8] ^= 1 << (bit % 8)
    assert open_symbol(k, 1000, datagram, aead=aead, encrypted=encrypt)


@pytest.mark.parametrize(("aead", "encrypt"), MODES)
def test_wrong_run_key_seq_or_algorithm_fails(aead: Aead, encrypt: bool) -> None:
    k = keys()
    datagram = sealed(k, 77, b"payload" * 30, aead, encrypt)
    wrong = [
        (keys(stream_id=STREAM_ID ^ 1), 77, aead),  # another stream id
        (keys(run_nonce=RUN_NONCE + 1), 77, aead),  # an earlier/later run of the sender
        (keys(master=OTHER_MASTER), 77, aead),  # another key under the same key id
        (k, 78, aead),  # another sequence number (nonce)
        (k, 77 + 2**32, aead),  # wrong seq_hi
        (k, 77, Aead.CHACHA20_POLY1305 if aead is Aead.AES_128_GCM else Aead.AES_128_GCM),
    ]
    for run_keys, seq64, algo in wrong:
        with pytest.raises(DecodeError) as exc:
            open_symbol(run_keys, seq64, datagram, aead=algo, encrypted=encrypt)
        assert reason_of(exc) == "bad_tag"
    # the other mode (tag-only vs encrypted) does not verify either
    with pytest.raises(DecodeError, match="does not verify"):
        open_symbol(k, 77, datagram, aead=aead, encrypted=not encrypt)


def test_truncated_and_extended_datagrams() -> None:
    k = keys()
    datagram = sealed(k, 3, b"abc")
    for cut in (1, TAG_BYTES, len(datagram) - SYMBOL_HEADER_BYTES - TAG_BYTES + 1):
        with pytest.raises(DecodeError) as exc:
            open_symbol(k, 3, datagram[:-cut])
        assert reason_of(exc) in ("bad_tag", "truncated")
    with pytest.raises(DecodeError) as exc:
        open_symbol(k, 3, datagram[: SYMBOL_HEADER_BYTES + TAG_BYTES - 1])
    assert reason_of(exc) == "truncated"
    with pytest.raises(DecodeError) as exc:
        open_symbol(k, 3, datagram + b"\x00")
    assert reason_of(exc) == "bad_tag"
    # an empty payload is fine (the shortest datagram with a tag)
    empty = sealed(k, 4, b"")
    assert bytes(open_symbol(k, 4, empty)) == b""


def test_bad_seq64() -> None:
    with pytest.raises(ValueError):
        seal_symbol(keys(), 2**64, header(0), b"")
    with pytest.raises(ValueError):
        symbol_nonce(STREAM_ID, -1)


# ---------------------------------------------------------------- control (HMAC, §8.3)


def test_control_round_trip_and_reference() -> None:
    k = keys()
    message = b"\x4d\x43\x02\x02\x00\x01" + bytes(120)
    tag = tag_control(k.k_s2r, message)
    assert tag == hmac.new(k.k_s2r, message, hashlib.sha256).digest()[:16]
    datagram = message + tag
    assert bytes(verify_control(k.k_s2r, datagram)) == message
    assert bytes(verify_control(k.k_s2r, memoryview(bytearray(datagram)))) == message


def test_control_any_bit_flip_and_wrong_key_fail() -> None:
    k = keys()
    message = bytes(range(60))
    datagram = bytearray(message + tag_control(k.k_r2s, message))
    for bit in range(len(datagram) * 8):
        datagram[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecodeError) as exc:
            verify_control(k.k_r2s, datagram)
        assert reason_of(exc) == "bad_tag"
        datagram[bit // 8] ^= 1 << (bit % 8)
    # reflection: a receiver's report replayed as a sender's heartbeat (other direction)
    for wrong in (k.k_s2r, keys(run_nonce=RUN_NONCE + 1).k_r2s, discovery_key(MASTER)):
        with pytest.raises(DecodeError) as exc:
            verify_control(wrong, datagram)
        assert reason_of(exc) == "bad_tag"
    with pytest.raises(DecodeError) as exc:
        verify_control(k.k_r2s, datagram[:15])
    assert reason_of(exc) == "truncated"


# ---------------------------------------------------------------- seq64 (§8.4)


def test_join_seq64() -> None:
    assert join_seq64(0, 5) == 5
    assert join_seq64(3, 0xFFFFFFFF) == 3 * 2**32 + 0xFFFFFFFF
    with pytest.raises(ValueError):
        join_seq64(2**32, 0)


def test_estimate_across_wraps() -> None:
    hi = 5 << 32
    assert estimate_seq64(0x10, hi | 0xFFFFFFF0) == (6 << 32) | 0x10  # wrapped forward
    assert estimate_seq64(0xFFFFFFF0, hi | 0x10) == (4 << 32) | 0xFFFFFFF0  # late, before wrap
    assert estimate_seq64(0x20, hi | 0x10) == hi | 0x20
    assert estimate_seq64(0x8000_0000, 0) == 0x8000_0000  # no negative roc
    top = 2**64 - 1
    assert estimate_seq64(0, top) == (2**32 - 1) << 32  # no roc past 2**32 - 1
    # exactly 2**31 away: the older candidate
    assert estimate_seq64(0x9000_0000, hi | 0x1000_0000) == (4 << 32) | 0x9000_0000


@given(st.integers(0, 2**64 - 1), st.integers(-(2**31) + 1, 2**31 - 1))
def test_estimate_recovers_any_seq64_within_half_the_space(highest: int, delta: int) -> None:
    seq64 = highest + delta
    if 0 <= seq64 < 2**64:
        assert estimate_seq64(seq64 & 0xFFFFFFFF, highest) == seq64


def test_window_estimate_uses_the_highest_or_the_heartbeat_hint() -> None:
    window = ReplayWindow()
    assert window.estimate(0x20) == 0x20
    assert window.estimate(0x20, seq_hi=9) == (9 << 32) | 0x20
    window.update((9 << 32) | 0xFFFFFFFE)
    assert window.estimate(0x3) == (10 << 32) | 0x3


# ---------------------------------------------------------------- replay window (§8.5)


def test_window_duplicates_old_and_reordered() -> None:
    window = ReplayWindow()
    assert window.highest is None
    assert window.check(100) is None
    window.update(100)
    assert window.check(100) == "replayed"
    for seq in (103, 101, 105):  # reordered within the window
        assert window.check(seq) is None
        window.update(seq)
    assert window.highest == 105
    assert window.check(102) is None and window.check(104) is None
    assert window.check(101) == "replayed" and window.check(103) == "replayed"
    window.update(105 + REPLAY_WINDOW_BITS - 1)
    assert window.check(106) is None  # still the left edge
    assert window.check(105) == "replayed"
    assert window.check(105 - 1) == "replayed_old"
    window.update(10**6)  # a jump far beyond the window
    assert window.check(10**6 - REPLAY_WINDOW_BITS) == "replayed_old"
    assert window.check(10**6 - REPLAY_WINDOW_BITS + 1) is None
    assert window.check(10**6) == "replayed"


def test_check_alone_never_moves_the_window() -> None:
    window = ReplayWindow()
    window.update(50)
    for _ in range(3):
        assert window.check(2**60) is None  # a forged far-future seq64 that fails its tag
    assert window.highest == 50
    assert window.check(49) is None


def test_update_left_of_the_window_is_ignored() -> None:
    window = ReplayWindow(size=8)
    window.update(100)
    window.update(10)
    assert window.highest == 100
    assert window.check(10) == "replayed_old"
    with pytest.raises(ValueError):
        ReplayWindow(size=0)


@settings(max_examples=300)
@given(
    st.sampled_from([1, 8, 64, REPLAY_WINDOW_BITS]),
    st.integers(0, 2**64 - 5000),
    st.lists(st.integers(0, 4000), max_size=200),
)
def test_window_matches_a_set_model(size: int, base: int, offsets: list[int]) -> None:
    window = ReplayWindow(size)
    seen: set[int] = set()
    highest: int | None = None
    for offset in offsets:
        seq = base + offset
        if highest is None or seq > highest:
            expected = None
        elif highest - seq >= size:
            expected = "replayed_old"
        else:
            expected = "replayed" if seq in seen else None
        assert window.check(seq) == expected
        if expected is None:
            window.update(seq)
            seen.add(seq)
            highest = seq if highest is None else max(highest, seq)
        assert window.highest == highest


# ---------------------------------------------------------------- run key cache (§8.2)


def real_datagram(k: RunKeys, seq64: int) -> bytes:
    return sealed(k, seq64, b"frame bytes" * 10)


def receive(cache: RunKeyCache, datagram: bytes, seq64: int, now: float, run: tuple[int, int, int]):
    """The receiver's order of checks (§8.5): keys, tag, replay window; raises DecodeError."""
    state = cache.lookup(*run, now)
    payload = open_symbol(state.keys, seq64, datagram)
    cache.accept(state, seq64)
    return payload


def test_cache_flow_replays_and_unknown_keys() -> None:
    cache = RunKeyCache([MASTER, MasterKey(8, bytes(32))])
    assert cache.key_ids == {7, 8}
    k = keys()
    run = k.run
    d1 = real_datagram(k, 1)
    assert bytes(receive(cache, d1, 1, 0.0, run)) == b"frame bytes" * 10
    assert run in cache and len(cache) == 1
    with pytest.raises(DecodeError) as exc:
        receive(cache, d1, 1, 0.1, run)  # the same datagram again
    assert reason_of(exc) == "replayed"
    for seq in range(2, 1200):
        receive(cache, real_datagram(k, seq), seq, 0.2, run)
    with pytest.raises(DecodeError) as exc:
        receive(cache, real_datagram(k, 100), 100, 0.3, run)
    assert reason_of(exc) == "replayed_old"
    with pytest.raises(DecodeError) as exc:
        cache.lookup(9, STREAM_ID, RUN_NONCE, 0.4)
    assert reason_of(exc) == "unknown_key"
    with pytest.raises(DecodeError) as exc:
        cache.lookup(7, STREAM_ID, 0, 0.4)
    assert reason_of(exc) == "bad_run"
    assert cache.derivations == 1


def test_a_datagram_of_an_earlier_run_never_verifies() -> None:
    cache = RunKeyCache([MASTER])
    earlier = keys(run_nonce=1111)
    current = keys(run_nonce=2222)
    recorded = real_datagram(earlier, 50)
    receive(cache, real_datagram(current, 10), 10, 0.0, current.run)
    # replayed with the current run's nonce in its header: the tag was made under the old keys
    with pytest.raises(DecodeError) as exc:
        receive(cache, recorded, 50, 0.1, current.run)
    assert reason_of(exc) == "bad_tag"
    assert cache.lookup(*current.run, 0.2).window.highest == 10


def test_forgeries_leave_no_state() -> None:
    cache = RunKeyCache([MASTER])
    k = keys()
    forged = bytearray(real_datagram(k, 7))
    forged[60] ^= 1
    for _ in range(3):
        with pytest.raises(DecodeError):
            receive(cache, bytes(forged), 7, 0.0, k.run)
    assert len(cache) == 0
    receive(cache, real_datagram(k, 7), 7, 0.0, k.run)
    assert len(cache) == 1


def test_derivation_limit_is_per_second_of_now() -> None:
    cache = RunKeyCache([MASTER])
    for i in range(MAX_DERIVATIONS_PER_S):
        cache.lookup(7, STREAM_ID, i + 1, 10.0 + i / 1000)
    with pytest.raises(DecodeError) as exc:
        cache.lookup(7, STREAM_ID, 999, 10.5)
    assert reason_of(exc) == "key_derivation_limited"
    # a cached run is never limited
    k = keys()
    assert cache.derivations == MAX_DERIVATIONS_PER_S
    cache.lookup(7, STREAM_ID, 1000, 11.0)  # the first derivation is one second old
    assert cache.derivations == MAX_DERIVATIONS_PER_S + 1
    with pytest.raises(DecodeError):  # the second is not (10.001)
        cache.lookup(*k.run, 11.0)
    receive(cache, real_datagram(k, 1), 1, 11.0015, k.run)  # derives (within budget), caches
    for _ in range(100):
        cache.lookup(*k.run, 11.0015)
    assert cache.derivations == MAX_DERIVATIONS_PER_S + 2


def test_a_flood_of_invented_runs_is_bounded_and_the_real_run_survives() -> None:
    cache = RunKeyCache([MASTER, MasterKey(8, bytes(32))])
    real = keys()
    receive(cache, real_datagram(real, 1), 1, 0.0, real.run)
    forged_payload = b"\x00" * 100
    refused = {"key_derivation_limited": 0, "bad_tag": 0, "unknown_key": 0}
    n = 100_000
    duration = 2.0  # seconds of `now` the flood spans (50,000 datagrams/s)
    for i in range(n):
        now = i * duration / n
        run = (7 if i % 10 else 9, (i * 2654435761) & 0xFFFFFFFF, (i % 0xFFFFFFFE) + 1)
        hdr = header(i, stream_id=run[1])
        datagram = hdr + forged_payload + bytes(16)
        with pytest.raises(DecodeError) as exc:
            receive(cache, datagram, i, now, run)
        refused[reason_of(exc)] += 1
        if i % 10_000 == 0:  # the real stream goes on during the flood
            seq = 2 + i // 10_000
            receive(cache, real_datagram(real, seq), seq, now, real.run)
    assert len(cache) == 1 and real.run in cache
    # at most 64 derivations in any second of the flood
    assert cache.derivations <= 1 + MAX_DERIVATIONS_PER_S * (duration + 1)
    assert refused["unknown_key"] == n // 10
    assert refused["bad_tag"] == cache.derivations - 1
    assert refused["key_derivation_limited"] == n - refused["unknown_key"] - refused["bad_tag"]


def test_verified_runs_are_kept_least_recently_used_first_out() -> None:
    cache = RunKeyCache([MASTER])
    favourite = keys(run_nonce=1)
    receive(cache, real_datagram(favourite, 1), 1, 0.0, favourite.run)
    now = 0.0
    for nonce in range(2, 202):  # 200 runs that verify (e.g. senders holding the key)
        now += 1 / MAX_DERIVATIONS_PER_S
        k = keys(run_nonce=nonce)
        receive(cache, real_datagram(k, 1), 1, now, k.run)
        assert len(cache) <= MAX_CACHED_RUNS
        receive(cache, real_datagram(favourite, nonce), nonce, now, favourite.run)  # recent
    assert len(cache) == MAX_CACHED_RUNS
    assert favourite.run in cache
    kept = {nonce for nonce in range(2, 202) if (7, STREAM_ID, nonce) in cache}
    assert kept == set(range(202 - MAX_CACHED_RUNS + 1, 202))


def test_two_lookups_of_one_new_run_share_one_window() -> None:
    cache = RunKeyCache([MASTER])
    k = keys()
    first = cache.lookup(*k.run, 0.0)
    second = cache.lookup(*k.run, 0.0)  # derived twice before either verified
    cache.accept(first, 5)
    with pytest.raises(DecodeError) as exc:
        cache.accept(second, 5)
    assert reason_of(exc) == "replayed"
    assert len(cache) == 1


def test_cache_arguments() -> None:
    with pytest.raises(ValueError, match="twice"):
        RunKeyCache([MASTER, OTHER_MASTER])
    with pytest.raises(ValueError):
        RunKeyCache([MASTER], max_runs=0)
