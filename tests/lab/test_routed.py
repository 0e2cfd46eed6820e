"""Across a multicast router: two LANs in a box joined by ``smcrouted`` (tools/netlab.py).

h0 (subnet A) runs ``mcastcam-send --ttl 2``; receivers in subnet B get every frame
byte-identical through the router (static multicast route 239.255.0.0/16 from A to B),
the sender's heartbeats (name, size, interval) and, the other way, the receivers' unicast
reports reach the sender, whose audience lists the B hosts. With the default TTL 1 the router
forwards nothing: a receiver in A gets the stream, the one in B nothing. The router's
nftables counters give the datagrams on each link (printed; docs/scaling.md uses them).
With loss on a receiver in B, its NACKs cross the router back to the sender and the sender's
fresh repair symbols repair its frames.
"""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab import labkit
from tests.lab.test_acceptance import check_delivery

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.clients]

HEARTBEAT = 0.5
COUNT = 150  # 5 s at 30 fps: long enough for a few receiver reports


def read_audience(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())["audience"]  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {"receivers": 0, "listeners": []}


def test_ttl_2_crosses_the_router_frames_heartbeats_and_reports(
    routed_netlab: Any, tmp_path: Path
) -> None:
    source = labkit.load_frames(labkit.SAMPLE)
    lab = routed_netlab(hosts_a=1, hosts_b=2)
    receivers = labkit.start_receivers(lab, (1, 2))
    labkit.connect_clients(receivers, tmp_path)
    status_file = tmp_path / "sender-status.json"
    before = lab.forwarded()
    sender = labkit.start_sender(
        lab, 0, labkit.SAMPLE, "--fps", "30", "--count", str(COUNT), "--ttl", "2",
        "--name", "cam", "--heartbeat-interval", str(HEARTBEAT), "--status-json",
        str(status_file), "--no-gso",  # one skb per datagram: the router counts datagrams
    )  # fmt: skip
    try:
        aud = labkit.wait_until(
            lambda: (a := read_audience(status_file))["receivers"] == 2 and a,
            COUNT / 30, "the sender to hear both receivers in subnet B",
        )  # fmt: skip
        code = sender.wait(timeout=30)
    finally:
        labkit.stop(sender)
    assert code == 0, labkit.output(sender)
    hosts = sorted(entry["host"] for entry in aud["listeners"])
    assert hosts == sorted(r.host.address for r in receivers)
    assert all(ipaddress.ip_address(h) in lab.subnet_b for h in hosts)
    assert aud["worst_loss_pct"] == 0.0 and aud["rtt_ms_median"] is not None
    for r in receivers:  # the heartbeats crossed: name, size and interval are known
        followed = r.followed()
        assert followed is not None
        assert (followed["name"], followed["width"], followed["height"]) == ("cam", 640, 480)
        assert followed["heartbeat_interval"] == HEARTBEAT
    after = lab.forwarded()
    received = [r.followed()["datagrams"] for r in receivers]  # source + repair + heartbeats
    check_delivery(receivers, source, COUNT)

    a_to_b = after["a_to_b"]["packets"] - before["a_to_b"]["packets"]
    b_to_a = after["b_to_a"]["packets"] - before["b_to_a"]["packets"]
    fragments = sum(labkit.datagrams_per_frame(len(f)) for f in source[:COUNT])
    # one copy per datagram crosses the router whatever the number of receivers in B
    assert received[0] == received[1] and fragments <= received[0]
    assert received[0] <= a_to_b <= received[0] * 1.02 + 5, (a_to_b, received, fragments)
    assert b_to_a >= 2  # receiver reports, unicast back to the sender
    print(f"\nrouted lab, {COUNT} frames at 30 fps to 2 receivers in B: router forwarded "
          f"{a_to_b} datagrams A->B ({fragments} source symbols + repair + heartbeats), "
          f"{after['a_to_b']['bytes'] - before['a_to_b']['bytes']} bytes; "
          f"{b_to_a} B->A (receiver reports)")  # fmt: skip


def test_ttl_1_does_not_cross_the_router(routed_netlab: Any, tmp_path: Path) -> None:
    lab = routed_netlab(hosts_a=2, hosts_b=1)
    near, far = labkit.start_receivers(lab, (1, 2))
    sender = labkit.start_sender(lab, 0, labkit.SAMPLE, "--fps", "30", "--count", "45",
                                 "--ttl", "1")  # fmt: skip
    try:
        assert sender.wait(timeout=30) == 0, labkit.output(sender)
    finally:
        labkit.stop(sender)
    labkit.wait_until(lambda: (f := near.followed()) and f["frames_completed"] == 45, 10.0,
                      "the receiver in subnet A to get the 45 frames")  # fmt: skip
    time.sleep(0.5)  # anything in flight towards B would have arrived by now
    st = far.status()
    assert st["streams"] == [] and st["frames_published"] == 0, st
    assert lab.forwarded()["a_to_b"]["packets"] == 0


def test_nacks_cross_the_router_and_repair_frames_in_b(routed_netlab: Any, tmp_path: Path) -> None:
    """Loss on a receiver in B, little proactive FEC: NACKs go back through the router.

    h0 in A sends with ``--fec 1`` (one repair symbol per frame or so) while h2's namespace
    in B drops 10 % of arriving datagrams: frames that lose more than the proactive repair
    need NACK repair, which only works if h2's unicast NACKs reach h0 across the router and
    h0's fresh repair symbols come back through the multicast route. Every frame h2 serves
    is byte-identical to the recording.
    """
    source = labkit.load_frames(labkit.SAMPLE)
    lab = routed_netlab(hosts_a=1, hosts_b=2)
    lossy = labkit.start_receivers(lab, (2,))
    labkit.connect_clients(lossy, tmp_path)
    lab.set_loss(2, 1000)
    status_file = tmp_path / "sender-status.json"
    sender = labkit.start_sender(
        lab, 0, labkit.SAMPLE, "--fps", "30", "--count", str(COUNT), "--ttl", "2",
        "--name", "cam", "--heartbeat-interval", str(HEARTBEAT), "--fec", "1",
        "--status-json", str(status_file),
    )  # fmt: skip
    try:
        code = sender.wait(timeout=30)
        fec = json.loads(status_file.read_text())["fec"]
        r = lossy[0]
        followed = labkit.wait_until(
            lambda: (f := r.followed()) is not None
            and f["frames_completed"] + sum(f["frames_dropped"].values()) >= COUNT - 5
            and f,
            10.0, "h2 to resolve the frames",
        )  # fmt: skip
    finally:
        labkit.stop(sender)
    assert code == 0, labkit.output(sender)
    assert fec["nacks_received"] > 0 and fec["repair_nack_sent"] > 0, fec
    assert followed["repaired_nack"] > 0, followed
    assert followed["corrupt"] == 0
    got = labkit.finish_clients(lossy)[2]
    assert got and all(frame in source for frame in got[0])
    print(f"\nrouted lab, 10 % loss in B, --fec 1: {followed['repaired_nack']} frames repaired "
          f"after NACK, {fec['nacks_received']} NACKs crossed A<-B, "
          f"{fec['repair_nack_sent']} repair symbols sent after NACK")  # fmt: skip
