"""``mcastcam doctor`` on a LAN in a box: healthy, then one injected fault at a time.

Every datagram stays in the namespaces the lab builds (a bridge with no uplink). The bridge
snoops IGMP and is the querier, with a 1 s query interval so a query is heard within the
test's ``--igmp-wait``; h1 runs a real ``mcastcam-send`` (the bundled sample, 5 fps) so
discovery finds a sender. Doctor runs as the real CLI (``python -m mcastcam doctor``) in h0.

Faults: strict ``rp_filter`` on h0's eth0, an nftables drop rule on the stream's port, no
multicast route, and ``net.core.rmem_max`` below what the receiver asks. On this kernel
``net.core.rmem_max`` is global (read-only inside a namespace), so that test sets the host's
value to the kernel default (212992 bytes) for the one doctor run and restores it in a
``finally``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab import labkit

pytestmark = pytest.mark.netns

RMEM_MAX = Path("/proc/sys/net/core/rmem_max")
KERNEL_DEFAULT_RMEM = 212992


def doctor(host: Any, *extra: str) -> tuple[int, dict[str, Any]]:
    """Run ``mcastcam doctor --json`` on ``host``'s eth0; ``(exit code, JSON)``."""
    rmem = int(RMEM_MAX.read_text())
    done = host.run(
        [sys.executable, "-m", "mcastcam", "doctor", "--interface", "eth0", "--group",
         labkit.GROUP, "--rcvbuf", str(min(rmem, 4 << 20)), "--json", *extra],
        cwd=str(labkit.REPO), check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["exit"] == done.returncode
    return done.returncode, report


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The checks of a report, by name."""
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture
def lab(netlab: Any) -> Iterator[Any]:
    """Two hosts on a snooping bridge that queries every second; a sender on h1."""
    lab = netlab(hosts=2, igmp_snooping=True)
    bridge = ["ip", "-n", lab.bridge_namespace, "link", "set", "br0", "type", "bridge"]
    subprocess.run([*bridge, "mcast_query_interval", "100", "mcast_startup_query_interval",
                    "100"], check=True, capture_output=True)  # fmt: skip
    # The running query timer keeps its 125 s: restart the querier so the 1 s applies.
    subprocess.run([*bridge, "mcast_querier", "0"], check=True, capture_output=True)
    subprocess.run([*bridge, "mcast_querier", "1"], check=True, capture_output=True)
    sender = labkit.start_sender(lab, 1, labkit.SAMPLE, "--fps", "5", "--loop",
                                 "--name", "doctorcam")  # fmt: skip
    try:
        yield lab
    finally:
        labkit.stop(sender)


def test_healthy_lab_host_passes_every_check(lab: Any) -> None:
    code, report = doctor(lab.host(0), "--igmp-wait", "2.5", "--strict")
    checks = by_name(report)
    assert code == 0, [c for c in report["checks"] if c["status"] != "ok"]
    assert report["status"] == "ok"
    assert set(checks) >= {"interface", "multicast_flag", "address", "route", "rp_filter",
                           "igmp", "rmem_max", "wmem_max", "firewall", "self_test",
                           "discovery"}  # fmt: skip
    assert "querier heard: 0.0.0.0" in checks["igmp"]["finding"]  # the bridge has no address
    assert checks["igmp"]["data"]["heard"][0][1] == 2  # Linux bridges query with IGMPv2
    assert checks["self_test"]["data"]["received"] == checks["self_test"]["data"]["sent"] > 0
    assert "doctorcam" in checks["discovery"]["finding"]
    assert checks["address"]["data"]["broadcast"] == lab.broadcast


def test_strict_rp_filter_is_found(lab: Any) -> None:
    h0 = lab.host(0)
    h0.run(["sysctl", "-w", "net.ipv4.conf.eth0.rp_filter=1"])
    code, report = doctor(h0, "--igmp-wait", "0")
    rp = by_name(report)["rp_filter"]
    assert rp["status"] == "warn" and "strict" in rp["finding"], rp
    assert rp["data"]["effective"] == 1
    assert "rp_filter=2" in rp["fix"]
    assert code == 0  # a warning: multicast from this subnet still passes
    strict_code, _ = doctor(h0, "--igmp-wait", "0", "--strict")
    assert strict_code == 1


def test_nft_drop_rule_on_the_stream_port_is_found(lab: Any) -> None:
    h0 = lab.host(0)
    script = (
        "add table inet doctortest\n"
        "add chain inet doctortest input { type filter hook input priority 0; policy accept; }\n"
        f"add rule inet doctortest input udp dport {labkit.PORT} counter drop\n"
    )
    h0.run(["nft", "-f", "-"], input=script)
    code, report = doctor(h0, "--igmp-wait", "0")
    fw = by_name(report)["firewall"]
    assert code == 1
    assert fw["status"] == "fail", fw
    assert f"udp {labkit.GROUP_ADDR}:{labkit.PORT}" in fw["finding"]
    assert "doctortest" in fw["finding"]
    assert fw["fix"] == f"nft insert rule inet doctortest input udp dport {labkit.PORT} accept"
    # The self-test uses a port of its own, so it still passes: the finding is the rule.
    assert by_name(report)["self_test"]["status"] == "ok"


def test_missing_multicast_route_is_found(lab: Any) -> None:
    h0 = lab.host(0)
    h0.run(["ip", "route", "del", "224.0.0.0/4", "dev", "eth0"])
    code, report = doctor(h0, "--igmp-wait", "0")
    route = by_name(report)["route"]
    assert route["status"] == "warn", route
    assert "no route for" in route["finding"] and "unreachable" in route["finding"].lower()
    assert route["fix"] == "ip route add 224.0.0.0/4 dev eth0"
    # mcastcam pins the interface, so its own datagrams still flow.
    assert by_name(report)["self_test"]["status"] == "ok"
    assert code == 0
    assert doctor(h0, "--igmp-wait", "0", "--strict")[0] == 1


def test_small_rmem_max_is_found(lab: Any) -> None:
    old = RMEM_MAX.read_text().strip()
    h0 = lab.host(0)
    try:
        RMEM_MAX.write_text(f"{KERNEL_DEFAULT_RMEM}\n")
        done = h0.run(
            [sys.executable, "-m", "mcastcam", "doctor", "--interface", "eth0", "--igmp-wait",
             "0", "--discover-timeout", "0.1", "--json"],
            cwd=str(labkit.REPO), check=False, timeout=30,
        )  # fmt: skip
    finally:
        RMEM_MAX.write_text(old + "\n")
    report = json.loads(done.stdout)
    rmem = by_name(report)["rmem_max"]
    assert rmem["status"] == "warn", rmem
    assert rmem["data"]["max"] == KERNEL_DEFAULT_RMEM
    assert rmem["data"]["granted"] == 2 * KERNEL_DEFAULT_RMEM
    assert f"gets {KERNEL_DEFAULT_RMEM}" in rmem["finding"]
    assert rmem["fix"].startswith(f"sysctl -w net.core.rmem_max={4 << 20}")


def test_drop_all_input_policy_fails_the_firewall_and_the_self_test(lab: Any) -> None:
    h0 = lab.host(0)
    script = (
        "add table inet filter\n"
        "add chain inet filter input { type filter hook input priority 0; policy drop; }\n"
        "add rule inet filter input ct state established,related accept\n"
        "add rule inet filter input udp dport 8990 accept\n"
    )
    h0.run(["nft", "-f", "-"], input=script)
    code, report = doctor(h0, "--igmp-wait", "0")
    checks = by_name(report)
    assert code == 1
    assert checks["firewall"]["status"] == "fail"
    assert "(nftables inet filter input: policy drop)" in checks["firewall"]["finding"]
    # The looped-back datagrams cross the input hook too: the self-test sees the drop.
    assert checks["self_test"]["status"] == "fail"
    assert checks["self_test"]["data"]["received"] == 0


def test_address_without_broadcast_is_found(lab: Any) -> None:
    h0 = lab.host(0)
    prefix = lab.subnet.prefixlen
    h0.run(["ip", "addr", "flush", "dev", "eth0"])
    h0.run(["ip", "addr", "add", f"{h0.address}/{prefix}", "dev", "eth0"])
    h0.run(["ip", "route", "replace", "224.0.0.0/4", "dev", "eth0"])
    code, report = doctor(h0, "--igmp-wait", "0", "--discover-timeout", "0.3")
    address = by_name(report)["address"]
    assert address["status"] == "warn", address
    assert address["data"]["broadcast"] == h0.address
    assert f"the directed broadcast is {lab.broadcast}" in address["finding"]
    assert address["fix"].startswith(f"ip addr change {h0.address}/{prefix} brd + dev eth0")
    # Issue #12: mcastcam derives the directed broadcast itself, so discovery finds h1's
    # sender even here (it used to "broadcast" to this host's own address and find nothing).
    assert by_name(report)["discovery"]["status"] == "ok"
    assert code == 0
