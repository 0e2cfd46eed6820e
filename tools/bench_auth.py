#!/usr/bin/env python3
"""Authentication cost through the pure cores (issue #12; docs/benchmarks.md).

The median frame of ``../shared/data/fox_1080x1920_420.mjpeg`` (1080×1920, ≈ 365 kB) goes
through a :class:`SenderSession` (``--fec off`` by default, T from a 1,500-byte MTU, the
datagram pieces joined to ``bytes`` as the kernel would) and every datagram into a
:class:`Reassembler` (with a :class:`Verifier` when keyed), in-process, modes alternating
per round: ``nokey``, ``key`` (AES-128-GCM tags and frame AEAD), ``encrypt`` (``--encrypt``).
CPU (``time.process_time_ns``) per frame is measured separately for the sender (sealing,
fragmenting, tagging, joining) and the receiver (each datagram copied into one reused buffer
and handed over as a ``memoryview``, as the receiver's driver does; verification,
reassembly, frame AEAD, CRC);
each round checks that every frame came out byte-identical. Reports the median and range
over ``--rounds`` of ms/frame and the extra over ``nokey`` in %.

Usage: ``python tools/bench_auth.py [--frames 60] [--rounds 7] [--fec off|auto|PCT] [--json F]``
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mcastcam.protocol.auth import MasterKey  # noqa: E402
from mcastcam.protocol.events import FrameCompleted  # noqa: E402
from mcastcam.protocol.fragmenter import symbol_size_for_mtu  # noqa: E402
from mcastcam.protocol.frame import CapturedFrame  # noqa: E402
from mcastcam.protocol.reassembly import Reassembler  # noqa: E402
from mcastcam.protocol.repair import FecMode  # noqa: E402
from mcastcam.protocol.sender import SenderConfig, SenderSession  # noqa: E402
from mcastcam.protocol.trust import Sealer, Verifier  # noqa: E402
from mcastcam.sender.sources.file import split_mjpeg  # noqa: E402

DEFAULT_FILE = ROOT.parent / "shared" / "data" / "fox_1080x1920_420.mjpeg"
KEY = MasterKey(1, bytes(range(32)))
SID, RUN = 0x1234_5678, 0x9ABC
MODES = ("nokey", "key", "encrypt")


def sender_session(
    mode: str, fec: FecMode, now: float = 0.0, stream_id: int = SID
) -> SenderSession:
    """A sender core for ``mode`` (``nokey``, ``key``, ``encrypt``): T from a 1,500-byte MTU."""
    keyed = mode != "nokey"
    cfg = SenderConfig(
        stream_id=stream_id,
        name="bench",
        host="127.0.0.1",
        run_nonce=RUN,
        symbol_size=symbol_size_for_mtu(1500, auth=keyed),
        fec=fec,
        fps=30.0,
    )
    sealer = Sealer(KEY, stream_id, RUN, encrypt=mode == "encrypt") if keyed else None
    return SenderSession(cfg, now, seq=1, sealer=sealer)


def send_all(mode: str, jpeg: bytes, frames: int, fec: FecMode) -> tuple[list[bytes], int]:
    """The datagrams of ``frames`` copies of ``jpeg`` and the sender's CPU ns for them."""
    tx = sender_session(mode, fec)
    out: list[bytes] = []
    now = 0.0
    t0 = time.process_time_ns()
    for _ in range(frames):
        tx.queue_frame(CapturedFrame(jpeg, 0, 1), now)
        while True:
            out += [b"".join(parts) for parts in tx.datagrams_to_send(now)]
            if not tx.busy:
                break
            now += 0.0005
        now += 1 / 30
    return out, time.process_time_ns() - t0


def receive_all(mode: str, datagrams: list[bytes], jpeg: bytes, frames: int) -> int:
    """The receiver's CPU ns for ``datagrams``; checks every frame came out intact."""
    r = Reassembler(verifier=Verifier([KEY]) if mode != "nokey" else None)
    addr = ("127.0.0.1", 5000)
    got: list[FrameCompleted] = []
    receive, next_event = r.receive_datagram, r.next_event
    buf = bytearray(65536)  # one reused buffer, as the receiver's driver (recvfrom_into)
    view = memoryview(buf)
    t0 = time.process_time_ns()
    for i, d in enumerate(datagrams):
        n = len(d)
        buf[:n] = d
        receive(view[:n], addr, i * 1e-5)
        while (ev := next_event()) is not None:
            if isinstance(ev, FrameCompleted):
                got.append(ev)
    spent = time.process_time_ns() - t0
    if len(got) != frames or any(bytes(ev.frame.jpeg) != jpeg for ev in got):
        raise SystemExit(f"{mode}: {len(got)} of {frames} frames completed, or one differs")
    return spent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help="raw MJPEG recording")
    p.add_argument("--frames", type=int, default=60, help="frames per run")
    p.add_argument("--rounds", type=int, default=7, help="rounds (modes alternate)")
    p.add_argument("--fec", default="off", help="--fec of the sender: off, auto or PCT")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    frames, _ = split_mjpeg(args.file.read_bytes(), args.file.name)
    jpeg = sorted(frames, key=len)[len(frames) // 2]
    fec = FecMode.parse(args.fec)
    results: dict[str, dict[str, list[float]]] = {m: {"send": [], "recv": []} for m in MODES}
    for rnd in range(args.rounds):
        order = MODES if rnd % 2 == 0 else MODES[::-1]  # ABC CBA ...
        for mode in order:
            gc.collect()
            datagrams, send_ns = send_all(mode, jpeg, args.frames, fec)
            gc.collect()
            recv_ns = receive_all(mode, datagrams, jpeg, args.frames)
            results[mode]["send"].append(send_ns / args.frames / 1e6)
            results[mode]["recv"].append(recv_ns / args.frames / 1e6)
            if rnd == 0:
                per = len(datagrams) / args.frames
                print(f"{mode}: {per:.0f} datagrams per frame of {len(jpeg)} bytes")
    base = {side: statistics.median(results["nokey"][side]) for side in ("send", "recv")}
    summary: dict[str, dict[str, float]] = {}
    print(f"{args.rounds} rounds x {args.frames} frames, --fec {args.fec}; ms/frame median [range]")
    for mode in MODES:
        row = {}
        cells = []
        for side in ("send", "recv"):
            vals = results[mode][side]
            med = statistics.median(vals)
            row[side] = med
            row[f"{side}_min"], row[f"{side}_max"] = min(vals), max(vals)
            row[f"{side}_extra_pct"] = 100 * (med / base[side] - 1)
            cells.append(
                f"{side} {med:.3f} [{min(vals):.3f}-{max(vals):.3f}] "
                f"({row[f'{side}_extra_pct']:+.1f} %)"
            )
        summary[mode] = row
        print(f"  {mode:8s} " + "  ".join(cells))
    if args.json:
        args.json.write_text(json.dumps({"frame_bytes": len(jpeg), "fec": args.fec,
                                         "frames": args.frames, "modes": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
