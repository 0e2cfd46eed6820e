#!/usr/bin/env python3
"""Measure the libraries protocol version 2 will use, on this machine (docs/protocol-v2.md).

Three groups, per 1080×1920-size frame (~360 KB, the ``fox`` recording in
``../shared/data``) cut into symbols of ``--symbol-size`` bytes (default 1,408: a 1500-byte
MTU minus IPv4 20, UDP 8, the 48-byte v2 symbol header and a 16-byte tag):

* **FEC** — ``raptorq`` (RFC 6330, Apache-2.0) and ``zfec`` (Reed–Solomon over GF(2^8),
  GPL-2+/TGPPL): encode k source + r repair symbols and decode from a random sufficient subset
  (all r losses fall on source symbols, the worst case), for k in {5, 33, 260} and r = 10 % and
  25 % of k. Also: the cost of *fresh* repair symbols on demand (what a NACK asks for), the
  decode failure rate at exactly k symbols (RaptorQ is not MDS), and whether the source symbols
  are the frame's own bytes in order (systematic, no interleaving) so fragments can be source
  symbols.
* **checksums** — ``google-crc32c``, ``crc32c`` and ``zlib.crc32`` over one whole frame.
* **tags** — per datagram of header + symbol bytes: HMAC-SHA256 (stdlib ``hmac.digest`` and
  ``hmac.new``, ``cryptography``), keyed BLAKE2s (stdlib), AES-128-GCM and ChaCha20-Poly1305
  (``cryptography``) authenticating only (the datagram is associated data, empty plaintext) and
  encrypting the payload; sender (tag) and receiver (verify) side; plus HKDF per run key.

Times are **CPU time** of this process (``time.process_time_ns``), so other processes on the
shared cores inflate them little; each figure is the median over ``--batches`` batches of the
per-operation mean, with the minimum alongside. Every FEC decode and every verify is checked
(byte-exact frame, tag accepted; a flipped bit rejected) before it is timed.

The libraries are not dependencies of mcastcam yet: ``.venv/bin/pip install raptorq zfec
google-crc32c crc32c cryptography``. A missing one is reported as such, not faked.

Usage: ``python tools/bench_primitives.py [--quick] [--json out.json|-] [--symbol-size 1408]``
Runtime: < 2 minutes (about 5 s of CPU on an AMD EPYC core; ``--quick`` about 1 s).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import importlib.metadata
import json
import math
import os
import platform
import random
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FOX = ROOT.parent / "shared" / "data" / "fox_1080x1920_420.mjpeg"
HEADER_BYTES = 48
"""Bytes of the v2 symbol header (docs/protocol-v2.md), authenticated with the payload."""
TAG_BYTES = 16
KS = (5, 33, 260)
REPAIR_FRACTIONS = (0.10, 0.25)
PACKAGES = ("raptorq", "zfec", "google-crc32c", "crc32c", "cryptography")


# --------------------------------------------------------------------------- timing


def measure(fn: Callable[[], object], *, ops: int, batches: int) -> dict[str, float]:
    """CPU µs per call of ``fn``: median and min over ``batches`` batches of ``ops`` calls."""
    fn()  # warm up (imports, allocations, lazy tables)
    per_op: list[float] = []
    for _ in range(batches):
        t0 = time.process_time_ns()
        for _ in range(ops):
            fn()
        per_op.append((time.process_time_ns() - t0) / ops / 1000.0)
    return {"us_median": statistics.median(per_op), "us_min": min(per_op)}


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
    }


# --------------------------------------------------------------------------- data


def frame_bytes(min_len: int, seed: int) -> tuple[bytes, str]:
    """A real JPEG frame (the median-size frame of the fox recording), at least ``min_len``.

    Falls back to seeded random bytes (JPEG entropy data is near-random) when the recording is
    missing; the returned label says which.
    """
    if FOX.exists():
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from mcastcam.sender.sources.file import split_mjpeg

        frames = sorted(split_mjpeg(FOX.read_bytes(), FOX.name)[0], key=len)
        frame = frames[len(frames) // 2]
        label = f"{FOX.name}, median frame of {len(frames)}: {len(frame)} B"
        while len(frame) < min_len:  # pad with the next frame's bytes, still real JPEG data
            frame += frames[-1]
        return frame, label
    return random.Random(seed).randbytes(min_len), f"random bytes (seed {seed})"


# --------------------------------------------------------------------------- FEC


def bench_raptorq(
    frame: bytes, symbol_size: int, ops: int, batches: int, rng: random.Random
) -> dict[str, Any]:
    import raptorq  # type: ignore[import-untyped]

    t = symbol_size
    out: dict[str, Any] = {"available": True, "cases": []}
    for k in KS:
        f_len = k * t - t // 3  # a short last symbol, as real frames have
        data = frame[:f_len]
        enc = raptorq.Encoder.with_defaults(data, t)
        probe = enc.get_encoded_packets(0)
        systematic = len(probe) == k and all(
            p[:4] == bytes([0]) + i.to_bytes(3, "big")
            and p[4:] == data[i * t : (i + 1) * t].ljust(t, b"\0")
            for i, p in enumerate(probe)
        )
        for frac in REPAIR_FRACTIONS:
            r = max(1, math.ceil(k * frac))
            packets = raptorq.Encoder.with_defaults(data, t).get_encoded_packets(r)
            assert len(packets) == k + r, (len(packets), k, r)

            def encode(data: bytes = data, r: int = r) -> object:
                return raptorq.Encoder.with_defaults(data, t).get_encoded_packets(r)

            def plan(data: bytes = data) -> object:
                return raptorq.Encoder.with_defaults(data, t)

            # Worst case for the decoder: r source symbols lost, every repair symbol used.
            lost = set(rng.sample(range(k), r))
            subset = [p for i, p in enumerate(packets) if i not in lost]
            rng.shuffle(subset)

            def decode(subset: list[bytes] = subset, f_len: int = f_len) -> bytes | None:
                dec = raptorq.Decoder.with_defaults(f_len, t)
                for p in subset:
                    res = dec.decode(p)
                    if res is not None:
                        return bytes(res)
                return None

            assert decode() == data, f"raptorq k={k} r={r}: decode mismatch"
            # Fresh repair symbols on demand (NACK): the Python API has no repair_packets(esi)
            # call, only get_encoded_packets(n), which returns sources + the first n repairs;
            # asking for r + m and keeping the tail gives m fresh ones (ESI k+r .. k+r+m-1).
            m = max(1, math.ceil(k * 0.05))
            kept = raptorq.Encoder.with_defaults(data, t)
            extra = kept.get_encoded_packets(r + m)[k + r :]
            assert len(extra) == m and extra[0][1:4] == (k + r).to_bytes(3, "big")

            def fresh(kept: Any = kept, k: int = k, r: int = r, m: int = m) -> object:
                return kept.get_encoded_packets(r + m)[k + r :]

            n_ops = max(3, ops * 40 // k)
            out["cases"].append(
                {
                    "k": k,
                    "r": r,
                    "frame_len": f_len,
                    "systematic_in_order": systematic,
                    "encode": measure(encode, ops=n_ops, batches=batches),
                    "plan_only": measure(plan, ops=n_ops, batches=batches),
                    "decode_r_lost": measure(decode, ops=n_ops, batches=batches),
                    "fresh_repair": {"m": m, **measure(fresh, ops=n_ops, batches=batches)},
                }
            )
    # RaptorQ is not MDS: how often do exactly k (or k + 1, k + 2) symbols fail to decode?
    k = 33
    f_len = k * t - t // 3
    data = frame[:f_len]
    packets = raptorq.Encoder.with_defaults(data, t).get_encoded_packets(k)
    trials = max(100, ops * 100)
    failures = {0: 0, 1: 0, 2: 0}
    for h in failures:
        for _ in range(trials):
            chosen = rng.sample(packets[k // 2 :], k + h)  # mostly repair symbols
            dec = raptorq.Decoder.with_defaults(f_len, t)
            res = None
            for p in chosen:
                res = dec.decode(p)
                if res is not None:
                    break
            if res is None:
                failures[h] += 1
            else:
                assert bytes(res) == data
    out["overhead_failures"] = {
        "k": k,
        "trials": trials,
        "failed_with_k_plus": {str(h): n for h, n in failures.items()},
    }
    return out


def bench_zfec(
    frame: bytes, symbol_size: int, ops: int, batches: int, rng: random.Random
) -> dict[str, Any]:
    import zfec  # type: ignore[import-untyped]

    t = symbol_size
    out: dict[str, Any] = {"available": True, "cases": []}
    for k in KS:
        f_len = k * t - t // 3
        data = frame[:f_len]
        symbols = [data[i * t : (i + 1) * t].ljust(t, b"\0") for i in range(k)]  # equal sizes
        for frac in REPAIR_FRACTIONS:
            r = max(1, math.ceil(k * frac))
            # n = k + r <= 256 per block: split into the fewest blocks that fit, sizes balanced.
            nblocks = math.ceil((k + r) / 256)
            kb = [k // nblocks + (1 if b < k % nblocks else 0) for b in range(nblocks)]
            rb = [r // nblocks + (1 if b < r % nblocks else 0) for b in range(nblocks)]
            starts = [sum(kb[:b]) for b in range(nblocks)]
            blocks = [tuple(symbols[s : s + n]) for s, n in zip(starts, kb, strict=True)]
            # m = 256: any repair index below 256 can be produced later (fresh, for NACKs).
            encoders = [zfec.Encoder(kb[b], 256) for b in range(nblocks)]
            wanted = [tuple(range(kb[b], kb[b] + rb[b])) for b in range(nblocks)]

            def encode(blocks: list[tuple[bytes, ...]] = blocks, wanted: Any = wanted) -> object:
                # a new Encoder(k_b, n_b) per frame: k varies with every frame's size
                return [
                    zfec.Encoder(len(blk), len(blk) + len(w)).encode(blk, w)
                    for blk, w in zip(blocks, wanted, strict=True)
                ]

            repairs = [e.encode(blk, w) for e, blk, w in zip(encoders, blocks, wanted, strict=True)]
            # Worst case: in each block, as many source symbols lost as it has repair symbols.
            inputs: list[tuple[tuple[bytes, ...], tuple[int, ...]]] = []
            for b in range(nblocks):
                lost = set(rng.sample(range(kb[b]), rb[b]))
                have = [(i, blocks[b][i]) for i in range(kb[b]) if i not in lost]
                have += list(zip(wanted[b], repairs[b], strict=True))
                rng.shuffle(have)
                inputs.append((tuple(s for _, s in have), tuple(i for i, _ in have)))

            def decode(inputs: Any = inputs, kb: list[int] = kb, f_len: int = f_len) -> bytes:
                parts: list[bytes] = []
                for (syms, nums), kk in zip(inputs, kb, strict=True):
                    parts.extend(zfec.Decoder(kk, max(nums) + 1).decode(syms, nums))
                return b"".join(parts)[:f_len]

            assert decode() == data, f"zfec k={k} r={r}: decode mismatch"
            m = max(1, math.ceil(k * 0.05))

            # m further repair symbols spread over the blocks, by index, on demand: the
            # indices right after the proactive ones (each block's n stays <= 256).
            more = [
                tuple(range(kb[b] + rb[b], kb[b] + rb[b] + math.ceil(m / nblocks)))
                for b in range(nblocks)
            ]
            assert all(w[-1] < 256 for w in more)

            def fresh(encoders: Any = encoders, blocks: Any = blocks, more: Any = more) -> object:
                return [e.encode(blk, w) for e, blk, w in zip(encoders, blocks, more, strict=True)]

            n_ops = max(3, ops * 40 // k)
            out["cases"].append(
                {
                    "k": k,
                    "r": r,
                    "blocks": nblocks,
                    "frame_len": f_len,
                    "encode": measure(encode, ops=n_ops, batches=batches),
                    "decode_r_lost": measure(decode, ops=n_ops, batches=batches),
                    "fresh_repair": {"m": m, **measure(fresh, ops=n_ops, batches=batches)},
                }
            )
    return out


# --------------------------------------------------------------------------- checksums


def bench_checksums(frame: bytes, ops: int, batches: int) -> dict[str, Any]:
    out: dict[str, Any] = {"bytes": len(frame)}
    check = b"123456789"  # CRC-32C check value 0xE3069283 (RFC 3720 B.4), CRC-32 0xCBF43926
    try:
        import google_crc32c

        assert google_crc32c.value(check) == 0xE3069283
        out["google-crc32c"] = {
            "implementation": google_crc32c.implementation,
            **measure(lambda: google_crc32c.value(frame), ops=ops * 4, batches=batches),
        }
    except ImportError:
        out["google-crc32c"] = {"available": False}
    try:
        import crc32c

        assert crc32c.crc32c(check) == 0xE3069283
        out["crc32c"] = measure(lambda: crc32c.crc32c(frame), ops=ops * 4, batches=batches)
    except ImportError:
        out["crc32c"] = {"available": False}
    assert zlib.crc32(check) == 0xCBF43926
    out["zlib.crc32 (CRC-32, not C)"] = measure(
        lambda: zlib.crc32(frame), ops=ops * 4, batches=batches
    )
    return out


# --------------------------------------------------------------------------- tags


def _aead_rows(
    row: Callable[[str, Callable[[], object], Callable[[], object]], None],
    name: str,
    aead: Any,
    nonce: bytes,
    header: bytes,
    payload: bytes,
    datagram: bytes,
    mac_only: bytes,
    sealed: bytes,
) -> None:
    """Rows for one AEAD: tag-only (datagram as associated data) and payload encryption."""
    row(
        f"{name} auth only (AAD)",
        lambda: aead.encrypt(nonce, b"", datagram),
        lambda: aead.decrypt(nonce, mac_only, datagram),
    )
    row(
        f"{name} encrypt payload",
        lambda: aead.encrypt(nonce, payload, header),
        lambda: aead.decrypt(nonce, sealed, header),
    )


def bench_tags(
    symbol_size: int, datagrams_per_frame: int, ops: int, batches: int
) -> dict[str, Any]:
    key = bytes(range(32))
    key16 = key[:16]
    header = bytes(HEADER_BYTES)
    payload = random.Random(1).randbytes(symbol_size)
    datagram = header + payload  # what the tag covers
    nonce = bytes(12)
    n = ops * 40
    rows: dict[str, Any] = {}

    def row(name: str, tag: Callable[[], object], verify: Callable[[], object]) -> None:
        t = measure(tag, ops=n, batches=batches)
        v = measure(verify, ops=n, batches=batches)
        rows[name] = {
            "tag_us": t["us_median"],
            "tag_us_min": t["us_min"],
            "verify_us": v["us_median"],
            "verify_us_min": v["us_min"],
            "tag_ms_per_frame": t["us_median"] * datagrams_per_frame / 1000.0,
            "verify_ms_per_frame": v["us_median"] * datagrams_per_frame / 1000.0,
        }

    good = hmac.digest(key, datagram, "sha256")[:TAG_BYTES]
    bad = bytes([datagram[0] ^ 1]) + datagram[1:]
    assert not hmac.compare_digest(hmac.digest(key, bad, "sha256")[:TAG_BYTES], good)
    row(
        "HMAC-SHA256/128 stdlib hmac.digest",
        lambda: hmac.digest(key, datagram, "sha256")[:TAG_BYTES],
        lambda: hmac.compare_digest(hmac.digest(key, datagram, "sha256")[:TAG_BYTES], good),
    )
    row(
        "HMAC-SHA256/128 stdlib hmac.new",
        lambda: hmac.new(key, datagram, "sha256").digest()[:TAG_BYTES],
        lambda: hmac.compare_digest(hmac.new(key, datagram, "sha256").digest()[:TAG_BYTES], good),
    )
    b2good = hashlib.blake2s(datagram, key=key, digest_size=TAG_BYTES).digest()
    row(
        "BLAKE2s-128 keyed stdlib",
        lambda: hashlib.blake2s(datagram, key=key, digest_size=TAG_BYTES).digest(),
        lambda: hmac.compare_digest(
            hashlib.blake2s(datagram, key=key, digest_size=TAG_BYTES).digest(), b2good
        ),
    )
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives import hmac as chmac
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError:
        rows["cryptography"] = {"available": False}
        return rows

    def c_hmac() -> bytes:
        h = chmac.HMAC(key, hashes.SHA256())
        h.update(datagram)
        return h.finalize()[:TAG_BYTES]

    def c_hmac_verify() -> bool:
        return hmac.compare_digest(c_hmac(), good)

    assert c_hmac() == good
    row("HMAC-SHA256/128 cryptography", c_hmac, c_hmac_verify)

    aeads: list[tuple[str, AESGCM | ChaCha20Poly1305]] = [
        ("AES-128-GCM", AESGCM(key16)),
        ("ChaCha20-Poly1305", ChaCha20Poly1305(key)),
    ]
    for name, aead in aeads:
        mac_only = aead.encrypt(nonce, b"", datagram)  # 16-byte tag, datagram as AAD
        sealed = aead.encrypt(nonce, payload, header)  # ciphertext + tag, header as AAD
        assert len(mac_only) == TAG_BYTES and len(sealed) == len(payload) + TAG_BYTES
        flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
        for ct, aad in ((mac_only, bad), (flipped, header)):
            try:
                aead.decrypt(nonce, ct, aad)
            except InvalidTag:
                continue
            raise AssertionError(f"{name}: forged datagram accepted")
        _aead_rows(row, name, aead, nonce, header, payload, datagram, mac_only, sealed)

    def hkdf() -> bytes:
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=bytes(8), info=b"mcastcam v2 run"
        ).derive(key)

    h = measure(hkdf, ops=ops * 4, batches=batches)
    rows["HKDF-SHA256 (one run key)"] = {"derive_us": h["us_median"]}
    return rows


# --------------------------------------------------------------------------- report


def print_table(res: dict[str, Any]) -> None:
    m = res["machine"]
    print(
        f"# bench_primitives on {m['nproc']} CPU(s), {m['cpu_model']}, Linux {m['kernel']}, "
        f"Python {m['python']}"
    )
    print("# packages: " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in m["packages"].items()))
    print(f"# frame: {res['frame']}; symbol size {res['symbol_size']} B; CPU µs (median/min)")
    for lib in ("raptorq", "zfec"):
        r = res["fec"][lib]
        if not r.get("available"):
            print(f"\n{lib}: not installed")
            continue
        print(f"\n{lib}")
        print(
            f"{'k':>4} {'r':>3} {'blk':>3} {'encode µs':>12} {'decode µs':>12} "
            f"{'fresh m':>7} {'fresh µs':>10} {'sys.':>5}"
        )
        for c in r["cases"]:
            print(
                f"{c['k']:>4} {c['r']:>3} {c.get('blocks', 1):>3} "
                f"{c['encode']['us_median']:>7.0f}/{c['encode']['us_min']:<4.0f} "
                f"{c['decode_r_lost']['us_median']:>7.0f}/{c['decode_r_lost']['us_min']:<4.0f} "
                f"{c['fresh_repair']['m']:>7} {c['fresh_repair']['us_median']:>10.0f} "
                f"{c.get('systematic_in_order', '-')!s:>5}"
            )
        if "overhead_failures" in r:
            o = r["overhead_failures"]
            print(
                f"  decode failures at k={o['k']} with k+h symbols ({o['trials']} trials each): "
                + ", ".join(f"h={h}: {n}" for h, n in o["failed_with_k_plus"].items())
            )
            plan = [c["plan_only"]["us_median"] for c in r["cases"]]
            print(
                "  of which Encoder.with_defaults (plan + intermediate symbols): "
                + ", ".join(
                    f"k={c['k']} r={c['r']}: {p:.0f} µs"
                    for c, p in zip(r["cases"], plan, strict=True)
                )
            )
    print(f"\nchecksums over {res['checksums']['bytes']} B")
    for name, v in res["checksums"].items():
        if isinstance(v, dict) and "us_median" in v:
            extra = f" ({v['implementation']})" if "implementation" in v else ""
            mbps = res["checksums"]["bytes"] / v["us_median"]
            print(f"  {name:<28} {v['us_median']:8.1f} µs  {mbps:8.0f} MB/s{extra}")
    dpf = res["datagrams_per_frame"]
    print(
        f"\ntags per datagram of {HEADER_BYTES + res['symbol_size']} B "
        f"(per frame: × {dpf} datagrams)"
    )
    print(f"  {'':<38} {'tag µs':>8} {'verify µs':>10} {'tag ms/fr':>10} {'verify ms/fr':>12}")
    for name, v in res["tags"].items():
        if "tag_us" in v:
            print(
                f"  {name:<38} {v['tag_us']:8.2f} {v['verify_us']:10.2f} "
                f"{v['tag_ms_per_frame']:10.3f} {v['verify_ms_per_frame']:12.3f}"
            )
        elif "derive_us" in v:
            print(f"  {name:<38} {v['derive_us']:8.2f} (once per run and direction)")
    print(f"\nruntime {res['runtime_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--symbol-size",
        type=int,
        default=1408,
        help="symbol (segment payload) bytes, a multiple of 8 (default 1408)",
    )
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (~1 s)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON ('-' = stdout)")
    ap.add_argument("--seed", type=int, default=6330)
    args = ap.parse_args(argv)
    if args.symbol_size % 8 or not 64 <= args.symbol_size <= 65000:
        ap.error("--symbol-size must be a multiple of 8 in 64..65000 (RaptorQ alignment 8)")
    ops, batches = (2, 3) if args.quick else (24, 7)
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    t = args.symbol_size
    frame, label = frame_bytes(max(KS) * t, args.seed)
    k_big = max(KS)
    dpf = k_big + math.ceil(k_big * REPAIR_FRACTIONS[0])
    res: dict[str, Any] = {
        "machine": machine(),
        "symbol_size": t,
        "frame": label,
        "datagrams_per_frame": dpf,
        "fec": {},
    }
    for lib, fn in (("raptorq", bench_raptorq), ("zfec", bench_zfec)):
        try:
            res["fec"][lib] = fn(frame, t, ops, batches, rng)
        except ImportError:
            res["fec"][lib] = {"available": False}
    res["checksums"] = bench_checksums(frame[:360_000], ops, batches)
    res["tags"] = bench_tags(t, dpf, ops, batches)
    res["runtime_s"] = time.monotonic() - t0
    if args.json == "-":
        json.dump(res, sys.stdout, indent=2)
        print()
    else:
        print_table(res)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
