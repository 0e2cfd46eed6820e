"""Whole-datagram authentication with a shared key (pure; docs/protocol.md §8.3, §8.5).

:mod:`mcastcam.protocol.auth` has the primitives (run keys, AEAD, HMAC, replay window); this
module applies them to datagrams as they come from and go to the network:

* :class:`Verifier` — a receiver's (or querier's) first step for every datagram: checks, in
  §8.5's order, prefix and flags, length, ``key_id`` and run keys (bounded
  :class:`~mcastcam.protocol.auth.RunKeyCache`), the tag, the replay window — and only then
  gives back the *plain* datagram: the same bytes with ``AUTH``/``ENCRYPTED``/``CHACHA`` and
  ``key_id`` cleared and the tag removed (a symbol's payload is a piece of the frame object,
  never decrypted here: with ``ENCRYPTED`` the object is). The plain datagram goes through
  the unchanged keyless path (codec, reassembly); nothing about a datagram that fails a check
  is kept. The reassembler verifies lazily (§8.5): only symbols that would create state, that
  conflict with a held symbol, or whose frame failed its frame AEAD come here
  (:meth:`Verifier.open`, :meth:`Verifier.check_symbol`, :meth:`Verifier.verify_held`).
* :class:`Sealer` — a sender's run: seals each frame once (:meth:`Sealer.seal_frame`, frame
  AEAD under ``k_frame``, §8.3a), tags every symbol (AEAD under ``k_data``, nonce
  ``stream_id ‖ seq64``), tags its control datagrams (HMAC under ``k_s2r``; discovery under
  ``k_disc``), and verifies reports and NACKs (HMAC under ``k_r2s``) with a replay window per
  (``receiver_id``, source address) in a bounded table, least recently used evicted first.
* :func:`seal_control` / :func:`open_control` — tag a plain control datagram (set ``AUTH``
  and ``key_id``, append the HMAC) / check one and give back its plain form.

Every refusal is a :class:`~mcastcam.errors.DecodeError` whose ``reason`` is a counter key
(§11): ``unauthenticated``, ``truncated``, ``bad_flags``, ``unknown_key``,
``key_derivation_limited``, ``bad_run``, ``bad_tag``, ``replayed``, ``replayed_old``,
``not_for_receiver`` (a report or NACK sent to a receiver's stream socket).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidTag

from mcastcam.errors import DecodeError
from mcastcam.protocol import codec
from mcastcam.protocol.auth import (
    TAG_BYTES,
    Aead,
    MasterKey,
    ReplayWindow,
    RunKeyCache,
    RunKeys,
    RunState,
    discovery_key,
    join_seq64,
    open_symbol,
    seal_frame,
    tag_control,
    verify_control,
)
from mcastcam.protocol.serial import serial_diff
from mcastcam.protocol.wire import (
    CONTROL_PREAMBLE_SIZE,
    MAGIC,
    PREFIX_SIZE,
    SYMBOL_HEADER_SIZE,
    VERSION,
    Flag,
    Kind,
)

__all__ = [
    "MAX_PEERS",
    "UNAUTHENTICATED",
    "DiscoveryAuth",
    "Sealer",
    "Verifier",
    "open_control",
    "seal_control",
    "tagged_key_id",
]

Buffer = bytes | bytearray | memoryview

UNAUTHENTICATED = "unauthenticated"
MAX_PEERS = 1024
"""Replay windows a sender keeps for (``receiver_id``, address) pairs (LRU)."""

_AUTH = int(Flag.AUTH)
_ENCRYPTED = int(Flag.ENCRYPTED)
_CHACHA = int(Flag.CHACHA)
_SYMBOL_KEY_ID = 41
_CONTROL_KEY_ID = PREFIX_SIZE
_SYMBOLS = (int(Kind.SOURCE), int(Kind.REPAIR))
_DISCOVERY = (int(Kind.DISCOVERY_QUERY), int(Kind.DISCOVERY_ANNOUNCE))
_FROM_RECEIVERS = (int(Kind.RECEIVER_REPORT), int(Kind.NACK))
_CONTROL_MIN = PREFIX_SIZE + CONTROL_PREAMBLE_SIZE
_SYMBOL_MIN = SYMBOL_HEADER_SIZE + TAG_BYTES
_SYMBOL_FLAGS = _AUTH | _ENCRYPTED | _CHACHA
_SYMBOL_PREFIX = struct.Struct("!HBBHII")  # magic version kind flags stream_id seq (§2)
_NONCE = struct.Struct("!IQ").pack  # stream_id ‖ seq64 (§8.3)
_LOW32 = 0xFFFF_FFFF
_HALF = 1 << 31


def _plain(data: Buffer, end: int, key_id_at: int, body: Buffer | None = None) -> bytes:
    """``data[:end]`` with the security flags and ``key_id`` cleared.

    ``body``, when given, replaces ``data[SYMBOL_HEADER_SIZE:end]`` (a decrypted payload).
    """
    out = bytearray(data[:SYMBOL_HEADER_SIZE] if body is not None else data[:end])
    out[4] = 0
    out[5] = 0
    out[key_id_at] = 0
    if body is not None:
        out += body
    return bytes(out)


def seal_control(key: bytes, key_id: int, plain: Buffer) -> bytes:
    """Tag a control datagram encoded without ``AUTH`` (kind 2, 3, 4, 5 or 17).

    Sets ``AUTH`` and ``key_id``, appends HMAC-SHA256/128 under ``key`` (§8.3).
    """
    out = bytearray(plain)
    out[5] |= _AUTH
    out[_CONTROL_KEY_ID] = key_id
    out += tag_control(key, out)
    return bytes(out)


def open_control(key: bytes, data: Buffer) -> bytes:
    """Check a tagged control datagram's HMAC under ``key``; return its plain form.

    Raises:
        DecodeError: ``truncated``, ``bad_tag``.
    """
    message = verify_control(key, data)
    return _plain(message, len(message), _CONTROL_KEY_ID)


def _prefix(data: Buffer) -> tuple[int, int, int, int]:
    kind, flags, stream_id, seq = codec.check_prefix(data)
    if not flags & _AUTH:
        raise DecodeError(UNAUTHENTICATED, f"kind {kind} datagram without a tag; key required")
    fixed = SYMBOL_HEADER_SIZE if kind in _SYMBOLS else _CONTROL_MIN
    if len(data) < fixed + TAG_BYTES:
        raise DecodeError(
            "truncated", f"tagged datagram of {len(data)} bytes is shorter than {fixed} + 16"
        )
    key_id = data[_SYMBOL_KEY_ID if kind in _SYMBOLS else _CONTROL_KEY_ID]
    if key_id == 0:
        raise DecodeError("bad_flags", "AUTH set with key_id 0")
    return kind, flags, stream_id, seq


def tagged_key_id(data: Buffer) -> int:
    """The ``key_id`` of a datagram that says it carries a tag (§8.3), no tag checked.

    For a forwarder that holds keys but verifies nothing itself (the relay): the prefix, the
    ``AUTH`` flag, the length and a non-zero ``key_id`` are checked as :class:`Verifier`
    checks them first.

    Raises:
        DecodeError: the codec's prefix reasons, ``unauthenticated``, ``truncated``,
            ``bad_flags``.
    """
    kind = _prefix(data)[0]
    return data[_SYMBOL_KEY_ID if kind in _SYMBOLS else _CONTROL_KEY_ID]


class DiscoveryAuth:
    """Discovery's tags (§9): HMAC-SHA256/128 under ``k_disc`` on queries and announces.

    Args:
        masters: the keys held; the first one tags (a querier or sender during a rotation
            accepts either).

    Raises:
        ValueError: no key.
    """

    def __init__(self, masters: Iterable[MasterKey]) -> None:
        keys = list(masters)
        if not keys:
            raise ValueError("discovery authentication needs at least one key")
        self.key_id = keys[0].key_id
        self._keys = {m.key_id: discovery_key(m) for m in keys}

    def seal(self, plain: Buffer) -> bytes:
        """Tag a query or announce encoded without ``AUTH`` (adds 16 bytes)."""
        return seal_control(self._keys[self.key_id], self.key_id, plain)

    def open(self, data: Buffer) -> bytes:
        """Check a tagged query or announce; return its plain form (``AUTH``, tag removed).

        Raises:
            DecodeError: the codec's prefix reasons, ``unauthenticated`` (no tag),
                ``not_discovery`` (another kind), ``truncated``, ``bad_flags``,
                ``unknown_key``, ``bad_tag``.
        """
        kind, _flags, _sid, _seq = _prefix(data)
        if kind not in _DISCOVERY:
            raise DecodeError("not_discovery", f"kind {kind} on the discovery port")
        key_id = data[_CONTROL_KEY_ID]
        key = self._keys.get(key_id)
        if key is None:
            raise DecodeError("unknown_key", f"key id {key_id} is not one of the keys held")
        return open_control(key, data)


class Verifier:
    """A receiver's or querier's tag check (§8.5), bounded in memory and CPU.

    Args:
        masters: the keys held (current and next, for rotation).
        max_runs, max_derivations_per_s: the :class:`RunKeyCache` bounds.

    Attributes:
        runs: the run key cache (runs that verified, with their replay windows).
    """

    def __init__(
        self, masters: Iterable[MasterKey], *, max_runs: int = 16, max_derivations_per_s: int = 64
    ) -> None:
        keys = list(masters)
        if not keys:
            raise ValueError("a verifier needs at least one key")
        self.runs = RunKeyCache(
            keys, max_runs=max_runs, max_derivations_per_s=max_derivations_per_s
        )
        self._disc = {m.key_id: discovery_key(m) for m in keys}

    def run_keys(self, key_id: int, stream_id: int, run_nonce: int, now: float) -> RunKeys:
        """The keys of a run (cached or derived): to tag reports and NACKs about it.

        Raises:
            DecodeError: ``unknown_key``, ``key_derivation_limited``, ``bad_run``.
        """
        return self.runs.lookup(key_id, stream_id, run_nonce, now).keys

    def keys_for(self, stream_id: int, run_nonce: int) -> RunKeys | None:
        """The keys of a run that verified and is still cached (to tag reports about it)."""
        return self.runs.find(stream_id, run_nonce)

    def seal_to_sender(self, plain: Buffer) -> bytes | None:
        """Tag a report or NACK (encoded without ``AUTH``) under its run's ``k_r2s``.

        ``None`` when the run it is about is no longer cached (nothing to tag it with).
        """
        keys = self.keys_for(
            int.from_bytes(plain[6:10], "big"), int.from_bytes(plain[16:20], "big")
        )
        if keys is None:
            return None
        return seal_control(keys.k_r2s, keys.key_id, plain)

    @property
    def key_id(self) -> int:
        """The first key's id (what this side tags discovery queries with)."""
        return min(self._disc)

    def discovery_key(self, key_id: int | None = None) -> bytes:
        """``k_disc`` of key ``key_id`` (default :attr:`key_id`).

        Raises:
            DecodeError: ``unknown_key``.
        """
        key = self._disc.get(self.key_id if key_id is None else key_id)
        if key is None:
            raise DecodeError("unknown_key", f"key id {key_id} is not one of the keys held")
        return key

    def open(self, data: Buffer, now: float) -> bytes:
        """Verify one datagram at ``now`` (monotonic s); return its plain form (see module).

        Symbols: the AEAD tag under the run's ``k_data`` (the whole datagram is associated
        data) with the seq64 guessed from the run's window, then the window. Heartbeats:
        HMAC under ``k_s2r``, then the window at ``seq_hi ‖ seq`` (which anchors the run's
        seq64 for its symbols). Discovery: HMAC under ``k_disc`` (replays are the querier's
        ``query_nonce`` to refuse).

        Raises:
            DecodeError: the codec's prefix reasons, ``unauthenticated``, ``truncated``,
                ``bad_flags``, ``unknown_key``, ``key_derivation_limited``, ``bad_run``,
                ``bad_tag``, ``replayed``, ``replayed_old``, ``not_for_receiver``, and for a
                heartbeat whose tag verified, the codec's body reasons.
        """
        if len(data) >= _SYMBOL_MIN:  # the hot path: a symbol of a run that verified before
            magic, version, kind, flags, stream_id, seq = _SYMBOL_PREFIX.unpack_from(data)
            if (
                magic == MAGIC
                and version == VERSION
                and (kind == 1 or kind == 16)
                and flags & _AUTH
                and not flags & ~_SYMBOL_FLAGS
            ):
                run = (data[_SYMBOL_KEY_ID], stream_id, int.from_bytes(data[44:48], "big"))
                state = self.runs.cached(run)
                if state is not None:
                    return self._open_cached_symbol(state, data, flags, seq)
        kind, flags, stream_id, seq = _prefix(data)
        if kind in _SYMBOLS:
            key_id = data[_SYMBOL_KEY_ID]
            run_nonce = int.from_bytes(data[44:48], "big")
            state = self.runs.lookup(key_id, stream_id, run_nonce, now)
            seq64 = state.window.estimate(seq)
            open_symbol(
                state.keys,
                seq64,
                data,
                aead=Aead.CHACHA20_POLY1305 if flags & _CHACHA else Aead.AES_128_GCM,
            )
            self.runs.accept(state, seq64)
            return _plain(data, len(data) - TAG_BYTES, _SYMBOL_KEY_ID)
        key_id = data[_CONTROL_KEY_ID]
        if kind in _DISCOVERY:
            return open_control(self.discovery_key(key_id), data)
        if kind in _FROM_RECEIVERS:
            raise DecodeError("not_for_receiver", f"kind {kind} goes to senders")
        run_nonce = int.from_bytes(data[16:20], "big")
        state = self.runs.lookup(key_id, stream_id, run_nonce, now)
        plain = open_control(state.keys.k_s2r, data)
        hb = codec.decode(plain)
        assert isinstance(hb, codec.Heartbeat)
        self.runs.accept(state, join_seq64(hb.seq_hi, seq))
        return plain


    def _open_cached_symbol(self, state: RunState, data: Buffer, flags: int, seq: int) -> bytes:
        """:meth:`open` of a symbol whose run is cached: the same checks, fewer steps.

        The prefix was checked by the caller (``key_id`` is non-zero: a cached run's). One
        copy: the cleared 48-byte header joined with the payload.
        """
        seq64 = self._verify_cached(state, data, flags, seq)
        self.runs.accept(state, seq64)
        view = memoryview(data)
        header = bytearray(view[:SYMBOL_HEADER_SIZE])
        header[4] = header[5] = header[_SYMBOL_KEY_ID] = 0
        return b"".join((header, view[SYMBOL_HEADER_SIZE:-TAG_BYTES]))

    @staticmethod
    def _verify_cached(state: RunState, data: Buffer, flags: int, seq: int) -> int:
        """Check a symbol's tag under a cached run; return its seq64 (window not touched).

        Raises:
            DecodeError: ``bad_tag``.
        """
        keys = state.keys
        top = state.window.highest
        # the highest seq64's own 2**32 block is the closest candidate when seq is within
        # 2**31 of its low half (RFC 3711 §3.3.1); otherwise the full estimate
        if top is not None and -_HALF < seq - (top & _LOW32) < _HALF:
            seq64 = (top & ~_LOW32) | seq
        else:
            seq64 = state.window.estimate(seq)
        cipher = keys.cipher(Aead.CHACHA20_POLY1305 if flags & _CHACHA else Aead.AES_128_GCM)
        view = memoryview(data)
        try:
            cipher.decrypt(_NONCE(keys.stream_id, seq64), view[-TAG_BYTES:], view[:-TAG_BYTES])
        except InvalidTag:
            raise DecodeError(
                "bad_tag",
                f"symbol datagram of stream 0x{keys.stream_id:08X} (seq64 {seq64}): "
                "tag does not verify",
            ) from None
        return seq64

    def check_symbol(self, state: RunState, data: Buffer) -> None:
        """Verify one symbol datagram of a run already verified (the reassembler's lazy path).

        ``state`` is the run's (kept by the frame the symbol belongs to); ``data`` the
        datagram as received. Tag, then the replay window (moved only if both pass); no plain
        copy is made (the caller reads the payload at ``data[48:-16]``).

        Raises:
            DecodeError: ``bad_tag``, ``replayed``, ``replayed_old``.
        """
        flags = data[5]
        seq = int.from_bytes(data[10:14], "big")
        seq64 = self._verify_cached(state, data, flags, seq)
        self.runs.accept(state, seq64)

    @staticmethod
    def verify_held(state: RunState, header: Buffer, payload: Buffer, tag: Buffer) -> bool:
        """Whether a held symbol's own tag verifies (the slow path of a failed frame, §8.5).

        ``header`` is the 48-byte header as it was received (rebuilt by the reassembler from
        the frame's verified fields, the symbol's kind, ESI and ``seq``), ``payload`` the
        bytes held, ``tag`` the 16 bytes that came with them. The replay window is not
        consulted: the symbol's frame and ESI were already matched against a verified one.
        """
        data = b"".join((header, payload, tag))
        try:
            Verifier._verify_cached(state, data, header[5], int.from_bytes(header[10:14], "big"))
        except DecodeError:
            return False
        return True


class Sealer:
    """A sender run's keys at work: tag what it sends, verify what receivers send it.

    Args:
        master: the key (its ``key_id`` goes in every datagram).
        stream_id, run_nonce: the run (§8.2).
        aead: the symbol and frame AEAD (``Aead.AES_128_GCM`` default, or ChaCha20-Poly1305).
        encrypt: encrypt each frame object (``--encrypt``; §8.3a).
        max_peers: replay windows kept for (``receiver_id``, address) pairs.

    Attributes:
        flags: the prefix flags of this run's symbols (``AUTH`` [+ ``ENCRYPTED``, ``CHACHA``]).
        key_id: the master key's id.
    """

    def __init__(
        self,
        master: MasterKey,
        stream_id: int,
        run_nonce: int,
        *,
        aead: Aead = Aead.AES_128_GCM,
        encrypt: bool = False,
        max_peers: int = MAX_PEERS,
    ) -> None:
        if aead == Aead.NONE:
            raise ValueError("a sealer needs a symbol AEAD")
        self.keys = RunKeys.derive(master, stream_id, run_nonce)
        self.key_id = master.key_id
        self.aead = aead
        self.encrypt = encrypt
        self.flags = (
            _AUTH
            | (_ENCRYPTED if encrypt else 0)
            | (_CHACHA if aead == Aead.CHACHA20_POLY1305 else 0)
        )
        self.k_disc = discovery_key(master)
        self.max_peers = max_peers
        self._stream_id = stream_id
        self._encrypt = self.keys.cipher(aead).encrypt
        self.frames_sealed = 0
        """Frames sealed so far (each with its own ``frame_id``)."""
        self._last_frame: int | None = None
        self._frame_span = 0  # frame ids advanced since the first sealed one
        self._peers: OrderedDict[tuple[int, str, int], ReplayWindow] = OrderedDict()

    @property
    def peers(self) -> int:
        """Replay windows kept for (``receiver_id``, address) pairs (at most ``max_peers``)."""
        return len(self._peers)

    def seal_frame(
        self, jpeg: Buffer, *, frame_id: int, capture_ts_ns: int, frame_crc32c: int
    ) -> bytes:
        """The object to fragment for one frame (§8.3a): ``JPEG ‖ tag`` or ``ciphertext ‖ tag``.

        The frame AEAD's nonce is ``stream_id ‖ frame_id`` under this run's ``k_frame``, so a
        run must never seal two frames with one ``frame_id``: ids must be newer (RFC 1982)
        than the last one sealed, and a run seals at most 2**32 − 1 frame ids' worth (≥ 4.5
        years at 30 frames/s; then the sender must start a new run).

        Raises:
            ValueError: ``frame_id`` not newer than the last sealed one, or the run's frame
                ids are used up.
        """
        last = self._last_frame
        if last is not None:
            step = serial_diff(frame_id, last)
            if step <= 0:
                raise ValueError(f"frame id {frame_id} is not newer than {last}: nonce reuse")
            if self._frame_span + step >= 1 << 32:
                raise ValueError("this run's frame ids are used up: start a new run")
            self._frame_span += step
        self._last_frame = frame_id
        self.frames_sealed += 1
        return seal_frame(
            self.keys,
            jpeg,
            frame_id=frame_id,
            capture_ts_ns=capture_ts_ns,
            frame_crc32c=frame_crc32c,
            flags=self.flags,
            aead=self.aead,
            encrypt=self.encrypt,
        )

    @property
    def symbol_tagger(self) -> tuple[Callable[[bytes, bytes, bytes], bytes], int]:
        """``(encrypt, stream_id)``: what :meth:`seal_symbol` does, for a caller's hot loop.

        The tag of a symbol is ``encrypt(nonce, b"", header + payload)`` with nonce
        ``stream_id ‖ seq64`` (12 bytes, big-endian; ``auth.symbol_nonce``).
        """
        return self._encrypt, self._stream_id

    def seal_symbol(
        self, header: bytes, payload: bytes | memoryview, seq64: int
    ) -> tuple[bytes, bytes | memoryview, bytes]:
        """``(header, payload, tag)`` of one symbol: the tag covers header and payload.

        ``header`` carries :attr:`flags` and :attr:`key_id` already, and ``seq64``'s low
        32 bits as ``seq``; ``payload`` is a piece of the sealed frame object (already
        ciphertext with ``--encrypt``), sent as is.
        """
        try:  # seal_symbol's tag, inlined (once per datagram)
            nonce = _NONCE(self._stream_id, seq64)
        except struct.error:
            raise ValueError(f"bad seq64 {seq64}: must be a u64") from None
        return header, payload, self._encrypt(nonce, b"", header + payload)

    def seal_control(self, plain: Buffer) -> bytes:
        """Tag a heartbeat of this run (``k_s2r``)."""
        return seal_control(self.keys.k_s2r, self.key_id, plain)

    def seal_discovery(self, plain: Buffer) -> bytes:
        """Tag an announce (``k_disc``)."""
        return seal_control(self.k_disc, self.key_id, plain)

    def open_from_receiver(self, data: Buffer, addr: tuple[str, int]) -> bytes:
        """Verify a report or NACK about this run; return its plain form.

        Order: prefix, ``AUTH``, length, ``key_id``, HMAC under ``k_r2s`` (a report about
        another run or stream does not verify: ``bad_tag``), then the replay window of its
        (``receiver_id``, ``addr``) over ``seq`` — created only now, in a bounded LRU table.

        Raises:
            DecodeError: prefix reasons, ``unauthenticated``, ``truncated``, ``bad_flags``,
                ``unknown_key``, ``bad_tag``, ``replayed``, ``replayed_old``,
                ``not_for_sender`` (another kind), the codec's body reasons.
        """
        kind, _flags, _sid, seq = _prefix(data)
        if kind not in _FROM_RECEIVERS:
            raise DecodeError("not_for_sender", f"kind {kind} is not a report or NACK")
        key_id = data[_CONTROL_KEY_ID]
        if key_id != self.key_id:
            raise DecodeError("unknown_key", f"key id {key_id} is not this run's")
        plain = open_control(self.keys.k_r2s, data)
        msg = codec.decode(plain)
        assert isinstance(msg, codec.ReceiverReport | codec.Nack)
        peer = (msg.receiver_id, addr[0], addr[1])
        window = self._peers.get(peer)
        fresh = window is None
        if window is None:
            window = ReplayWindow()
        reason = window.check(seq)
        if reason is not None:
            raise DecodeError(reason, f"receiver {msg.receiver_id:08x} at {addr[0]}: seq {seq}")
        window.update(seq)
        if fresh:
            self._peers[peer] = window
            if len(self._peers) > self.max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        return plain
