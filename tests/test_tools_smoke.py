"""Smoke tests for tools/fuzz.py and tools/bench_reassembly.py, so they cannot rot.

Each tool runs as a real subprocess with tiny counts; the fuzzer's frame oracle is also
checked in-process (a corrupt frame must be caught, with a reproducer that replays).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from mcastcam.protocol.codec import encode_symbol_header
from mcastcam.protocol.events import FrameCompleted
from mcastcam.protocol.fec import source_symbol_count
from mcastcam.protocol.frame import Frame
from mcastcam.protocol.wire import Kind
from mcastcam.sender.sources.file import split_mjpeg
from tests.conftest import DataFiles

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=100, check=False
    )


def test_fuzz_runs_2000_inputs_clean(tmp_path: Path) -> None:
    out = tmp_path / "repro"
    proc = run_tool(str(TOOLS / "fuzz.py"), "--count", "2000", "--seed", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = re.search(
        r"RESULT inputs=(\d+) crashes=(\d+) corrupt_frames=(\d+) disagreements=(\d+) "
        r"bound_violations=(\d+) frames_verified=(\d+)",
        proc.stdout,
    )
    assert m is not None, proc.stdout
    inputs, crashes, corrupt, disagree, bound, verified = map(int, m.groups())
    assert (inputs, crashes, corrupt, disagree, bound) == (2000, 0, 0, 0, 0)
    assert verified > 0  # the oracle really compared completed frames
    assert "tracemalloc peak" in proc.stdout and "max RSS" in proc.stdout
    assert not out.exists()  # no failure, no reproducer


def test_fuzz_with_a_key_runs_clean_and_its_oracle_catches_forged_frames(
    tmp_path: Path,
) -> None:
    """--key: 3,000 inputs clean; the same inputs into a core without the key: forged frames."""
    fuzz = load_tool("fuzz")
    f = fuzz.Fuzzer(fuzz.parse_args(["--key", "--count", "3000", "--seed", "5",
                                     "--out", str(tmp_path), "--no-tracemalloc"]))
    assert f.run() == 0, dict(f.failures)
    assert f.counts["frames_verified"] > 0 and f.counts["keyed_replay"] > 0
    assert f.r.decode_errors["unauthenticated"] > 0
    blind = fuzz.Fuzzer(fuzz.parse_args(["--key", "--count", "3000", "--seed", "5",
                                         "--out", str(tmp_path), "--no-tracemalloc"]))
    blind.r = fuzz.Reassembler(blind.limits)  # no verifier: the hostile frames complete
    blind.new_reassembler = lambda: fuzz.Reassembler(blind.limits)
    assert blind.run() == 1 and blind.failures["corrupt_frame"] > 0


def test_fuzz_oracle_catches_a_corrupt_frame_and_the_reproducer_replays(tmp_path: Path) -> None:
    fuzz = load_tool("fuzz")
    f = fuzz.Fuzzer(fuzz.parse_args(["--count", "0", "--out", str(tmp_path)]))
    sent = b"\xff\xd8" + bytes(range(200)) + b"\xff\xd9"
    f.register(7, 9, 123, 3, sent)
    f.history.append((1.0, b"\x00" * 3))

    def completed(data: bytes, frame_id: int = 9) -> FrameCompleted:
        return FrameCompleted(Frame(memoryview(data).toreadonly(), frame_id, 123, 7, 1.0))

    f.verify(completed(sent))
    assert f.counts["frames_verified"] == 1 and not f.failures

    corrupt = bytearray(sent)
    corrupt[50] ^= 1
    f.verify(completed(bytes(corrupt)))
    f.verify(completed(sent, frame_id=10))  # never sent under that frame id
    assert f.failures["corrupt_frame"] == 2
    assert f.counts["frames_verified"] == 1

    # v2: a second content under the same header stays verifiable (their CRC-32Cs differ, so
    # no mixture of the two can complete); anything else under that header is still corrupt
    f.register(7, 9, 123, 3, bytes(corrupt))
    f.verify(completed(bytes(corrupt)))
    assert f.counts["frames_verified"] == 2 and f.failures["corrupt_frame"] == 2
    f.verify(completed(bytes(corrupt[::-1])))
    assert f.failures["corrupt_frame"] == 3
    # a mutated header may move known content under another header: unverifiable
    moved = encode_symbol_header(Kind.SOURCE, 7, 0, 11, 0, 256, len(sent), 0, 123, 0, 0, 1)
    f.taint(moved + sent)
    f.verify(completed(sent, frame_id=11))
    assert f.counts["frames_unverifiable"] == 1 and f.failures["corrupt_frame"] == 3

    files = sorted(tmp_path.glob("fuzz-corrupt_frame-*.json"))
    assert len(files) == 1  # both failures had input index 0: one file
    rec = json.loads(files[0].read_text())
    assert rec["kind"] == "corrupt_frame" and rec["history"] == [[1.0, "000000"]]
    assert fuzz.main(["--replay", str(files[0])]) == 0


def test_bench_runs_one_frame(data_files: DataFiles, tmp_path: Path) -> None:
    big = data_files / "synthetic_1080x1920_420.mjpeg"  # 1080p-size frames
    out = tmp_path / "bench.json"
    proc = run_tool(
        str(TOOLS / "bench_reassembly.py"),
        "--file",
        str(big),
        "--frames",
        "1",
        "--rounds",
        "1",
        "--passes",
        "1",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"RESULT datagrams_per_s=\d+ mb_per_s=[\d.]+ .*ratio=[\d.]+", proc.stdout)
    result = json.loads(out.read_text())
    first = split_mjpeg(big.read_bytes(), big.name)[0][0]
    count = source_symbol_count(len(first), 1400)  # T = 1400, no repair: k datagrams
    assert (result["frames"], result["datagrams"]) == (1, count)
    assert result["bytes"] == len(first) + 48 * count  # the v2 symbol header
    assert result["results"]["mcastcam"]["datagrams_per_s"] > 0


def test_bench_skips_clearly_without_the_recording(tmp_path: Path) -> None:
    proc = run_tool(str(TOOLS / "bench_reassembly.py"), "--file", str(tmp_path / "absent.mjpeg"))
    assert proc.returncode == 0
    assert proc.stdout.startswith("SKIP:") and "absent.mjpeg" in proc.stdout
