"""The namespace lab and mcastcam.net across hosts: h0..hN on a bridge with no uplink.

Every datagram here travels between namespaces the test creates; snippets run inside them
with ``ip netns exec ... python -c`` and use mcastcam.net, so this also checks the shell
across a real bridge (IGMP joins, TTL 1, subnet broadcast, loss, link faults).
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.netns

GROUP = "239.255.42.7"
PORT = 5004

# Receiver: prints "ready", then one line per datagram "<source> <payload>", until it has
# been idle for IDLE seconds (bounded by a hard deadline of 20 s and 10 000 datagrams).
RECEIVE = """
import select, sys, time
from mcastcam import net
mode, group, port, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
eth0 = net.resolve_interface("eth0")
if mode == "multicast":
    sock = net.open_multicast_receiver(group, port, eth0)
else:
    sock = net.open_broadcast_receiver(port, eth0)
print("ready", flush=True)
deadline = time.monotonic() + 20.0
with sock:
    for _ in range(10000):
        if time.monotonic() > deadline or not select.select([sock], [], [], idle)[0]:
            break
        data, src = sock.recvfrom(2000)
        print(src[0], data.decode(), flush=True)
"""

# Sender: sends COUNT datagrams "<tag>-<i>" then prints the SendStats as JSON.
SEND = """
import json, sys, time
from mcastcam import net
mode, dest, port, count, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    sys.argv[5]
eth0 = net.resolve_interface("eth0")
if mode == "multicast":
    sock = net.open_multicast_sender(eth0, ttl=1, loop=False)
else:
    sock = net.open_broadcast_sender(eth0)
    dest = eth0.broadcast
stats = net.SendStats()
with sock:
    datagrams = [(tag.encode(), f"-{i}".encode()) for i in range(count)]
    done = 0
    for _ in range(1000):
        done += net.send_fragments(sock, (dest, port), datagrams[done:], stats)
        if done == count:
            break
        time.sleep(0.01)  # EAGAIN/ENOBUFS: the socket buffer is full, retry shortly
print(json.dumps({"sent": stats.sent, "errors": {str(k): v for k, v in stats.errors.items()}}))
"""

Lab = Any
MakeLab = Callable[..., Lab]


def start_receivers(lab: Lab, hosts: list[int], mode: str = "multicast",
                    idle: float = 1.0) -> dict[int, subprocess.Popen[str]]:
    procs = {}
    for i in hosts:
        proc = lab.host(i).python_popen(RECEIVE, mode, GROUP, str(PORT), str(idle))
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            _out, err = proc.communicate(timeout=10)
            pytest.fail(f"receiver on h{i} did not start: {line} {err}")
        procs[i] = proc
    return procs


def collect(procs: dict[int, subprocess.Popen[str]]) -> dict[int, list[tuple[str, str]]]:
    got = {}
    for i, proc in procs.items():
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, f"receiver on h{i} failed: {err}"
        got[i] = [tuple(line.split(" ", 1)) for line in out.splitlines() if line]
    return got  # type: ignore[return-value]


def send(lab: Lab, i: int, count: int, tag: str, mode: str = "multicast") -> dict[str, Any]:
    done = lab.host(i).python(SEND, mode, GROUP, str(PORT), str(count), tag)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_multicast_crosses_the_bridge_to_every_member(netlab: MakeLab) -> None:
    lab = netlab(hosts=3)
    receivers = start_receivers(lab, [0, 1, 2])
    stats = send(lab, 0, 5, "mc")
    assert stats == {"sent": 5, "errors": {}}
    got = collect(receivers)
    expected = [(lab.host(0).address, f"mc-{i}") for i in range(5)]
    assert got[1] == expected
    assert got[2] == expected
    assert got[0] == []  # IP_MULTICAST_LOOP off: the sender's host gets no copy


def test_igmp_snooping_bridge_still_delivers_to_members(netlab: MakeLab) -> None:
    lab = netlab(hosts=3, igmp_snooping=True)
    receivers = start_receivers(lab, [1])
    assert send(lab, 0, 3, "snoop")["sent"] == 3
    got = collect(receivers)
    assert [p for _s, p in got[1]] == ["snoop-0", "snoop-1", "snoop-2"]


def test_subnet_broadcast_reaches_the_other_hosts(netlab: MakeLab) -> None:
    lab = netlab(hosts=3)
    receivers = start_receivers(lab, [1, 2], mode="broadcast")
    assert send(lab, 0, 3, "bc", mode="broadcast") == {"sent": 3, "errors": {}}
    got = collect(receivers)
    for i in (1, 2):
        assert got[i] == [(lab.host(0).address, f"bc-{n}") for n in range(3)]


def test_full_loss_drops_and_counts_then_recovers(netlab: MakeLab) -> None:
    lab = netlab(hosts=3)
    lab.set_loss(1, 10000)
    receivers = start_receivers(lab, [1, 2])
    assert send(lab, 0, 20, "lossy")["sent"] == 20
    got = collect(receivers)
    assert got[1] == []
    assert len(got[2]) == 20
    assert lab.loss_counter(1) == 20
    assert lab.loss_counter(2) == 0

    lab.set_loss(1, 0)
    receivers = start_receivers(lab, [1])
    send(lab, 0, 4, "clean")
    assert [p for _s, p in collect(receivers)[1]] == [f"clean-{i}" for i in range(4)]
    assert lab.loss_counter(1) == 20  # the counter survives, the rule is gone


def test_partial_loss_is_exactly_accounted(netlab: MakeLab) -> None:
    lab = netlab(hosts=2)
    lab.set_loss(1, 5000)
    receivers = start_receivers(lab, [1])
    assert send(lab, 0, 400, "half")["sent"] == 400
    received = len(collect(receivers)[1])
    lost = lab.loss_counter(1)
    assert received + lost == 400
    assert 100 < lost < 300  # 50 % of 400: mean 200, sd 10


def test_link_down_cuts_one_host_and_link_up_restores_it(netlab: MakeLab) -> None:
    lab = netlab(hosts=3)
    lab.link_down(1)
    receivers = start_receivers(lab, [1, 2])
    send(lab, 0, 3, "down")
    got = collect(receivers)
    assert got[1] == []
    assert len(got[2]) == 3

    lab.link_up(1)
    receivers = start_receivers(lab, [1], idle=0.3)
    # The carrier comes back asynchronously: resend (bounded) until h1 hears one.
    for attempt in range(25):
        send(lab, 0, 1, f"up{attempt}")
        time.sleep(0.2)
        if receivers[1].poll() is not None:
            break
    got = collect(receivers)
    assert got[1], "h1 heard nothing within 5 s of link_up"


def test_interface_without_ipv4_is_reported_inside_a_namespace(netlab: MakeLab) -> None:
    lab = netlab(hosts=1)
    lab.host(0).run(["ip", "addr", "flush", "dev", "eth0"])
    done = lab.host(0).python(
        """
        from mcastcam import net
        from mcastcam.errors import ConfigError
        try:
            net.resolve_interface("eth0")
        except ConfigError as err:
            print(err)
        """
    )
    assert done.stdout.strip() == "interface eth0 has no IPv4 address"


def test_firewall_refusal_is_counted_not_raised(netlab: MakeLab) -> None:
    """An nftables output drop makes sendmsg fail with EPERM: counted, sending continues."""
    lab = netlab(hosts=2)
    lab.host(0).run(["nft", "-f", "-"], input=(
        "add table inet block\n"
        "add chain inet block output { type filter hook output priority 0; policy accept; }\n"
        "add rule inet block output meta l4proto udp drop\n"
    ))
    stats = send(lab, 0, 3, "blocked")
    assert stats == {"sent": 0, "errors": {str(errno.EPERM): 3}}


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def test_cleanup_kills_processes_and_deletes_namespaces(netlab_module: Any,
                                                        netlab_available: None) -> None:
    lab = netlab_module.Lab(hosts=2)
    with pytest.raises(RuntimeError, match="boom"), lab:
        names = [lab.bridge_namespace, lab.host(0).namespace, lab.host(1).namespace]
        assert set(names) <= set(_namespaces())
        sleeper = lab.host(1).popen(["sleep", "60"])
        raise RuntimeError("boom")
    assert sleeper.poll() is not None
    assert not [n for n in _namespaces() if n.startswith(lab.prefix)]
    lab.close()  # idempotent


def test_sweep_removes_only_namespaces_of_dead_labs(netlab_module: Any,
                                                    netlab_available: None) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"nl{dead.pid}-beef-h0"
    other = f"keep{dead.pid}-h0"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        swept = netlab_module.sweep_stale()
        assert stale in swept
        assert other not in swept
        names = _namespaces()
        assert stale not in names
        assert other in names
    finally:
        for name in (stale, other):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_sigterm_tears_the_lab_down(netlab_module: Any, netlab_available: None) -> None:
    """A process killed with SIGTERM mid-lab leaves no namespace behind."""
    path = str(netlab_module.__file__)
    script = (
        "import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('netlab', {path!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['netlab'] = m\n"
        "spec.loader.exec_module(m)\n"
        "with m.Lab(hosts=2) as lab:\n"
        "    print(lab.prefix, flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        prefix = proc.stdout.readline().strip()
        assert prefix.startswith("nl")
        assert [n for n in _namespaces() if n.startswith(prefix)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert not [n for n in _namespaces() if n.startswith(prefix)]


def test_cli_up_then_down(netlab_module: Any, netlab_available: None) -> None:
    tool = str(netlab_module.__file__)
    up = subprocess.run([sys.executable, tool, "up", "--hosts", "2"], capture_output=True,
                        text=True, timeout=60, check=False)
    prefix = up.stdout.split()[1].rstrip(":") if up.stdout else ""
    try:
        assert up.returncode == 0, up.stderr
        assert {f"{prefix}-br", f"{prefix}-h0", f"{prefix}-h1"} <= set(_namespaces())
    finally:
        down = subprocess.run([sys.executable, tool, "down", "--prefix", prefix],
                              capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 0, down.stderr
    assert not [n for n in _namespaces() if n.startswith(prefix + "-")]
