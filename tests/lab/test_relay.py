"""``mcastcam relay`` across the routed lab with multicast routing switched off.

Subnets A and B are joined by a router namespace that forwards unicast only (no smcrouted:
``RoutedLab(multicast_routing=False)``). h0 (A) sends to the group with TTL 1; the near relay
on h1 (A) joins it and forwards every datagram over unicast UDP to the far relay on h2 (B),
which multicasts it on B; receivers on h3 and h4 (B) get byte-exact frames, and their reports
and NACKs come back through the tunnel (the sender's audience lists the B hosts). At 5 % loss
on the tunnel (the router drops A->B datagrams) FEC and NACKs still deliver >= 99 % of the
frames byte-exact. A stranger's datagrams on the tunnel port are dropped and counted. A peer
that never answers: one warning, bounded pings, and the near LAN's stream is unaffected.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from mcastcam.keys import generate_key_file
from tests.lab import labkit
from tests.lab.test_acceptance import check_delivery
from tests.lab.test_routed import read_audience

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.clients]

TUNNEL = 8991
COUNT = 150  # 5 s at 30 fps


def start_relay(lab: Any, i: int, status: Path, *argv: str) -> Any:
    proc = labkit.mcastcam(lab.host(i), "relay", "--tunnel-port", str(TUNNEL),
                           "--status-json", str(status), *argv)  # fmt: skip
    proc.status_path = status
    return proc


def relay_status(proc: Any) -> dict[str, Any]:
    if proc.poll() is not None:
        raise AssertionError(f"relay exited {proc.returncode}: {labkit.output(proc)}")
    try:
        return json.loads(Path(proc.status_path).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def start_pair(lab: Any, tmp_path: Path, *extra: str) -> tuple[Any, Any]:
    near_host, far_host = lab.host(1), lab.host(2)
    far = start_relay(lab, 2, tmp_path / "far.json", "--role", "far", "--out-group",
                      labkit.GROUP, "--out-interface", "eth0", "--ttl", "1", "--peer",
                      f"{near_host.address}:{TUNNEL}", *extra)  # fmt: skip
    near = start_relay(lab, 1, tmp_path / "near.json", "--role", "near", "--listen-group",
                       labkit.GROUP, "--interface", "eth0", "--peer",
                       f"{far_host.address}:{TUNNEL}", *extra)  # fmt: skip
    for proc in (near, far):
        labkit.wait_until(lambda p=proc: relay_status(p).get("state") == "up", 10.0,
                          "both relays to see their peer")  # fmt: skip
    return near, far


@pytest.mark.parametrize(
    ("permyriad", "keyed"), [(0, False), (500, False), (0, True)], ids=["clean", "5pct", "key"]
)
def test_relay_carries_the_stream_and_the_reports(
    routed_netlab: Any, tmp_path: Path, permyriad: int, keyed: bool
) -> None:
    source = labkit.load_frames(labkit.SAMPLE)
    lab = routed_netlab(hosts_a=2, hosts_b=3, multicast_routing=False)
    key: tuple[str, ...] = ()
    if keyed:  # sender, receivers and both relays hold the key: tagged pings, tagged traffic
        generate_key_file(tmp_path / "cam.key", 4)
        key = ("--key-file", str(tmp_path / "cam.key"))
    near, far = start_pair(lab, tmp_path, *key)
    receivers = labkit.start_receivers(lab, (3, 4), *key)
    labkit.connect_clients(receivers, tmp_path)
    if permyriad:
        lab.set_forward_loss(permyriad)
    # a stranger on the far LAN writes to the tunnel port: dropped and counted
    stranger = lab.host(3).python(
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(5): s.sendto(b'MC' + bytes(40), (sys.argv[1], int(sys.argv[2])))\n",
        lab.host(2).address, str(TUNNEL))  # fmt: skip
    assert stranger.returncode == 0
    if keyed:
        untagged = lab.host(0).python(
            "import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)\n"
            "d = bytes.fromhex('4d4302010000') + bytes(8) + bytes(100)\n"
            "for _ in range(5): s.sendto(d, (sys.argv[1], int(sys.argv[2])))\n",
            labkit.GROUP_ADDR, str(labkit.PORT))  # fmt: skip
        assert untagged.returncode == 0
    status_file = tmp_path / "sender-status.json"
    sender = labkit.start_sender(lab, 0, labkit.SAMPLE, "--fps", "30", "--count", str(COUNT),
                                 "--name", "cam", "--heartbeat-interval", "0.5",
                                 "--status-json", str(status_file), *key)  # fmt: skip
    try:
        aud = labkit.wait_until(
            lambda: (a := read_audience(status_file))["receivers"] == 2 and a,
            COUNT / 30 + 2, "the sender to hear both receivers in B through the tunnel",
        )  # fmt: skip
        assert sender.wait(timeout=30) == 0, labkit.output(sender)
    finally:
        labkit.stop(sender)
    hosts = sorted(entry["host"] for entry in aud["listeners"])
    assert hosts == sorted(r.host.address for r in receivers)
    assert all(ipaddress.ip_address(h) in lab.subnet_b for h in hosts)
    # reports arrive from the near relay's address (the tunnel's end on A)
    assert {e["address"].split(":")[0] for e in aud["listeners"]} == {lab.host(1).address}
    far_st = relay_status(far)
    assert far_st["dropped"].get("not_peer", 0) >= 5, far_st
    assert far_st["forwarded"]["to_peer"] >= 2  # reports (and NACKs) went back
    if keyed:  # an untagged stranger on A multicast to the group: the tunnel never carries it
        assert relay_status(near)["dropped"].get("unauthenticated", 0) >= 5, relay_status(near)
        assert far_st["auth"] and far_st["dropped"].get("unauthenticated", 0) == 0, far_st
    if not permyriad and not keyed:
        check_delivery(receivers, source, COUNT)
    else:
        for r in receivers:
            # a frame lost whole before the first heartbeat is never counted: wait at most 5 s
            with contextlib.suppress(AssertionError):
                labkit.wait_until(lambda r=r: (f := r.followed()) and f["frames_completed"]
                                  + sum(f["frames_dropped"].values()) >= COUNT, 5.0,
                                  f"h{r.host.index} to settle")  # fmt: skip
            st = r.followed()
            assert st is not None
            print(f"\nh{r.host.index} over the 5 % lossy tunnel: {st['frames_completed']}/"
                  f"{COUNT} (FEC {st['repaired_fec']}, NACK {st['repaired_nack']}, "
                  f"unrepairable {st['unrepairable']})")  # fmt: skip
            assert st["frames_completed"] >= 0.99 * COUNT, st
            assert st["corrupt"] == 0
        got = labkit.finish_clients(receivers)
        for r in receivers:
            (frames,) = got[r.host.index]
            assert len(frames) >= 0.99 * COUNT - 1
            positions = labkit.source_positions(frames, source[:COUNT])  # byte-exact
            assert positions == sorted(positions)
        if permyriad:
            assert lab.forwarded()["lost"]["packets"] > 0
    near_st = relay_status(near)
    print(f"near relay: {near_st['forwarded']} dropped {near_st['dropped']}; "
          f"far relay: {far_st['forwarded']} dropped {far_st['dropped']}")
    assert near_st["state"] == "up" and near_st["forwarded"]["to_sender"] >= 2
    for proc in (near, far):
        assert labkit.stop(proc) == 0, labkit.output(proc)


def test_unreachable_peer_one_message_bounded_retries_local_stream_unaffected(
    routed_netlab: Any, tmp_path: Path
) -> None:
    source = labkit.load_frames(labkit.SAMPLE)
    lab = routed_netlab(hosts_a=3, hosts_b=1, multicast_routing=False)
    # h3 (B) runs nothing: the peer's port is unreachable
    near = start_relay(lab, 1, tmp_path / "near.json", "--role", "near", "--listen-group",
                       labkit.GROUP, "--interface", "eth0", "--peer",
                       f"{lab.host(3).address}:{TUNNEL}", "--dead-after", "2")  # fmt: skip
    (local,) = labkit.start_receivers(lab, (2,))
    labkit.connect_clients([local], tmp_path)
    sender = labkit.start_sender(lab, 0, labkit.SAMPLE, "--fps", "30", "--count", str(COUNT))
    try:
        assert sender.wait(timeout=30) == 0, labkit.output(sender)
    finally:
        labkit.stop(sender)
    check_delivery([local], source, COUNT)
    st = relay_status(near)
    assert st["state"] == "down" and st["forwarded"]["to_peer"] == 0, st
    assert st["dropped"]["peer_down"] > COUNT, st  # the stream was not sent into the void
    assert st["pings_sent"] <= 8, st  # about 7 s: 1 s pings, then 2 s, 4 s ...
    assert labkit.stop(near) == 0
    log = labkit.output(near)
    lines = [ln for ln in log.splitlines() if "never answered" in ln]
    assert len(lines) == 1 and lab.host(3).address in lines[0], log
