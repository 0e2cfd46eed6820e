"""Authentication for protocol version 2: run keys, tags, replay window (docs/protocol-v2.md §8).

Pure: keys, nonces, ids and ``now`` are passed in; nothing here draws randomness, reads a
clock or touches a file (key files are :mod:`mcastcam.keys`, in the shell).

* :class:`MasterKey` — a key file's ``key_id`` (1 … 255) and 32-byte secret K.
* :class:`RunKeys` — the per-run keys of §8.2: HKDF-SHA256 from K with
  ``salt = stream_id ‖ run_nonce`` (8 bytes, big-endian): ``k_data`` (16 bytes for
  AES-128-GCM, 32 for ChaCha20-Poly1305), ``k_s2r``, ``k_r2s`` (32 each);
  :func:`discovery_key` is ``k_disc`` (empty salt).
* :func:`seal_symbol` / :func:`open_symbol` — the AEAD tag of symbol datagrams (kinds 1, 16;
  §8.3), nonce ``stream_id ‖ seq64`` (12 bytes): the whole datagram but the tag is
  associated data (``encrypt``/``encrypted`` encrypt the payload itself: kept for tests and
  tools; protocol v2 encrypts the frame object instead, never a symbol).
* :func:`seal_frame` / :func:`open_frame` — the frame AEAD (§8.3a) under ``k_frame``, nonce
  ``stream_id ‖ frame_id`` (u64): the object a sender fragments is ``JPEG ‖ tag`` (the JPEG
  is associated data after the 32-byte :func:`frame_aad`) or, with ``ENCRYPTED``,
  ``ciphertext ‖ tag``.
* :func:`tag_control` / :func:`verify_control` — HMAC-SHA256 truncated to 16 bytes for
  control datagrams (kinds 2, 3, 4, 5, 17), compared in constant time.
* :class:`ReplayWindow` — RFC 4303 §3.4.3 anti-replay window over seq64 (1,024 bits);
  :func:`estimate_seq64` — seq64 from the wire's low 32 bits, SRTP ROC style (RFC 3711
  §3.3.1; §8.4).
* :class:`RunKeyCache` — derives run keys on demand (at most 64 derivations in any second)
  and keeps at most 16 runs, least recently used evicted, only runs that verified.

Drops are :class:`~mcastcam.errors.DecodeError` with a stable ``reason`` (§11): ``bad_tag``,
``replayed``, ``replayed_old``, ``unknown_key``, ``key_derivation_limited``, ``bad_run``,
``truncated``. A receiver runs the checks in §8.5's order and creates no state before the tag
verified: :meth:`RunKeyCache.lookup`, then :func:`open_symbol` or :func:`verify_control`,
then :meth:`RunKeyCache.accept`.
"""

from __future__ import annotations

import enum
import hmac
import struct
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mcastcam.errors import DecodeError

__all__ = [
    "BAD_RUN",
    "BAD_TAG",
    "FRAME_AAD_BYTES",
    "FRAME_TAG",
    "INFO_DATA",
    "INFO_DISCOVERY",
    "INFO_FRAME",
    "INFO_R2S",
    "INFO_S2R",
    "KEY_DERIVATION_LIMITED",
    "MASTER_KEY_BYTES",
    "MAX_CACHED_RUNS",
    "MAX_DERIVATIONS_PER_S",
    "MAX_KEY_ID",
    "NONCE_BYTES",
    "REPLAYED",
    "REPLAYED_OLD",
    "REPLAY_WINDOW_BITS",
    "SYMBOL_HEADER_BYTES",
    "TAG_BYTES",
    "UNKNOWN_KEY",
    "Aead",
    "MasterKey",
    "ReplayWindow",
    "RunKeyCache",
    "RunKeys",
    "RunState",
    "discovery_key",
    "estimate_seq64",
    "frame_aad",
    "frame_nonce",
    "join_seq64",
    "open_frame",
    "open_symbol",
    "relay_key",
    "seal_frame",
    "seal_symbol",
    "symbol_nonce",
    "tag_control",
    "verify_control",
]

Buffer = bytes | bytearray | memoryview

TAG_BYTES = 16
"""Length of the tag trailer of every datagram with flag ``AUTH``."""
NONCE_BYTES = 12
"""AEAD nonce: ``stream_id`` (4 bytes) ‖ seq64 (8 bytes), big-endian."""
MASTER_KEY_BYTES = 32
"""Length of a master key K."""
MAX_KEY_ID = 255
"""``key_id`` is 1 … 255 (0 on the wire means "no key")."""
SYMBOL_HEADER_BYTES = 48
"""The symbol header (§4): the associated data of an ``ENCRYPTED`` symbol."""
REPLAY_WINDOW_BITS = 1024
"""Width of a run's replay window, in datagrams (§8.5)."""
MAX_CACHED_RUNS = 16
"""Runs whose keys (and replay windows) a receiver keeps (§8.2)."""
MAX_DERIVATIONS_PER_S = 64
"""New runs a receiver derives keys for in any one second (§8.2)."""

INFO_DATA = b"mcastcam v2 data"
INFO_S2R = b"mcastcam v2 sender control"
INFO_R2S = b"mcastcam v2 receiver control"
INFO_DISCOVERY = b"mcastcam v2 discovery"
INFO_FRAME = b"mcastcam v2 frame"
INFO_RELAY = b"mcastcam v2 relay tunnel"
FRAME_TAG = "bad_frame_tag"
"""Counter key: a complete frame whose frame AEAD does not verify (§8.3a)."""

BAD_TAG = "bad_tag"
REPLAYED = "replayed"
REPLAYED_OLD = "replayed_old"
UNKNOWN_KEY = "unknown_key"
KEY_DERIVATION_LIMITED = "key_derivation_limited"
BAD_RUN = "bad_run"

_U32 = 1 << 32
_U64 = 1 << 64
_RUN_SALT = struct.Struct(">II")
_NONCE = struct.Struct(">IQ")
_FRAME_AAD = struct.Struct(">IIIIIQHBB")
FRAME_AAD_BYTES = _FRAME_AAD.size
"""The frame AEAD's associated data fields (32 bytes, :func:`frame_aad`)."""


class Aead(enum.IntEnum):
    """The symbol AEAD of a run: the heartbeat's ``aead`` field (§6); flag ``CHACHA`` = 2."""

    NONE = 0
    AES_128_GCM = 1
    CHACHA20_POLY1305 = 2


def _hkdf(secret: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-SHA256 (extract and expand) of ``length`` bytes."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


@dataclass(frozen=True, slots=True)
class MasterKey:
    """A shared master key: ``key_id`` 1 … 255 and a 32-byte ``secret`` (never in ``repr``).

    Raises:
        ValueError: ``key_id`` out of range, or ``secret`` not 32 bytes.
    """

    key_id: int
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.key_id <= MAX_KEY_ID:
            raise ValueError(f"bad key id {self.key_id}: must be 1 to {MAX_KEY_ID}")
        if not isinstance(self.secret, bytes) or len(self.secret) != MASTER_KEY_BYTES:
            raise ValueError(f"a master key is {MASTER_KEY_BYTES} bytes")


def discovery_key(master: MasterKey) -> bytes:
    """``k_disc`` (32 bytes): HKDF-SHA256 of K, empty salt, info ``b"mcastcam v2 discovery"``."""
    return _hkdf(master.secret, b"", INFO_DISCOVERY, 32)


def relay_key(master: MasterKey) -> bytes:
    """``k_relay`` (32 bytes): HKDF-SHA256 of K, empty salt, info ``b"mcastcam v2 relay tunnel"``.

    Tags a relay tunnel's pings and pongs (docs/scaling.md §1.2; HMAC as :func:`tag_control`).
    """
    return _hkdf(master.secret, b"", INFO_RELAY, 32)


@dataclass(frozen=True, slots=True, eq=False)
class RunKeys:
    """The keys of one sender run (``stream_id``, ``run_nonce``) under one master key (§8.2).

    Build with :meth:`derive`. ``k_data(aead)`` is the symbol key, ``k_s2r`` tags heartbeats
    and announces of the run, ``k_r2s`` reports and NACKs about it. Secrets are not in ``repr``.
    """

    key_id: int
    stream_id: int
    run_nonce: int
    k_data_aes: bytes = field(repr=False)
    k_data_chacha: bytes = field(repr=False)
    k_s2r: bytes = field(repr=False)
    k_r2s: bytes = field(repr=False)
    k_frame_aes: bytes = field(repr=False)
    k_frame_chacha: bytes = field(repr=False)
    _ciphers: tuple[None, AESGCM, ChaCha20Poly1305] = field(init=False, repr=False)
    _frame_ciphers: tuple[None, AESGCM, ChaCha20Poly1305] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ciphers = (None, AESGCM(self.k_data_aes), ChaCha20Poly1305(self.k_data_chacha))
        object.__setattr__(self, "_ciphers", ciphers)  # indexed by Aead: no lookup per datagram
        frame = (None, AESGCM(self.k_frame_aes), ChaCha20Poly1305(self.k_frame_chacha))
        object.__setattr__(self, "_frame_ciphers", frame)

    @classmethod
    def derive(cls, master: MasterKey, stream_id: int, run_nonce: int) -> RunKeys:
        """HKDF-SHA256 from ``master`` with salt ``stream_id ‖ run_nonce`` (≈ 6 × 4 µs).

        Raises:
            ValueError: ``stream_id`` not a u32, or ``run_nonce`` not 1 … 2**32 − 1.
        """
        if not 0 <= stream_id < _U32:
            raise ValueError(f"bad stream id {stream_id}: must be a u32")
        if not 0 < run_nonce < _U32:
            raise ValueError(f"bad run nonce {run_nonce}: must be 1 to 2**32 - 1")
        salt = _RUN_SALT.pack(stream_id, run_nonce)
        k = master.secret
        return cls(
            key_id=master.key_id,
            stream_id=stream_id,
            run_nonce=run_nonce,
            k_data_aes=_hkdf(k, salt, INFO_DATA, 16),
            k_data_chacha=_hkdf(k, salt, INFO_DATA, 32),
            k_s2r=_hkdf(k, salt, INFO_S2R, 32),
            k_r2s=_hkdf(k, salt, INFO_R2S, 32),
            k_frame_aes=_hkdf(k, salt, INFO_FRAME, 16),
            k_frame_chacha=_hkdf(k, salt, INFO_FRAME, 32),
        )

    @property
    def run(self) -> tuple[int, int, int]:
        """``(key_id, stream_id, run_nonce)``: what identifies the run and its keys."""
        return (self.key_id, self.stream_id, self.run_nonce)

    def k_data(self, aead: Aead) -> bytes:
        """The symbol key for ``aead``: 16 bytes (AES-128-GCM) or 32 (ChaCha20-Poly1305).

        Raises:
            ValueError: ``aead`` is not one of the two.
        """
        self.cipher(aead)
        return self.k_data_aes if aead == Aead.AES_128_GCM else self.k_data_chacha

    def cipher(self, aead: Aead) -> AESGCM | ChaCha20Poly1305:
        """The AEAD object for ``aead`` under ``k_data`` (built once per run).

        Raises:
            ValueError: ``aead`` is not one of the two.
        """
        return _pick(self._ciphers, aead, "symbol")

    def frame_cipher(self, aead: Aead) -> AESGCM | ChaCha20Poly1305:
        """The frame AEAD object for ``aead`` under ``k_frame`` (§8.3a; built once per run).

        Raises:
            ValueError: ``aead`` is not one of the two.
        """
        return _pick(self._frame_ciphers, aead, "frame")


def _pick(
    ciphers: tuple[None, AESGCM, ChaCha20Poly1305], aead: Aead, what: str
) -> AESGCM | ChaCha20Poly1305:
    cipher = ciphers[aead] if 0 < aead < 3 else None
    if cipher is None:
        raise ValueError(f"no {what} AEAD for {aead!r}")
    return cipher


_nonce = _NONCE.pack  # the hot path (struct.error on a bad value)


def symbol_nonce(stream_id: int, seq64: int) -> bytes:
    """The 12-byte AEAD nonce ``stream_id ‖ seq64`` (big-endian).

    Raises:
        ValueError: ``stream_id`` not a u32 or ``seq64`` not a u64.
    """
    try:
        return _NONCE.pack(stream_id, seq64)
    except struct.error:
        raise ValueError(f"bad nonce parts: stream id {stream_id}, seq64 {seq64}") from None


def seal_symbol(
    keys: RunKeys,
    seq64: int,
    header: Buffer,
    payload: Buffer,
    *,
    aead: Aead = Aead.AES_128_GCM,
    encrypt: bool = False,
) -> tuple[Buffer, bytes]:
    """Tag (and with ``encrypt`` encrypt) one symbol datagram: ``(payload on the wire, tag)``.

    ``header`` is the complete symbol header (48 bytes in v2) with flags ``AUTH`` (and
    ``ENCRYPTED``, ``CHACHA`` as they apply), ``key_id`` and ``run_nonce`` already set: it is
    authenticated as is. ``seq64`` is this datagram's 64-bit sequence number; a run never seals
    two datagrams with one seq64 (nonce reuse breaks GCM). The datagram on the wire is
    ``header ‖ payload on the wire ‖ tag`` (16 bytes): without ``encrypt`` the payload is
    returned unchanged (the same object, no copy); with it, the ciphertext has its length.

    Raises:
        ValueError: ``seq64`` not a u64, or ``aead`` is :attr:`Aead.NONE`.
    """
    try:
        nonce = _nonce(keys.stream_id, seq64)
    except struct.error:
        raise ValueError(f"bad seq64 {seq64}: must be a u64") from None
    cipher = keys.cipher(aead)
    if encrypt:
        sealed = memoryview(cipher.encrypt(nonce, payload, header))
        return sealed[:-TAG_BYTES], bytes(sealed[-TAG_BYTES:])
    return payload, cipher.encrypt(nonce, b"", b"".join((header, payload)))


def open_symbol(
    keys: RunKeys,
    seq64: int,
    datagram: Buffer,
    *,
    aead: Aead = Aead.AES_128_GCM,
    encrypted: bool = False,
    header_bytes: int = SYMBOL_HEADER_BYTES,
) -> Buffer:
    """Verify (and with ``encrypted`` decrypt) one symbol datagram; give back its payload.

    ``datagram`` is header (``header_bytes``) ‖ payload ‖ 16-byte tag, ``seq64`` the sequence
    number reconstructed by :func:`estimate_seq64` (a wrong guess fails like a forgery).
    Returns a view of the payload inside ``datagram`` (tag-only mode) or the plaintext
    (``bytes``, same length, ``encrypted`` mode).

    Raises:
        DecodeError: ``truncated`` (shorter than header and tag), ``bad_tag`` (the tag does
            not verify: forged, altered, another run or key, another AEAD, wrong seq64).
        ValueError: ``seq64`` not a u64, or ``aead`` is :attr:`Aead.NONE`.
    """
    view = memoryview(datagram)
    if view.nbytes < header_bytes + TAG_BYTES:
        raise DecodeError(
            "truncated",
            f"authenticated symbol datagram of {view.nbytes} bytes is shorter than "
            f"{header_bytes} + {TAG_BYTES}",
        )
    try:
        nonce = _nonce(keys.stream_id, seq64)
    except struct.error:
        raise ValueError(f"bad seq64 {seq64}: must be a u64") from None
    cipher = keys.cipher(aead)
    try:
        if encrypted:
            return cipher.decrypt(nonce, view[header_bytes:], view[:header_bytes])
        cipher.decrypt(nonce, view[-TAG_BYTES:], view[:-TAG_BYTES])
    except InvalidTag:
        raise DecodeError(
            BAD_TAG,
            f"symbol datagram of stream 0x{keys.stream_id:08X} (seq64 {seq64}): "
            "tag does not verify",
        ) from None
    return view[header_bytes:-TAG_BYTES]


def frame_nonce(stream_id: int, frame_id: int) -> bytes:
    """The 12-byte frame AEAD nonce ``stream_id ‖ frame_id`` (u32 ‖ u64, big-endian; §8.3a).

    Used only under ``k_frame``, never under ``k_data`` (whose nonces are ``stream_id ‖
    seq64``): the keys differ, so the two nonce spaces cannot collide.

    Raises:
        ValueError: ``stream_id`` or ``frame_id`` not a u32.
    """
    if not 0 <= stream_id < _U32 or not 0 <= frame_id < _U32:
        raise ValueError(f"bad frame nonce parts: stream id {stream_id}, frame id {frame_id}")
    return _NONCE.pack(stream_id, frame_id)


def frame_aad(
    stream_id: int,
    run_nonce: int,
    frame_id: int,
    frame_len: int,
    frame_crc32c: int,
    capture_ts_ns: int,
    flags: int,
    key_id: int,
) -> bytes:
    """The frame AEAD's 32 associated bytes (§8.3a), big-endian.

    ``stream_id`` u32, ``run_nonce`` u32, ``frame_id`` u32, ``frame_len`` u32 (the object's
    length F: JPEG or ciphertext plus the 16-byte tag), ``frame_crc32c`` u32 (of the JPEG),
    ``capture_ts_ns`` u64, ``flags`` u16 (the symbols' prefix flags), ``key_id`` u8, the
    protocol version u8 (2).

    Raises:
        ValueError: a field does not fit its width.
    """
    try:
        return _FRAME_AAD.pack(
            stream_id, run_nonce, frame_id, frame_len, frame_crc32c, capture_ts_ns, flags,
            key_id, 2,
        )
    except struct.error:
        raise ValueError("a frame AEAD field does not fit its width") from None


def seal_frame(
    keys: RunKeys,
    jpeg: Buffer,
    *,
    frame_id: int,
    capture_ts_ns: int,
    frame_crc32c: int,
    flags: int,
    aead: Aead = Aead.AES_128_GCM,
    encrypt: bool = False,
) -> bytes:
    """The object a keyed sender fragments (§8.3a): ``JPEG ‖ tag`` or ``ciphertext ‖ tag``.

    ``jpeg`` is the frame (n bytes), ``frame_crc32c`` its CRC-32C, ``flags`` the run's symbol
    flags (``AUTH`` [+ ``ENCRYPTED``, ``CHACHA``]). The object is n + 16 bytes, as ``bytes``
    (the FEC encoder takes it without a copy). Without ``encrypt`` the tag is
    ``AEAD(k_frame).encrypt(nonce, b"", aad ‖ jpeg)`` (GMAC over the JPEG) by the run's AEAD
    object, built once per run like the symbols' one. (A per-frame ``Cipher`` GCM context fed
    aad and JPEG in two pieces gives the same tag without joining them, but building that
    context cost ≈ 0.1 ms per frame in a running sender, cold after each sleep, against
    ≈ 0.02 ms for the join: docs/benchmarks.md, issue #12.) With ``encrypt`` the object is
    ``AEAD(k_frame).encrypt(nonce, jpeg, aad)``. The caller never seals two frames of one
    run with one ``frame_id`` (:class:`~.trust.Sealer` checks).

    Raises:
        ValueError: a field does not fit, or ``aead`` is :attr:`Aead.NONE`.
    """
    n = memoryview(jpeg).nbytes
    aad = frame_aad(
        keys.stream_id,
        keys.run_nonce,
        frame_id,
        n + TAG_BYTES,
        frame_crc32c,
        capture_ts_ns,
        flags,
        keys.key_id,
    )
    nonce = frame_nonce(keys.stream_id, frame_id)
    cipher = keys.frame_cipher(aead)
    if encrypt:
        return cipher.encrypt(nonce, jpeg, aad)
    return b"".join((jpeg, cipher.encrypt(nonce, b"", b"".join((aad, jpeg)))))


def open_frame(
    keys: RunKeys,
    buf: bytearray,
    *,
    frame_id: int,
    capture_ts_ns: int,
    frame_crc32c: int,
    flags: int,
    aead: Aead = Aead.AES_128_GCM,
    encrypted: bool = False,
) -> memoryview | bytes:
    """Check a reassembled object's frame AEAD (§8.3a); give back the JPEG.

    ``buf`` is :data:`FRAME_AAD_BYTES` bytes of room (overwritten with :func:`frame_aad`)
    followed by the F-byte object, so the tag-only check needs no copy: the JPEG comes back
    as a view of ``buf`` (F − 16 bytes); with ``encrypted`` as new ``bytes`` (the plaintext).

    Raises:
        DecodeError: ``bad_frame_tag`` (forged or corrupt symbols in the object, or another
            run, key, frame, AEAD, or ``encrypted`` mismatch), ``truncated`` (F < 16).
        ValueError: a field does not fit, or ``aead`` is :attr:`Aead.NONE`.
    """
    head = FRAME_AAD_BYTES
    f = len(buf) - head
    if f < TAG_BYTES:
        raise DecodeError("truncated", f"frame object of {f} bytes has no tag")
    aad = frame_aad(
        keys.stream_id, keys.run_nonce, frame_id, f, frame_crc32c, capture_ts_ns, flags,
        keys.key_id,
    )
    nonce = frame_nonce(keys.stream_id, frame_id)
    cipher = keys.frame_cipher(aead)
    view = memoryview(buf)
    try:
        if encrypted:
            return cipher.decrypt(nonce, view[head:], aad)
        view[:head] = aad
        cipher.decrypt(nonce, view[-TAG_BYTES:], view[:-TAG_BYTES])
    except InvalidTag:
        raise DecodeError(
            FRAME_TAG,
            f"frame {frame_id} of stream 0x{keys.stream_id:08X}: frame tag does not verify",
        ) from None
    return view[head:-TAG_BYTES]


def tag_control(key: bytes, message: Buffer) -> bytes:
    """HMAC-SHA256 of ``message`` (the datagram without its tag), truncated to 16 bytes."""
    return hmac.digest(key, message, "sha256")[:TAG_BYTES]


def verify_control(key: bytes, datagram: Buffer) -> memoryview:
    """Check the 16-byte HMAC trailer of a control datagram; give back the datagram without it.

    ``key`` is ``k_s2r`` (heartbeats, announces of a run), ``k_r2s`` (reports, NACKs) or
    :func:`discovery_key` (queries, announces). The comparison is constant-time.

    Raises:
        DecodeError: ``truncated`` (under 16 bytes), ``bad_tag``.
    """
    view = memoryview(datagram)
    if view.nbytes < TAG_BYTES:
        raise DecodeError("truncated", f"control datagram of {view.nbytes} bytes has no tag")
    message = view[:-TAG_BYTES]
    if not hmac.compare_digest(tag_control(key, message), view[-TAG_BYTES:]):
        raise DecodeError(BAD_TAG, "control datagram: tag does not verify")
    return message


def join_seq64(seq_hi: int, seq: int) -> int:
    """The 64-bit sequence number ``seq_hi ‖ seq`` (a heartbeat carries both halves).

    Raises:
        ValueError: either half is not a u32.
    """
    if not 0 <= seq_hi < _U32 or not 0 <= seq < _U32:
        raise ValueError(f"bad seq64 halves: seq_hi {seq_hi}, seq {seq}")
    return (seq_hi << 32) | seq


def estimate_seq64(seq: int, highest: int) -> int:
    """The seq64 whose low 32 bits are ``seq`` and which is closest to ``highest``.

    ``highest`` is the highest seq64 verified in the run (or ``seq_hi << 32`` from a heartbeat
    before any). Candidates use ``seq_hi`` − 1, ``seq_hi``, ``seq_hi`` + 1 of ``highest``
    (SRTP's ROC estimate, RFC 3711 §3.3.1, over 32 bits); a tie (exactly 2**31 away) goes to
    the older candidate. The guess is only a guess: the tag check decides.

    Raises:
        ValueError: ``seq`` not a u32 or ``highest`` not a u64.
    """
    if not 0 <= seq < _U32 or not 0 <= highest < _U64:
        raise ValueError(f"bad seq {seq} or highest seq64 {highest}")
    roc = highest >> 32
    best = -1
    for r in (roc - 1, roc, roc + 1):
        if 0 <= r < _U32:
            candidate = (r << 32) | seq
            if best < 0 or abs(candidate - highest) < abs(best - highest):
                best = candidate
    return best


class ReplayWindow:
    """RFC 4303 §3.4.3 anti-replay window over a run's seq64 (default 1,024 datagrams).

    The right edge is the highest seq64 verified; bit i of the bitmap says whether
    ``highest − i`` was accepted. :meth:`check` never changes state; call :meth:`update` only
    after the datagram's tag verified, so forgeries never move the window.
    """

    __slots__ = ("_bits", "_highest", "_mask", "size")

    def __init__(self, size: int = REPLAY_WINDOW_BITS) -> None:
        if size < 1:
            raise ValueError(f"bad replay window size {size}: must be at least 1")
        self.size = size
        self._mask = (1 << size) - 1
        self._highest: int | None = None
        self._bits = 0

    @property
    def highest(self) -> int | None:
        """The highest seq64 accepted so far, or ``None`` before the first."""
        return self._highest

    def check(self, seq64: int) -> str | None:
        """``None`` if ``seq64`` is new; else ``"replayed"`` or ``"replayed_old"`` (left of it)."""
        top = self._highest
        if top is None or seq64 > top:
            return None
        behind = top - seq64
        if behind >= self.size:
            return REPLAYED_OLD
        return REPLAYED if (self._bits >> behind) & 1 else None

    def update(self, seq64: int) -> None:
        """Mark ``seq64`` as received (after its tag verified); moves the window right if newer.

        A ``seq64`` left of the window is ignored (:meth:`check` refuses it anyway).
        """
        top = self._highest
        if top is None:
            self._highest, self._bits = seq64, 1
        elif seq64 > top:
            shift = seq64 - top
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.size else 1
            self._highest = seq64
        elif top - seq64 < self.size:
            self._bits |= 1 << (top - seq64)

    def estimate(self, seq: int, seq_hi: int = 0) -> int:
        """:func:`estimate_seq64` from the highest seq64 accepted, or ``seq_hi`` before any.

        Before the first verified datagram of a run the receiver knows ``seq_hi`` only from a
        heartbeat; a run starts at ``seq_hi`` = 0, hence the default.
        """
        base = self._highest if self._highest is not None else join_seq64(seq_hi, 0)
        return estimate_seq64(seq, base)


@dataclass(slots=True, eq=False)
class RunState:
    """What a receiver keeps per run: its keys and its replay window."""

    keys: RunKeys
    window: ReplayWindow = field(default_factory=ReplayWindow)


class RunKeyCache:
    """Run keys on demand, bounded in memory and in CPU (§8.2).

    Args:
        masters: the keys held (e.g. current and next, for rotation); ``key_id`` unique.
        max_runs: runs kept, least recently used evicted first (default 16).
        max_derivations_per_s: new runs derived in any 1-second span of ``now`` (default 64).

    Flow per datagram: :meth:`lookup` (cached run, or keys derived for a run not seen, kept
    nowhere yet), then the tag check, then :meth:`accept` (replay window, and only now the
    run enters the cache). Datagrams that do not verify therefore leave no state behind and
    cannot evict a verified run; a flood of invented runs costs at most
    ``max_derivations_per_s`` derivations per second. A run evicted and seen again starts
    with a new replay window: the receiver session treats it as a new run (freshness, §8.6).
    """

    def __init__(
        self,
        masters: Iterable[MasterKey],
        *,
        max_runs: int = MAX_CACHED_RUNS,
        max_derivations_per_s: int = MAX_DERIVATIONS_PER_S,
    ) -> None:
        if max_runs < 1 or max_derivations_per_s < 1:
            raise ValueError(
                f"bad bounds: max_runs {max_runs}, max_derivations_per_s "
                f"{max_derivations_per_s} (both at least 1)"
            )
        self._masters: dict[int, MasterKey] = {}
        for master in masters:
            if master.key_id in self._masters:
                raise ValueError(f"key id {master.key_id} given twice")
            self._masters[master.key_id] = master
        self.max_runs = max_runs
        self.max_derivations_per_s = max_derivations_per_s
        self._runs: OrderedDict[tuple[int, int, int], RunState] = OrderedDict()
        self._derived_at: deque[float] = deque(maxlen=max_derivations_per_s)
        self.derivations = 0
        """Key derivations done so far (a counter)."""

    @property
    def key_ids(self) -> frozenset[int]:
        """The ``key_id`` of every master key held."""
        return frozenset(self._masters)

    def __len__(self) -> int:
        """Runs cached (≤ ``max_runs``)."""
        return len(self._runs)

    def __contains__(self, run: object) -> bool:
        """Whether ``(key_id, stream_id, run_nonce)`` is cached."""
        return run in self._runs

    def find(self, stream_id: int, run_nonce: int) -> RunKeys | None:
        """The keys of a verified, cached run (any key id), or ``None``; not marked as used."""
        for (_key_id, sid, nonce), state in self._runs.items():
            if sid == stream_id and nonce == run_nonce:
                return state.keys
        return None

    def cached(self, run: tuple[int, int, int]) -> RunState | None:
        """The state of ``(key_id, stream_id, run_nonce)`` if it verified and is cached.

        Not marked as used (:meth:`accept` does that once the datagram verified).
        """
        return self._runs.get(run)

    def lookup(self, key_id: int, stream_id: int, run_nonce: int, now: float) -> RunState:
        """The run's state: cached (marked recently used) or freshly derived, not yet kept.

        ``now`` is monotonic seconds.

        Raises:
            DecodeError: ``bad_run`` (``run_nonce`` 0), ``unknown_key`` (no master key with
                ``key_id``), ``key_derivation_limited`` (a new run beyond the budget).
        """
        run = (key_id, stream_id, run_nonce)
        state = self._runs.get(run)
        if state is not None:
            self._runs.move_to_end(run)
            return state
        if not 0 < run_nonce < _U32:
            raise DecodeError(BAD_RUN, f"run nonce {run_nonce} is not 1 to 2**32 - 1")
        master = self._masters.get(key_id)
        if master is None:
            raise DecodeError(UNKNOWN_KEY, f"key id {key_id} is not one of the keys held")
        spent = self._derived_at
        if len(spent) == spent.maxlen and now - spent[0] < 1.0:
            raise DecodeError(
                KEY_DERIVATION_LIMITED,
                f"new run of stream 0x{stream_id:08X} refused: "
                f"{self.max_derivations_per_s} key derivations in the last second",
            )
        spent.append(now)
        self.derivations += 1
        return RunState(RunKeys.derive(master, stream_id, run_nonce))

    def accept(self, state: RunState, seq64: int) -> None:
        """After the tag of datagram ``seq64`` verified: replay check, window update, cache.

        Raises:
            DecodeError: ``replayed`` or ``replayed_old`` (the window is not moved).
        """
        run = state.keys.run
        kept = self._runs.get(run)
        if kept is not None:  # one window per run, even if two lookups derived it twice
            state = kept
        reason = state.window.check(seq64)
        if reason is not None:
            raise DecodeError(
                reason,
                f"stream 0x{state.keys.stream_id:08X}: seq64 {seq64} {reason.replace('_', ' ')}",
            )
        state.window.update(seq64)
        if kept is None:
            self._runs[run] = state
            if len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(run)
