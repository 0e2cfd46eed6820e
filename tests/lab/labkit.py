"""Helpers for the LAN-in-a-box tests: mcastcam CLIs and real clients inside lab namespaces.

Every process here runs inside a namespace of a :class:`tools.netlab.Lab` (a bridge with no
uplink), so no datagram of these tests can leave the machine. The sender and the receivers are
the real programs (``python -m mcastcam.sender.cli`` / ``mcastcam.receiver.cli`` with this
interpreter); clients are ``curl`` run in a namespace. Every wait is bounded in time and in
iterations; every process is stopped (SIGTERM, then SIGKILL) by :func:`stop`, and the lab kills
whatever is left when it closes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import naive_split

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "mcastcam" / "data" / "sample_webcam_640x480.mjpeg"
GROUP_ADDR = "239.255.77.1"
PORT = 5004
GROUP = f"{GROUP_ADDR}:{PORT}"
HTTP_PORT = 8080
MTU = 1500
MAX_PAYLOAD = (MTU - 20 - 8 - 48) // 8 * 8  # symbol size T, bytes (docs/protocol.md §10)
BOUNDARY = b"--boundarydonotcross\r\n"

Lab = Any
Host = Any


def datagrams_per_frame(frame_len: int, max_payload: int = MAX_PAYLOAD) -> int:
    """Fragments of a frame of ``frame_len`` bytes: ``ceil(frame_len / max_payload)``."""
    return max(1, math.ceil(frame_len / max_payload))


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``cond`` until it returns something truthy (returned), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / step) + 2):
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            break
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
    """Send ``sig`` to ``proc``'s process group, wait, SIGKILL if needed; returns the status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5.0)
    return proc.returncode


def output(proc: subprocess.Popen[str]) -> str:
    """The end of what an mcastcam process wrote on stderr (its log file), for messages."""
    path = getattr(proc, "log_path", None)
    with contextlib.suppress(OSError):
        return Path(path).read_text(errors="replace")[-3000:] if path else ""
    return ""


def parse_multipart(body: bytes) -> list[bytes]:
    """Frames of an mjpg-streamer multipart body (parts cut by their Content-Length).

    A torn last part (the client stopped mid-frame) is left out.
    """
    frames = []
    pos = 0
    for _ in range(len(body) // len(BOUNDARY) + 1):
        start = body.find(BOUNDARY, pos)
        if start < 0:
            break
        head_end = body.find(b"\r\n\r\n", start)
        if head_end < 0:
            break
        headers = body[start + len(BOUNDARY) : head_end].decode("latin-1").split("\r\n")
        length = next(
            (int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length")),
            None,
        )
        if length is None or head_end + 4 + length > len(body):
            break
        frames.append(body[head_end + 4 : head_end + 4 + length])
        pos = head_end + 4 + length
    return frames


def source_positions(got: Sequence[bytes], source: Sequence[bytes]) -> list[int]:
    """Index in ``source`` of each frame of ``got`` (each must be byte-identical to one).

    Frames are matched in order: each one is looked up after the previous match, so a
    recording with repeated frames still maps to increasing positions.
    """
    positions: list[int] = []
    nxt = 0
    for n, frame in enumerate(got):
        for i in range(nxt, len(source)):
            if source[i] == frame:
                positions.append(i)
                nxt = i + 1
                break
        else:
            known = frame in source
            raise AssertionError(
                f"served frame #{n} ({len(frame)} bytes) "
                + ("is out of order" if known else "is not byte-identical to any source frame")
            )
    return positions


def load_frames(path: Path) -> list[bytes]:
    """The frames of a raw MJPEG file (the naive FFD8..FFD9 split, the independent oracle)."""
    return naive_split(path.read_bytes())


# ------------------------------------------------------------------------ processes


LOG_DIR = [Path("/tmp")]
"""Where process logs go; tests/lab/conftest.py points it at each test's ``tmp_path``."""


def mcastcam(host: Host, program: str, *argv: str) -> subprocess.Popen[str]:
    """Start ``python -m mcastcam.<program>.cli argv...`` in ``host``'s namespace.

    stderr goes to a log file (``proc.log_path``; a pipe nobody reads could fill and block).
    """
    log_path = LOG_DIR[0] / f"{host.namespace}-{program}-{time.monotonic_ns()}.log"
    with log_path.open("w") as log:
        proc: subprocess.Popen[str] = host.popen(
            [sys.executable, "-m", f"mcastcam.{program}.cli", *argv],
            cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def curl(
    host: Host, url: str, *extra: str, timeout: float = 10.0
) -> subprocess.CompletedProcess[str]:
    """``curl -s`` run in ``host``'s namespace (text output)."""
    return host.run(  # type: ignore[no-any-return]
        ["curl", "-s", "--max-time", str(timeout), *extra, url], check=False, timeout=timeout + 5
    )


@dataclass
class Receiver:
    """An ``mcastcam-recv`` process on ``host`` serving HTTP on ``host.address:port``."""

    host: Host
    proc: subprocess.Popen[str]
    port: int = HTTP_PORT
    clients: list[tuple[subprocess.Popen[str], Path]] = field(default_factory=list)

    def url(self, path: str) -> str:
        """``http://<host address>:<port><path>``."""
        return f"http://{self.host.address}:{self.port}{path}"

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        """``GET /status`` (from the receiver's own namespace), parsed."""
        done = curl(self.host, self.url("/status"), "--fail", timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(
                f"/status on h{self.host.index} failed: curl exit {done.returncode}; "
                f"receiver: {output(self.proc) if self.proc.poll() is not None else 'running'}"
            )
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def try_status(self) -> dict[str, Any] | None:
        """``/status``, or ``None`` while the server does not answer yet."""
        if self.proc.poll() is not None:
            raise AssertionError(f"receiver on h{self.host.index} exited: {output(self.proc)}")
        done = curl(self.host, self.url("/status"), "--fail", timeout=2.0)
        return json.loads(done.stdout) if done.returncode == 0 else None  # type: ignore[no-any-return]

    def http_code(self, path: str, body_to: Path | None = None, timeout: float = 5.0) -> int:
        """Status code of ``GET path`` (0 when the request failed); the body goes to ``body_to``."""
        done = curl(self.host, self.url(path), "-o", str(body_to or os.devnull),
                    "-w", "%{http_code}", timeout=timeout)  # fmt: skip
        return int(done.stdout or 0) if done.stdout.strip().isdigit() else 0

    def stream(self, out: Path, *, at: Host | None = None) -> subprocess.Popen[str]:
        """Start ``curl -N`` reading ``/stream`` into ``out`` (from ``at``, default this host)."""
        where = at or self.host
        proc: subprocess.Popen[str] = where.popen(
            ["curl", "-s", "-N", "--max-time", "100", "-o", str(out), self.url("/stream")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.clients.append((proc, out))
        return proc

    def followed(self, st: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The ``streams[]`` entry of the followed stream, if any."""
        st = st if st is not None else self.status()
        return next((s for s in st["streams"] if s["followed"]), None)


def start_receivers(lab: Lab, hosts: Sequence[int], *extra: str,
                    group: str | None = GROUP) -> list[Receiver]:  # fmt: skip
    """Start ``mcastcam-recv`` on each host and wait until every ``/status`` answers."""
    mode = ["--group", group] if group else []
    receivers = [
        Receiver(lab.host(i), mcastcam(lab.host(i), "receiver", "--interface", "eth0", *mode,
                 "--http", f"0.0.0.0:{HTTP_PORT}", "--quiet", *extra))
        for i in hosts
    ]  # fmt: skip
    for r in receivers:
        wait_until(r.try_status, 20.0, f"mcastcam-recv on h{r.host.index} to answer /status")
    return receivers


def connect_clients(receivers: Sequence[Receiver], tmp: Path, per_receiver: int = 1) -> None:
    """Start ``/stream`` readers on each receiver and wait until its hub counts them."""
    for r in receivers:
        for n in range(per_receiver):
            r.stream(tmp / f"h{r.host.index}-client{n}.multipart")
    for r in receivers:
        wait_until(lambda r=r: r.status()["clients_count"] == per_receiver, 10.0,
                   f"{per_receiver} stream client(s) on h{r.host.index}")  # fmt: skip


def start_sender(lab: Lab, i: int, source: Path | str, *extra: str,
                 group: str | None = GROUP) -> subprocess.Popen[str]:  # fmt: skip
    """Start ``mcastcam-send --source SOURCE --interface eth0 --group GROUP extra...`` on h``i``."""
    mode = ["--group", group] if group else []
    return mcastcam(lab.host(i), "sender", "--source", str(source), "--interface", "eth0",
                    *mode, "--quiet", *extra)  # fmt: skip


def finish_clients(receivers: Sequence[Receiver]) -> dict[int, list[list[bytes]]]:
    """SIGTERM each receiver (it closes its streams, so curl ends), then read what curl got.

    Returns host index -> one frame list per client.
    """
    got: dict[int, list[list[bytes]]] = {}
    for r in receivers:
        code = stop(r.proc, timeout=10.0)
        assert code == 0, f"mcastcam-recv on h{r.host.index} exited {code}: {output(r.proc)}"
        frames = []
        for proc, path in r.clients:
            stop(proc, timeout=5.0)  # normally already gone: the server closed the stream
            frames.append(parse_multipart(path.read_bytes()) if path.exists() else [])
        got[r.host.index] = frames
    return got


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (``VmRSS`` in ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")
