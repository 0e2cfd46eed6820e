"""tools/lossy_relay.py as a real subprocess between two UDP sockets on loopback.

The test sends numbered datagrams (paced, so the loopback socket buffers never overflow) to
the relay, which forwards them to the test's receiving socket. With a seed, the relay's loss
pattern is the one ``tools/lossmodel.py`` gives for that seed, so the received set is checked
exactly, and its loss and bursts against the model's theory. Every run is bounded by
``--max-datagrams`` and ``--duration``, and the relay must exit and print its JSON counters.
Only 127.0.0.1 and multicast pinned to ``lo`` with TTL 0 are used.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from mcastcam.net import open_multicast_receiver, resolve_interface
from tests.tools.toolkit import TOOLS, load_tool

RELAY = TOOLS / "lossy_relay.py"
COUNT = 2000
CHUNK = 100  # datagrams sent back to back (~100 KB of buffer), then wait for them
CHUNK_WAIT = 2.0  # seconds
RUN_BOUND = 20.0  # seconds a relay run may take in these tests (it needs well under 2)


lm = load_tool("lossmodel")


@dataclass
class Run:
    counters: dict[str, Any]
    received: list[int]  # sequence numbers in arrival order
    seconds: float


@contextmanager
def relay(*args: str) -> Iterator[tuple[subprocess.Popen[str], tuple[str, int]]]:
    """Start the relay; yield it and the address it listens on (from its stderr line)."""
    proc = subprocess.Popen(
        [sys.executable, str(RELAY), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 10.0)
        line = proc.stderr.readline() if ready else ""
        m = re.search(r"listening on ([\d.]+):(\d+)", line)
        assert m is not None, f"no readiness line from the relay: {line!r}"
        yield proc, (m.group(1), int(m.group(2)))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def unicast_sink() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket, into: list[int]) -> None:
    while True:
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            return
        into.append(int(data.split(b" ", 1)[0]))


def run_through(
    sink: socket.socket,
    sink_port: int,
    *relay_args: str,
    expected: list[int],
    to: str | None = None,
    listen: str = "127.0.0.1:0",
) -> Run:
    """Send ``COUNT`` numbered datagrams through a relay to ``sink``; collect both ends.

    Closed loop: after each ``CHUNK`` the sender waits (at most ``CHUNK_WAIT`` seconds) until
    the sink holds all but one (a reordered datagram may be held back) of the ``expected``
    survivors sent so far, so a relay that the scheduler stalls never overflows its buffer.
    """
    received: list[int] = []
    start = time.monotonic()
    args = [
        "--listen",
        listen,
        "--to",
        to or f"127.0.0.1:{sink_port}",
        "--max-datagrams",
        str(COUNT),
        "--duration",
        str(RUN_BOUND - 5),
        *relay_args,
    ]
    with (
        relay(*args) as (proc, addr),
        closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as tx,
    ):
        if addr[0].startswith("239."):
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        pad = b"." * 200
        for seq in range(COUNT):
            tx.sendto(b"%d " % seq + pad, addr)
            if seq % CHUNK == CHUNK - 1:
                want = bisect.bisect_right(expected, seq) - 1
                until = time.monotonic() + CHUNK_WAIT
                while len(set(received)) < want and time.monotonic() < until:
                    select.select([sink], [], [], 0.01)
                    drain(sink, received)
        out, err = proc.communicate(timeout=RUN_BOUND)
        assert proc.returncode == 0, err
    time.sleep(0.05)  # the last forwarded datagrams are in the sink's buffer already
    drain(sink, received)
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    return Run(json.loads(lines[0]), received, time.monotonic() - start)


def gaps(received: list[int], count: int) -> Any:
    """Loss and burst counts seen at the sink (received sequence numbers, any order)."""
    got = set(received)
    return lm.burst_stats(seq not in got for seq in range(count))


@pytest.fixture
def sink() -> Iterator[tuple[socket.socket, int]]:
    with closing(unicast_sink()) as sock:
        yield sock, sock.getsockname()[1]


def test_gilbert_elliott_relay_drops_the_models_pattern_in_bursts(
    sink: tuple[socket.socket, int],
) -> None:
    sock, port = sink
    avg, burst, seed = 0.05, 4.0, 7
    expected = lm.apply_loss(lm.GilbertElliott.from_loss(avg, burst, seed=seed), range(COUNT))
    run = run_through(
        sock, port, *f"--loss {avg} --burst {burst} --seed {seed}".split(), expected=expected
    )
    c = run.counters
    assert run.seconds < RUN_BOUND
    assert c["exit"] == "max-datagrams"
    assert c["received"] == COUNT  # loopback, paced: the relay saw every datagram
    assert c["forwarded"] + c["dropped"] == COUNT
    assert (c["overflow"], c["send_errors"], c["duplicated"], c["reordered"]) == (0, 0, 0, 0)
    assert c["model"]["kind"] == "gilbert-elliott"
    # Exactly the seeded model's survivors, in order, none twice.
    assert run.received == expected
    seen = gaps(run.received, COUNT)
    assert (seen.lost, seen.bursts, seen.max_burst) == (c["dropped"], c["bursts"], c["max_burst"])
    assert seen.mean_burst == pytest.approx(c["mean_burst"], abs=1e-3)
    # Loss within 4 sigma of the model (Markov-correlated variance, see test_lossmodel).
    r, p = 1 / burst, avg / (burst * (1 - avg))
    lam = 1 - p - r
    sigma = math.sqrt(avg * (1 - avg) * (1 + lam) / ((1 - lam) * COUNT))
    assert abs(seen.loss_rate - avg) <= 4 * sigma, seen.as_dict()
    # Bursts present: far above independent loss's 1 / (1 - avg) ≈ 1.05.
    assert seen.mean_burst >= 2.0, seen.as_dict()
    assert seen.max_burst >= 4


def test_bernoulli_relay_drops_independently(sink: tuple[socket.socket, int]) -> None:
    sock, port = sink
    expected = lm.apply_loss(lm.Bernoulli(0.05, seed=3), range(COUNT))
    run = run_through(sock, port, "--loss", "0.05", "--bernoulli", "--seed", "3", expected=expected)
    c = run.counters
    assert c["received"] == COUNT and c["model"]["kind"] == "bernoulli"
    assert run.received == expected
    seen = gaps(run.received, COUNT)
    sigma = math.sqrt(0.05 * 0.95 / COUNT)
    assert abs(seen.loss_rate - 0.05) <= 4 * sigma
    assert seen.mean_burst < 1.6  # 1/(1 - 0.05) ≈ 1.05 expected


def test_duplicates_and_reordering_without_loss(sink: tuple[socket.socket, int]) -> None:
    sock, port = sink
    run = run_through(
        sock, port, "--dup", "0.05", "--reorder", "0.05", "--seed", "5", expected=list(range(COUNT))
    )
    c = run.counters
    assert c["received"] == COUNT and c["dropped"] == 0 and c["bursts"] == 0
    assert set(run.received) == set(range(COUNT))  # nothing lost
    assert c["duplicated"] > 0 and c["reordered"] > 0
    assert len(run.received) == COUNT + c["duplicated"] == c["forwarded"]
    out_of_order = sum(1 for a, b in itertools.pairwise(run.received) if b < a)
    assert out_of_order >= c["reordered"] // 2 > 0


@pytest.mark.multicast
def test_multicast_on_lo_with_ttl_0() -> None:
    iface = resolve_interface("lo")
    with closing(open_multicast_receiver("239.255.71.2", 0, iface, rcvbuf=4 << 20)) as sock:
        port = sock.getsockname()[1]
        expected = lm.apply_loss(lm.GilbertElliott.from_loss(0.02, 3.0, seed=2), range(COUNT))
        run = run_through(
            sock,
            port,
            "--loss",
            "0.02",
            "--burst",
            "3",
            "--seed",
            "2",
            "--listen-interface",
            "lo",
            "--interface",
            "lo",
            "--ttl",
            "0",
            expected=expected,
            listen="239.255.71.1:0",
            to=f"239.255.71.2:{port}",
        )
    assert run.counters["received"] == COUNT
    assert run.received == expected


def test_idle_and_sigterm_stop_the_relay_with_its_json() -> None:
    with (
        relay(
            "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--idle", "0.2", "--duration", "10"
        ) as (proc, addr),
        closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as tx,
    ):
        tx.sendto(b"0 hello", addr)
        out, _ = proc.communicate(timeout=RUN_BOUND)
    counters = json.loads(out)
    assert counters["exit"] == "idle" and counters["received"] == 1
    assert counters["seconds"] < 5

    with relay("--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--duration", "30") as (
        proc,
        _addr,
    ):
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=RUN_BOUND)
        assert time.monotonic() - start < 5
    assert proc.returncode == 0
    assert json.loads(out)["exit"] == "signal SIGTERM"


def test_duration_bounds_a_silent_run() -> None:
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(RELAY),
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--duration",
            "0.3",
        ],
        capture_output=True,
        text=True,
        timeout=RUN_BOUND,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["exit"] == "duration"
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--to", "10.1.2.3:5000"], ["--to 10.1.2.3:5000", "not a loopback"]),
        (["--to", "192.168.1.10:5000"], ["192.168.1.10", "not a loopback"]),
        (["--to", "239.255.0.1:5000", "--interface", "eth0"], ["multicast", "eth0"]),
        (["--to", "239.255.0.1:5000", "--ttl", "1"], ["--ttl 1"]),
        (
            [
                "--to",
                "127.0.0.1:5000",
                "--listen",
                "239.255.0.1:5001",
                "--listen-interface",
                "eth0",
            ],
            ["--listen 239.255.0.1:5001", "eth0"],
        ),
        (["--to", "127.0.0.1:5000", "--listen", "0.0.0.0:5001"], ["--listen 0.0.0.0:5001"]),
        (["--to", "127.0.0.1:5000", "--netns-ok"], ["--netns-ok refused"]),
    ],
    ids=["private", "lan", "multicast-eth0", "ttl-1", "join-eth0", "listen-any", "netns-ok"],
)
def test_refuses_what_could_leave_this_host(args: list[str], words: list[str]) -> None:
    argv = ["--listen", "127.0.0.1:0", *args]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(RELAY), *argv],
        capture_output=True,
        text=True,
        timeout=RUN_BOUND,
        check=False,
    )
    assert time.monotonic() - start < 10
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lossy_relay: ") and "refused" in lines[0]
    for word in words:
        assert word in lines[0]
