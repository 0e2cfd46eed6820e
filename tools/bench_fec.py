#!/usr/bin/env python3
"""CPU per 1080×1920-size frame through mcastcam's FEC adapter (mcastcam/protocol/fec.py).

A 365,048-byte frame (the ``fox`` recording's median size; random bytes, which the codes do
not care about) cut into symbols of ``--symbol-size`` bytes (default 1,408: k = 260). For
each FEC scheme (``--schemes``, default both: 2 Reed–Solomon, 1 RaptorQ) and each repair
count R (``--repair``, default 2 %, 10 % and 25 % of k): the sender's ``FrameEncoder``
(source views + R repair symbols) and a receiver's ``FrameDecoder`` fed the worst case
(R − o source symbols lost, every repair symbol used; o = 2 for RaptorQ, 0 for the MDS
Reed–Solomon) and, for reference, the no-loss case (all k source symbols, which a real
receiver would not even decode). Every decode is checked byte-exact before it is timed.
Times are CPU time of this process (``time.process_time_ns``), median of ``--batches``
batches.

Usage: ``python tools/bench_fec.py [--symbol-size 1408] [--batches 7] [--repair 0.02,0.1]
[--schemes 2,1]``. Runtime: a few seconds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from mcastcam.protocol.fec import FrameDecoder, FrameEncoder, decode_overhead

FRAME_LEN = 365_048


def _encode(frame: bytes, t: int, r: int, scheme: int) -> tuple[FrameEncoder, list[bytes]]:
    enc = FrameEncoder(frame, t, scheme=scheme, max_repair=r)
    enc.source_symbols()
    return enc, enc.repair(enc.k, r)


def _decode(frame_len: int, t: int, symbols: list[tuple[int, bytes]], scheme: int) -> bytes | None:
    dec = FrameDecoder(frame_len, t, scheme=scheme)
    for esi, payload in symbols:
        out = dec.add(esi, payload)
        if out is not None:
            return out
    return None


def _time_ms(fn: object, batches: int, reps: int) -> float:
    samples = []
    for _ in range(batches):
        start = time.process_time_ns()
        for _ in range(reps):
            fn()  # type: ignore[operator]
        samples.append((time.process_time_ns() - start) / reps / 1e6)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--symbol-size", type=int, default=1408, help="T, bytes (multiple of 8)")
    ap.add_argument("--batches", type=int, default=7, help="batches per figure (median)")
    ap.add_argument("--reps", type=int, default=5, help="operations per batch")
    ap.add_argument("--repair", default="0.02,0.1,0.25", help="R as fractions of k, comma list")
    ap.add_argument("--schemes", default="2,1", help="FEC schemes: 2 Reed-Solomon, 1 RaptorQ")
    args = ap.parse_args()
    t = args.symbol_size
    rng = random.Random(1)
    frame = rng.randbytes(FRAME_LEN)
    k = FrameEncoder(frame, t).k
    print(f"frame {FRAME_LEN} B, T = {t} B, k = {k}; CPU ms per frame, median of {args.batches}")
    print("| scheme | R | encode | decode, R − o source lost | decode, no loss | encode + decode |")
    print("|---|---|---|---|---|---|")
    for scheme in (int(x) for x in args.schemes.split(",")):
        o = decode_overhead(scheme)
        name = {1: "1 RaptorQ", 2: "2 Reed–Solomon"}[scheme]
        for fraction in (float(x) for x in args.repair.split(",")):
            r = max(o, round(k * fraction))
            enc, repair = _encode(frame, t, r, scheme)
            source = [(i, bytes(s)) for i, s in enumerate(enc.source_symbols())]
            lost = set(rng.sample(range(k), r - o))
            lossy = [s for s in source if s[0] not in lost] + list(enumerate(repair, start=k))
            assert _decode(FRAME_LEN, t, lossy, scheme) == frame
            assert _decode(FRAME_LEN, t, source, scheme) == frame
            e = _time_ms(lambda: _encode(frame, t, r, scheme), args.batches, args.reps)  # noqa: B023
            d = _time_ms(lambda: _decode(FRAME_LEN, t, lossy, scheme), args.batches, args.reps)  # noqa: B023
            n = _time_ms(lambda: _decode(FRAME_LEN, t, source, scheme), args.batches, args.reps)  # noqa: B023
            print(f"| {name} | {r} | {e:.2f} | {d:.2f} | {n:.2f} | {e + d:.2f} |")


if __name__ == "__main__":
    main()
