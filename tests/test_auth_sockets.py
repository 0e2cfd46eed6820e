"""With a key, through real sockets (loopback multicast pinned to lo, TTL 0), while curl reads.

The real sender and the receiver run with ``--key-file``; an attacker on the same host
captures the real stream and sends: bit-flipped copies, untagged forged heartbeats, the
same-run recording again, a recording of the sender's previous run after it restarted, a
second sender with the same name and no key, and one with a wrong key. Every frame curl
gets must be byte-identical to a frame of the real recording, the receiver must keep
following the real run, and every refusal must be counted in ``/status``.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mcastcam.keys import generate_key_file
from mcastcam.keys import main as keygen_main
from mcastcam.protocol.codec import Heartbeat, encode
from tests.conftest import DataFiles
from tests.test_end_to_end import (
    Loop,
    parse_multipart,
    receiver,
    recording,
    sender,
    status,
    wait_for,
)
from tests.test_end_to_end import group as group
from tests.test_end_to_end import programs as programs

pytestmark = pytest.mark.multicast


def capture(dest: str, stop: threading.Event, out: list[bytes]) -> threading.Thread:
    host, port = dest.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    mreq = struct.pack("4s4s", socket.inet_aton(host), socket.inet_aton("127.0.0.1"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.settimeout(0.1)

    def loop() -> None:
        with sock:
            while not stop.is_set() and len(out) < 200_000:
                try:
                    out.append(sock.recv(4096))
                except TimeoutError:
                    continue

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def attacker() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
    return s


def test_keygen_subcommand_and_refused_key_file(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    assert keygen_main([str(path), "--key-id", "3"]) == 0
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert keygen_main([str(path)]) == 2  # exists, no --force
    out = subprocess.run(
        [sys.executable, "-m", "mcastcam", "keygen", str(tmp_path / "b.key")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    os.chmod(path, 0o644)
    from mcastcam.receiver import cli as recv_cli
    from mcastcam.sender import cli as send_cli

    for main in (recv_cli.main, send_cli.main):
        assert (
            main(["--key-file", str(path), "--interface", "lo", "--group", "239.255.9.9:5000"]) == 2
        )


def test_attacks_with_a_key_serve_no_forged_frame(
    programs: Loop, group: str, data_files: DataFiles, tmp_path: Path
) -> None:
    key, wrong = tmp_path / "cam.key", tmp_path / "wrong.key"
    generate_key_file(key, 5)
    generate_key_file(wrong, 5)
    real_path, real = recording(data_files, "webcam_640x480_420.mjpeg")
    fake_path, _fake = recording(data_files, "synthetic_1280x720_422.mjpeg")
    stop = threading.Event()
    first_run: list[bytes] = []
    cap = capture(group, stop, first_run)
    run1 = sender(programs, group, real_path, "--fps", "30", "--loop", "--key-file", str(key))
    wait_for(lambda: len(first_run) > 3000, 15)  # the attacker records the first run
    stop.set()
    cap.join(5)
    programs.stop(run1)  # the sender restarts: a new run; a receiver starts after that
    sender(programs, group, real_path, "--fps", "30", "--loop", "--key-file", str(key))
    port, _ = receiver(programs, group, "--key-file", str(key))
    wait_for(lambda: status(port).get("auth", {}).get("echoes", 0) >= 1, 15)
    wait_for(lambda: status(port)["online"], 10)
    followed = status(port)["followed"]
    assert followed is not None
    second: list[bytes] = []
    stop2 = threading.Event()
    cap2 = capture(group, stop2, second)
    curl = subprocess.Popen(
        ["curl", "-s", "-N", "--max-time", "6", f"http://127.0.0.1:{port}/stream"],
        stdout=subprocess.PIPE,
    )
    # Intruders with the same name: no key, and a wrong key.
    sender(programs, group, fake_path, "--fps", "30", "--loop", "--name", "intruder")
    sender(programs, group, fake_path, "--fps", "30", "--loop", "--key-file", str(wrong))
    time.sleep(0.5)
    host, gport = group.split(":")
    dest = (host, int(gport))
    with attacker() as a:
        # The earlier run replayed after the restart (a whole second of it).
        for data in first_run[:3000]:
            a.sendto(data, dest)
        # Same-run replays, bit flips, untagged forged heartbeats (fake restart, huge interval).
        stop2.set()
        cap2.join(5)
        for data in second[:2000]:
            a.sendto(data, dest)
            bad = bytearray(data)
            bad[len(bad) // 2] ^= 0x40
            a.sendto(bytes(bad), dest)
        for i in range(200):
            hb = Heartbeat(
                stream_id=0x0BAD0000 + i,
                seq=i,
                name=status(port)["streams"][0]["name"] if i == 0 else "cam",
                host="127.0.0.1",
                source_state=0,
                width=640,
                height=480,
                fps_milli=30000,
                interval_ms=60000,
                frames_sent=0,
                datagrams_sent=0,
                uptime_ns=0,
                send_ts_ns=0,
                audience=0,
                run_nonce=1,
            )
            a.sendto(encode(hb), dest)
    body, _ = curl.communicate(timeout=30)
    frames = parse_multipart(body)
    assert len(frames) >= 60
    real_set = set(real)
    assert all(f in real_set for f in frames), "a served frame is not from the real sender"
    st = status(port)
    assert st["followed"] == followed, "the receiver switched streams"
    errors: dict[str, int] = dict(st["decode_errors"])
    for s in st["streams"]:
        for reason, n in s["decode_errors"].items():
            errors[reason] = errors.get(reason, 0) + n
    assert errors.get("unauthenticated", 0) > 200  # no-key sender + forged heartbeats
    assert errors.get("bad_tag", 0) > 100  # bit flips + the wrong key's sender
    # Same-run replays: refused by the replay window when they are verified on their own,
    # else (symbols are verified lazily, §8.5) before any crypto as symbols of a finished
    # frame (``late``) or the same bytes as the symbol held (``duplicate``).
    refused = ("replayed", "replayed_old", "late", "duplicate")
    assert sum(errors.get(r, 0) for r in refused) > 100, errors
    auth = st["auth"]
    assert auth["awaiting_freshness"] >= 1  # frames of the replayed earlier run: held
    assert all(s["followed"] is False or s["stream_id"] == followed for s in st["streams"])
