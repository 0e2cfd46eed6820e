"""``mcastcam relay --key-file`` attacked through real sockets on loopback.

The attacker holds the peer's address (the worst case: it can send from where the peer
relay's datagrams come from) but not the key. A keyed near relay refuses its untagged,
forged and replayed pongs (it never goes up on them) and a keyed far relay multicasts only
tagged mcastcam datagrams. Multicast stays on ``lo`` (TTL 0); every wait is bounded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcastcam import net
from mcastcam.keys import generate_key_file, load_master_keys
from mcastcam.protocol.auth import relay_key
from mcastcam.protocol.relay import PONG, TUNNEL_CONTROL, encode_control

GROUP = f"239.255.{os.getpid() % 200 + 20}.61"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "cam.key"
    generate_key_file(path, key_id=5)
    return path, relay_key(load_master_keys(path)[0])


@pytest.fixture
def attacker() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    yield sock
    sock.close()


def relay(tmp_path: Path, name: str, *argv: str) -> tuple[subprocess.Popen[bytes], Path]:
    path = tmp_path / f"{name}.json"
    proc = subprocess.Popen([sys.executable, "-m", "mcastcam", "relay", "--status-json",
                             str(path), "--keepalive", "0.2", "--dead-after", "30", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    return proc, path


def stop(proc: subprocess.Popen[bytes]) -> str:
    """Stop a relay; its output (for a failure's message)."""
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=5)
    return out.decode(errors="replace")


def test_keyed_near_relay_refuses_untagged_forged_and_replayed_pongs(
    tmp_path: Path, key: tuple[Path, bytes], attacker: socket.socket
) -> None:
    key_file, k_relay = key
    peer = attacker.getsockname()
    proc, path = relay(tmp_path, "near", "--role", "near", "--listen-group", f"{GROUP}:5004",
                       "--interface", "lo", "--peer", f"{peer[0]}:{peer[1]}", "--tunnel-port",
                       str(free_udp_port()), "--key-file", str(key_file))  # fmt: skip
    try:
        ping, addr = attacker.recvfrom(2048)
        assert len(ping) == 32 and ping[:2] == b"MR"
        plain = ping[:16]
        _m, _v, _kind, seq, t_ns = TUNNEL_CONTROL.unpack(plain)
        untagged = encode_control(PONG, seq, t_ns)
        for forged in (untagged, untagged + bytes(16), untagged + ping[16:]):
            attacker.sendto(forged, addr)
        wait_for(lambda: status(path).get("dropped", {}).get("bad_tag") == 2, "the forgeries")
        assert status(path)["dropped"].get("unauthenticated") == 1
        assert status(path)["state"] != "up" and status(path)["pongs_received"] == 0
        assert status(path)["auth"] is True
        # the real peer (it holds the key) answers: up; the same pong again counts once
        good = encode_control(PONG, seq, t_ns, k_relay)
        attacker.sendto(good, addr)
        wait_for(lambda: status(path).get("pongs_received") == 1, "the tagged pong")
        assert status(path)["state"] == "up"
        attacker.sendto(good, addr)
        wait_for(lambda: status(path)["dropped"].get("replayed") == 1, "the replayed pong")
        assert status(path)["pongs_received"] == 1
    finally:
        print(stop(proc))


def test_keyed_far_relay_multicasts_only_tagged_datagrams(
    tmp_path: Path, key: tuple[Path, bytes], attacker: socket.socket
) -> None:
    key_file, k_relay = key
    rx = net.open_multicast_receiver(GROUP, 0, net.resolve_interface("lo"))
    rx.settimeout(0.1)
    group_port = rx.getsockname()[1]
    tunnel = free_udp_port()
    peer = attacker.getsockname()
    proc, path = relay(tmp_path, "far", "--role", "far", "--out-group",
                       f"{GROUP}:{group_port}", "--out-interface", "lo", "--ttl", "0",
                       "--peer", f"{peer[0]}:{peer[1]}", "--tunnel-port", str(tunnel),
                       "--key-file", str(key_file))  # fmt: skip
    try:
        rx.setblocking(True)
        ping, addr = attacker.recvfrom(2048)
        _m, _v, _kind, seq, t_ns = TUNNEL_CONTROL.unpack(ping[:16])
        attacker.sendto(encode_control(PONG, seq, t_ns, k_relay), addr)
        wait_for(lambda: status(path).get("pongs_received") == 1, "the far relay to go up")
        head = bytes.fromhex("4d430201") + (0).to_bytes(2, "big") + (7).to_bytes(4, "big")
        untagged = head + (1).to_bytes(4, "big") + bytes(34) + bytes(200)
        tagged = bytearray(head + (2).to_bytes(4, "big") + bytes(34) + bytes(200) + bytes(16))
        tagged[5] = 1  # AUTH
        tagged[41] = 5  # the key id the relay holds
        wrong_key = bytearray(tagged)
        wrong_key[41] = 6
        for d in (untagged, bytes(wrong_key), bytes(tagged)):
            attacker.sendto(d, ("127.0.0.1", tunnel))
        rx.settimeout(5.0)
        got, _ = rx.recvfrom(4096)
        assert got == bytes(tagged)
        rx.settimeout(0.3)
        with pytest.raises(TimeoutError):
            rx.recvfrom(4096)
        wait_for(lambda: status(path).get("dropped", {}).get("unknown_key"), "the drops")
        dropped = status(path)["dropped"]
        assert dropped.get("unauthenticated") == 1 and dropped.get("unknown_key") == 1
    finally:
        stop(proc)
        rx.close()
