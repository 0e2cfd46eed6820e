"""Issue #12, HTTP and operations, through real sockets on loopback.

Malformed requests do not flood the log; a receiver with a low descriptor limit clamps
``--max-clients``, refuses connections past its budget instead of spinning in ``accept()``,
and recovers; HTTPS with a certificate made here; ``/status`` ``state`` and ``/snapshot``'s
frame-age bound; the status line's loss window; the loud default-group fallback.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mcastcam.receiver import cli
from mcastcam.receiver.fanout import FrameHub
from mcastcam.receiver.http import frame_age_bound
from mcastcam.receiver.ops import (
    FD_RESERVE,
    LossWindow,
    clamp_max_clients,
    fd_budget,
    load_tls,
)
from tests.conftest import DataFiles
from tests.receiver import helpers_http as H

REPO = Path(__file__).resolve().parents[2]
MALFORMED = [
    b"\x16\x03\x01\x00\x05hello\r\n\r\n",  # TLS on the plain port
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET /status HTTP/9.9\r\n\r\n",
    b"G\x00T / HTTP/1.1\r\n\r\n",
]


@pytest.fixture(autouse=True)
def _cli_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cli.main`` adds a root handler on the captured stderr: undone after each test."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- malformed requests -------------------------------------------------------------------


def test_1000_malformed_requests_log_a_few_lines_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def send(port: int, payload: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(H.LOOPBACK, port)
        writer.write(payload)
        try:
            return await asyncio.wait_for(reader.read(200), 10)
        finally:
            writer.close()

    async def main() -> list[bytes]:
        hub = FrameHub()
        async with H.http_server(hub) as server:
            replies: list[bytes] = []
            for i in range(0, 1000, 50):  # 20 rounds of 50 at once
                replies += await asyncio.gather(
                    *(send(server.port, MALFORMED[(i + k) % len(MALFORMED)]) for k in range(50))
                )
            code, _, body = await H.fetch(server.port, "/status")
            assert code == 200 and json.loads(body)["state"] == "offline"
            return replies

    with caplog.at_level(logging.INFO):
        replies = asyncio.run(main())
    assert len(replies) == 1000 and all(r.startswith(b"HTTP/1.") and b" 400 " in r[:20]
                                        for r in replies)
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) <= 3, [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records)
    assert any("1 malformed HTTP request(s) answered 400" in r.getMessage() for r in lines)
    total = sum(len(r.getMessage()) for r in caplog.records)
    assert total < 2000  # was 557 KB of tracebacks for 1,000 requests


def test_malformed_request_details_at_debug_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with H.http_server(FrameHub()) as server:
            reader, writer = await asyncio.open_connection(H.LOOPBACK, server.port)
            writer.write(MALFORMED[1])
            await asyncio.wait_for(reader.read(), 10)
            writer.close()

    with caplog.at_level(logging.DEBUG, logger="mcastcam.receiver.http"):
        asyncio.run(main())
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG
             and r.name == "mcastcam.receiver.http"]
    assert any("BadHttpMessage" in m and "127.0.0.1" in m for m in debug), debug
    assert all("\n" not in m for m in debug)


# -- descriptor limits --------------------------------------------------------------------


def _low_fd_limit(limit: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit // 2, limit))

    return apply


def _get(port: int, path: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_low_fd_limit_clamps_clients_refuses_past_budget_and_recovers(tmp_path: Path) -> None:
    """A receiver with a hard limit of 600 descriptors gets 400 idle connections at once."""
    port = _free_port()
    log_path = tmp_path / "recv.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcastcam.receiver.cli", "--interface", "lo", "--group",
             "239.255.77.3:18757", "--http", f"127.0.0.1:{port}", "--no-reports"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file,
            preexec_fn=_low_fd_limit(600),
        )
    conns: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert _get(port, "/status")[0] == 200
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        code, body = _get(port, "/status")
        assert json.loads(body)["max_clients"] == 600 - FD_RESERVE - 16  # clamped from 1000
        for _ in range(400):
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(2.0)
        # past the budget a request is answered at once: 503, never a hang
        code, body = _get(port, "/status")
        assert code == 503 and body == b"too many connections\n"
        assert proc.poll() is None
        for s in conns:
            s.close()
        conns.clear()
        deadline = time.monotonic() + 10
        while _get(port, "/status")[0] != 200:  # recovered once the connections are gone
            assert time.monotonic() < deadline, "the receiver did not recover"
            time.sleep(0.2)
    finally:
        for s in conns:
            s.close()
        proc.terminate()
        proc.wait(timeout=10)
    text = log_path.read_text()
    lines = text.splitlines()
    assert len(lines) <= 10, text
    assert "Traceback" not in text
    assert any(f"--max-clients 1000 lowered to {600 - FD_RESERVE - 16}" in line
               for line in lines), text
    assert any("refused" in line and "HTTP connection(s)" in line for line in lines), text


ACCEPT_FLOOD = """
import asyncio, logging, resource, sys
from mcastcam.receiver.ops import install_accept_error_handler
resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

async def main():
    install_accept_error_handler(asyncio.get_running_loop())
    held = []
    async def on_client(reader, writer):
        held.append(writer)  # keep every descriptor: accept() soon fails with EMFILE
    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(4.0)
    print("alive", len(held), flush=True)

asyncio.run(main())
"""


def test_accept_out_of_descriptors_logs_one_line_not_a_traceback_storm() -> None:
    proc = subprocess.Popen([sys.executable, "-c", ACCEPT_FLOOD], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(100)]
    out, err = proc.communicate(timeout=30)
    for s in conns:
        s.close()
    assert proc.returncode == 0 and out.startswith("alive"), err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err  # the first failure; later ones wait for the minute
    assert "could not accept 1 connection(s): EMFILE" in lines[0]


def test_fd_budget_and_clamp(caplog: pytest.LogCaptureFixture) -> None:
    assert fd_budget(1024) == 1024 - FD_RESERVE and fd_budget(10) == 1
    with caplog.at_level(logging.WARNING):
        assert clamp_max_clients(100, 65536) == 100
        assert not caplog.records
        assert clamp_max_clients(1000, 1024) == 1024 - FD_RESERVE - 16
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


# -- TLS ----------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_https_with_a_self_signed_certificate(tmp_path: Path, data_files: DataFiles) -> None:
    cert, key = _self_signed(tmp_path)
    frames = H.webcam_frames(data_files, 1)

    async def main() -> None:
        hub = FrameHub()
        async with H.http_server(hub, ssl_context=load_tls(str(cert), str(key))) as server:
            assert server.url.startswith("https://127.0.0.1:")
            hub.publish(H.served(frames[0], 3))
            client_ctx = ssl.create_default_context(cafile=str(cert))
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/snapshot", ssl=client_ctx) as r:
                    assert r.status == 200 and await r.read() == frames[0]
                # a client that does not trust the certificate is refused by TLS itself
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await session.get(f"{server.url}/status")
            if shutil.which("curl"):
                proc = await asyncio.create_subprocess_exec(
                    "curl", "-s", "--fail", "--max-time", "10", "--cacert", str(cert),
                    f"{server.url}/status", stdout=asyncio.subprocess.PIPE)
                out, _ = await proc.communicate()
                assert proc.returncode == 0 and json.loads(out)["state"] in ("live", "offline")
            # plain HTTP on the HTTPS port gets nothing useful, and no traceback storm
            reader, writer = await asyncio.open_connection(H.LOOPBACK, server.port)
            writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert b"200 OK" not in reply

    asyncio.run(main())


@pytest.mark.parametrize("which", ["missing", "garbage", "mismatch"])
def test_bad_tls_files_exit_2_with_one_line(which: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = _self_signed(tmp_path)
    if which == "missing":
        key = tmp_path / "nosuch.pem"
    elif which == "garbage":
        cert.write_text("not a certificate\n")
    else:
        other = tmp_path / "other"
        other.mkdir()
        key = _self_signed(other)[1]
    argv = ["--interface", "lo", "--group", "239.255.77.4:18758", "--http",
            f"127.0.0.1:{_free_port()}", "--tls-cert", str(cert), "--tls-key", str(key)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mcastcam-recv: error: --tls-"), err


def test_tls_options_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--interface", "lo", "--tls-cert", "x.pem"]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


# -- honest status ------------------------------------------------------------------------


def test_state_and_snapshot_frame_age_bound(data_files: DataFiles) -> None:
    frames = H.webcam_frames(data_files, 2)
    session: dict[str, Any] = {"online": True, "streams": [
        {"followed": True, "liveness": "alive", "fps": 30.0, "heartbeat_interval": 0.0}]}

    async def status(port: int) -> dict[str, Any]:
        code, _, body = await H.fetch(port, "/status")
        assert code == 200
        return json.loads(body)  # type: ignore[no-any-return]

    async def main() -> None:
        hub = FrameHub()
        hub.set_liveness_source(lambda sid: "" if session["online"] else "sender lost")
        async with H.http_server(hub, status=lambda: session, max_frame_age=0.3) as server:
            st = await status(server.port)
            assert (st["state"], st["frame_age"], st["max_frame_age"]) == ("no_frames", None, 0.3)
            hub.publish(H.served(frames[0], 1))
            st = await status(server.port)
            assert st["state"] == "live" and st["state_reason"] == "" and st["frame_age"] < 0.3
            assert (await H.fetch(server.port, "/snapshot"))[0] == 200
            await asyncio.sleep(0.4)  # heartbeats go on, no frame completes
            st = await status(server.port)
            assert st["state"] == "no_frames" and "alive" in st["state_reason"]
            code, _, body = await H.fetch(server.port, "/snapshot")
            assert code == 503 and body.startswith(b"no recent frame: the newest is 0.")
            # ?fresh=1 still waits for the next frame
            asyncio.get_running_loop().call_later(0.05, hub.publish, H.served(frames[1], 2))
            code, _, body = await H.fetch(server.port, "/snapshot?fresh=1&timeout=2")
            assert code == 200 and body == frames[1]
            session["streams"][0]["liveness"] = "stale"
            assert (await status(server.port))["state"] == "stale"
            session["online"] = False
            session["streams"][0]["liveness"] = "lost"
            st = await status(server.port)
            assert st["state"] == "offline" and st["state_reason"] == "sender lost"

    asyncio.run(main())


def test_default_frame_age_bound() -> None:
    def status(fps: float, hb: float) -> dict[str, Any]:
        return {"streams": [{"followed": True, "fps": fps, "heartbeat_interval": hb}]}

    assert frame_age_bound(status(30.0, 0.0)) == 1.0  # max(1 s, 5 / 30)
    assert frame_age_bound(status(2.0, 0.0)) == 2.5  # 5 frame intervals
    assert frame_age_bound(status(30.0, 1.0)) == 3.0  # never below 3 heartbeat intervals
    assert frame_age_bound(status(0.0, 0.0)) == 5.0  # frame rate not known
    assert frame_age_bound({}) == 5.0
    assert frame_age_bound(status(30.0, 1.0), 0.25) == 0.25  # --max-frame-age


def test_loss_window_forgets_an_old_outage() -> None:
    w = LossWindow(0.0, datagrams=1000, lost=0)
    got, lost = 1000, 0
    for t in range(1, 31):  # 100 datagrams/s; seconds 5..9 all lost (a 5 s outage)
        if 5 <= t < 10:
            lost += 100
        else:
            got += 100
        w.observe(float(t), got, lost)
        if t == 9:
            assert w.percent(9.0) == pytest.approx(100 * 500 / 900)
    assert lost / (got + lost) > 0.1  # cumulative would still say 14 %
    assert w.percent(30.0) == 0.0


# -- default group fallback ---------------------------------------------------------------


def test_recv_without_group_warns_when_it_falls_back_to_the_default_group(
    tmp_path: Path,
) -> None:
    """``lo`` cannot broadcast a discovery query: the default group, said loudly."""
    port = _free_port()
    log_path = tmp_path / "recv.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcastcam.receiver.cli", "--interface", "lo", "--http",
             f"127.0.0.1:{port}", "--no-reports", "--quiet"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                code, body = _get(port, "/status")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    st = json.loads(body)
    assert code == 200
    assert len(st["warnings"]) == 1 and "default group 239.255.0.1:8989" in st["warnings"][0]
    assert st["receiving"].startswith("group 239.255.0.1:8989 on lo")
    text = log_path.read_text()  # --quiet: only warnings, and this one is there
    assert "WARNING" in text and "default group 239.255.0.1:8989" in text, text
