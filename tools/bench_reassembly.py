#!/usr/bin/env python3
"""Decode + reassembly throughput against a bare unpack-and-copy loop (issue #2 item 8).

Real 1080p-size frames (``../shared/data/fox_1080x1920_420.mjpeg``, ~360 KB each) are cut
into protocol v2 source symbols of ``--max-payload`` (1400, the symbol size T, a multiple of 8)
bytes with the codec's 48-byte symbol header (``encode_symbol_header``; CRC-32C of the frame,
FEC scheme 1 with ``--repair`` (0) planned repair symbols per frame from ``fec.FrameEncoder``),
and every datagram is built as ``bytes`` before any timing. With ``--repair`` > 0 and
``--lose`` N, source symbol N of every frame is left out, so every frame is decoded (the
FEC path). Then, in the same process, alternating for ``--rounds`` rounds:

* **A** (mcastcam): a fresh :class:`Reassembler`; for every datagram ``receive_datagram(d, addr,
  now)`` and drain ``next_event()`` (what the receiver shell does per datagram);
* **B** (bare): for every datagram ``struct.unpack_from`` of the 48-byte header and
  ``buf[off:off + n] = d[48:]`` (offset = esi · T) into one preallocated ``bytearray``: the
  floor any Python reassembly costs.

Each pass is timed with ``time.perf_counter_ns`` (wall) and ``time.process_time_ns`` (CPU);
the median of the rounds is reported as datagrams/s and MB/s (10**6 bytes of UDP payload, i.e.
header + fragment payload) and as the ratio A/B. Before timing, pass A is checked to complete
every frame byte-identical to the source frame. Single-threaded: it measures one core.

Targets (issue #2): A >= 300,000 datagrams/s and A >= 50 % of B.

Usage: ``python tools/bench_reassembly.py [--rounds 7] [--frames 50] [--json out.json]
[--profile]``
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.util
import json
import os
import platform
import pstats
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mcastcam.protocol.codec import encode_symbol_header  # noqa: E402
from mcastcam.protocol.events import FrameCompleted  # noqa: E402
from mcastcam.protocol.fec import FrameEncoder, source_symbol_count  # noqa: E402
from mcastcam.protocol.integrity import crc32c  # noqa: E402
from mcastcam.protocol.reassembly import Reassembler  # noqa: E402
from mcastcam.protocol.wire import FecScheme, Kind  # noqa: E402
from mcastcam.sender.sources.file import split_mjpeg  # noqa: E402

DEFAULT_FILE = ROOT.parent / "shared" / "data" / "fox_1080x1920_420.mjpeg"
TARGET_DGRAMS_PER_S = 300_000
TARGET_RATIO = 0.5
ADDR = ("127.0.0.1", 40000)


def build_datagrams(
    frames: list[bytes], max_payload: int, repair: int = 0, lose: int | None = None
) -> list[bytes]:
    """Every symbol of every frame, in order, as one ``bytes`` datagram each.

    ``repair`` planned repair symbols per frame follow its source symbols; source symbol
    ``lose`` of every frame is left out (its sequence number too: counted as lost).
    """
    out: list[bytes] = []
    seq = 0
    t = max_payload
    for frame_id, frame in enumerate(frames):
        k = source_symbol_count(len(frame), t)
        r = min(repair, k)
        crc = crc32c(frame)
        payloads: list[bytes] = [frame[i * t : (i + 1) * t] for i in range(k)]
        if r:
            payloads += FrameEncoder(frame, t, max_repair=r).repair(k, r)
        for esi, payload in enumerate(payloads):
            if esi != lose:
                header = encode_symbol_header(
                    Kind.SOURCE if esi < k else Kind.REPAIR,
                    0x1234ABCD,
                    seq,
                    frame_id,
                    esi,
                    t,
                    len(frame),
                    crc,
                    1_700_000_000_000_000_000 + frame_id,
                    FecScheme.RAPTORQ if repair else FecScheme.NONE,
                    r,
                    0x5EED,
                )
                out.append(header + payload)
            seq += 1
    return out


def make_pass_mcastcam(cls: type[Reassembler]) -> Callable[[list[bytes]], int]:
    def pass_mcastcam(datagrams: list[bytes]) -> int:
        """Decode and reassemble every datagram; returns the events drained."""
        return _pass(cls(), datagrams)

    return pass_mcastcam


def _pass(r: Reassembler, datagrams: list[bytes]) -> int:
    receive, next_event = r.receive_datagram, r.next_event
    addr = ADDR
    now = 0.0
    done = 0
    for d in datagrams:
        receive(d, addr, now)
        while next_event() is not None:
            done += 1
    return done


def make_pass_bare(max_frame_len: int) -> Callable[[list[bytes]], int]:
    buf = bytearray(max_frame_len)
    unpack = struct.Struct("!HBBHIIIIHIIQBBHI").unpack_from

    def pass_bare(datagrams: list[bytes]) -> int:
        """Unpack the header and copy the payload into place; returns the datagrams done."""
        n = 0
        for d in datagrams:
            h = unpack(d)
            off = h[7] * h[8]
            buf[off : off + len(d) - 48] = d[48:]
            n += 1
        return n

    return pass_bare


def timed(fn: Callable[[list[bytes]], int], datagrams: list[bytes], passes: int) -> tuple[int, int]:
    """(wall ns, CPU ns) of ``passes`` passes (each mcastcam pass uses a fresh reassembler)."""
    gc.collect()
    cpu0 = time.process_time_ns()
    t0 = time.perf_counter_ns()
    for _ in range(passes):
        fn(datagrams)
    t1 = time.perf_counter_ns()
    cpu1 = time.process_time_ns()
    return t1 - t0, cpu1 - cpu0


def check(frames: list[bytes], datagrams: list[bytes], cls: type[Reassembler]) -> None:
    """Pass A must deliver every frame, byte for byte, in order."""
    r = cls()
    got: list[bytes] = []
    for d in datagrams:
        r.receive_datagram(d, ADDR, 0.0)
        while (ev := r.next_event()) is not None:
            if type(ev).__name__ == "FrameCompleted":  # also a candidate module's class
                got.append(bytes(cast(FrameCompleted, ev).frame.jpeg))
    if got != frames:
        raise SystemExit(
            f"reassembly check failed: {len(got)} of {len(frames)} frames, or bytes differ"
        )


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }


def load_candidate(path: Path) -> type[Reassembler]:
    """The ``Reassembler`` class of a modified copy of ``mcastcam/protocol/reassembly.py``."""
    spec = importlib.util.spec_from_file_location("_candidate_reassembly", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    cls: type[Reassembler] = module.Reassembler
    return cls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help="raw MJPEG recording")
    p.add_argument("--frames", type=int, default=0, help="use only the first N frames (0: all)")
    p.add_argument("--max-payload", type=int, default=1400, help="symbol size T, bytes")
    p.add_argument("--repair", type=int, default=0, help="planned repair symbols per frame")
    p.add_argument(
        "--lose", type=int, default=None, help="leave out this source symbol of every frame"
    )
    p.add_argument("--rounds", type=int, default=7, help="A/B rounds (median reported)")
    p.add_argument("--passes", type=int, default=5, help="passes over all datagrams per timing")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--profile", action="store_true", help="cProfile one pass of A afterwards")
    p.add_argument(
        "--candidate",
        type=Path,
        help="a modified copy of reassembly.py: its Reassembler is timed too, as a third loop",
    )
    args = p.parse_args(argv)

    if not args.file.is_file():
        print(f"SKIP: {args.file} is absent (real recordings live in ../shared/data)")
        return 0
    frames, _ = split_mjpeg(args.file.read_bytes(), args.file.name)
    if args.frames:
        frames = frames[: args.frames]
    datagrams = build_datagrams(frames, args.max_payload, args.repair, args.lose)
    loops: dict[str, Callable[[list[bytes]], int]] = {"mcastcam": make_pass_mcastcam(Reassembler)}
    check(frames, datagrams, Reassembler)
    if args.candidate:
        cls = load_candidate(args.candidate)
        check(frames, datagrams, cls)
        loops["candidate"] = make_pass_mcastcam(cls)
    total_bytes = sum(map(len, datagrams))  # one pass
    n = len(datagrams) * args.passes  # datagrams per timing
    loops["bare"] = make_pass_bare(max(map(len, frames)))

    samples: dict[str, list[tuple[int, int]]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name, loop in loops.items():
            samples[name].append(timed(loop, datagrams, args.passes))

    results: dict[str, Any] = {}
    for name, runs in samples.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        results[name] = {
            "median_wall_s": wall / 1e9,
            "median_cpu_s": cpu / 1e9,
            "datagrams_per_s": n / (wall / 1e9),
            "mb_per_s": total_bytes * args.passes / 1e6 / (wall / 1e9),
            "ns_per_datagram": wall / n,
            "cpu_ns_per_datagram": cpu / n,
            "wall_s_each_round": [w / 1e9 for w, _ in runs],
        }
    a, b = results["mcastcam"], results["bare"]
    ratio = a["datagrams_per_s"] / b["datagrams_per_s"]
    if "candidate" in results:
        c = results["candidate"]
        c["ratio_to_bare"] = c["datagrams_per_s"] / b["datagrams_per_s"]
    meets = a["datagrams_per_s"] >= TARGET_DGRAMS_PER_S and ratio >= TARGET_RATIO
    info = machine()
    print(
        f"{info['cpu']}, {info['nproc']} CPUs, {info['implementation']} {info['python']}; "
        f"{len(frames)} frames of {args.file.name} (mean {sum(map(len, frames)) // len(frames)} B)"
        f" -> {len(datagrams)} datagrams ({total_bytes} B), max payload {args.max_payload} B; "
        f"{args.rounds} rounds A/B of {args.passes} passes each, median"
    )
    print(f"{'loop':<10} {'datagrams/s':>12} {'MB/s':>8} {'ns/dgram':>9} {'CPU ns/dgram':>13}")
    for name, res in results.items():
        print(
            f"{name:<10} {res['datagrams_per_s']:>12,.0f} {res['mb_per_s']:>8.1f} "
            f"{res['ns_per_datagram']:>9.0f} {res['cpu_ns_per_datagram']:>13.0f}"
        )
    if "candidate" in results:
        print(f"candidate {args.candidate}: {results['candidate']['ratio_to_bare']:.3f} of bare")
    print(
        f"RESULT datagrams_per_s={a['datagrams_per_s']:.0f} mb_per_s={a['mb_per_s']:.1f} "
        f"bare_datagrams_per_s={b['datagrams_per_s']:.0f} ratio={ratio:.3f} "
        f"target={'met' if meets else 'MISSED'} (>= {TARGET_DGRAMS_PER_S} datagrams/s and "
        f">= {TARGET_RATIO:.0%} of bare)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                    "file": args.file.name,
                    "frames": len(frames),
                    "datagrams": len(datagrams),
                    "bytes": total_bytes,
                    "passes": args.passes,
                    "max_payload": args.max_payload,
                    "rounds": args.rounds,
                    "results": results,
                    "ratio": ratio,
                    "targets": {"datagrams_per_s": TARGET_DGRAMS_PER_S, "ratio": TARGET_RATIO},
                    "target_met": meets,
                },
                indent=2,
            )
        )
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(loops["mcastcam"], datagrams)
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
