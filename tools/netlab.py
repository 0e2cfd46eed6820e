#!/usr/bin/env python3
"""LAN in a box: network namespaces joined by a bridge, for multi-host multicast tests.

Layout for ``Lab(prefix="nl1234-ab12", hosts=3)``::

    nl1234-ab12-h0  eth0 198.18.X.1/24 ─┐
    nl1234-ab12-h1  eth0 198.18.X.2/24 ─┼─ p0/p1/p2 ── br0   (namespace nl1234-ab12-br)
    nl1234-ab12-h2  eth0 198.18.X.3/24 ─┘

The bridge lives in its own namespace, so it has no uplink: nothing built here can reach the
host's own interfaces. Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking range); the
/24 is derived from the prefix so parallel labs do not collide. Each host has ``lo`` up and a
multicast route ``224.0.0.0/4 dev eth0``.

Loss is injected with nftables in the receiving host's namespace
(``meta l4proto udp numgen random mod 10000 < N counter drop`` on the input hook); ``tc
netem`` is not available in this kernel. Links go down on the bridge side, like a pulled
cable: the host keeps its address and routes but has no carrier.

Cleanup is always attempted: ``__exit__``, ``atexit`` and a SIGTERM/SIGHUP handler (SIGINT
already raises ``KeyboardInterrupt``, which runs ``__exit__``) kill the processes the lab
started and delete its namespaces (which deletes the veth pairs and the bridge).
:func:`sweep_stale` deletes namespaces left by labs whose process is gone.

:class:`RoutedLab` is two such LANs (subnets A and B, bridges ``br0`` and ``br1``) joined by a
router namespace (``<prefix>-rt``) that forwards unicast and, with Debian's ``smcroute``
daemon, multicast by static routes (``mroute from eth0 group G/LEN to eth1``).

Needs root and Debian iproute2 + nftables (+ smcroute for :class:`RoutedLab`). CLI:
``python tools/netlab.py up|down|demo``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

__all__ = ["Host", "Lab", "LabError", "RoutedLab", "available", "sweep_stale"]

NETWORK = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544
_PREFIX_RE = re.compile(r"^nl(?P<pid>\d+)-[0-9a-f]{4}$")
_NS_RE = re.compile(r"^(?P<prefix>nl\d+-[0-9a-f]{4})-(?:br|rt|h\d+)$")
_TABLE = "netlab"
_COUNTER = "udp_lost"


class LabError(RuntimeError):
    """A command building or driving the lab failed; the message has the command and stderr."""


def _run(cmd: Sequence[str], check: bool = True, timeout: float = 30.0) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LabError(f"{' '.join(cmd)}: {err}") from err
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def available() -> str | None:
    """Why a lab cannot be built here (``None`` when it can).

    Checks: root, ``ip``, ``nft`` and ``ethtool`` on PATH, and that ``ip netns add`` works.
    """
    if os.geteuid() != 0:
        return "network namespaces need root (euid is not 0)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("ethtool", "ethtool")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian package {package})"
    probe = f"nl{os.getpid()}-{secrets.token_hex(2)}-probe"
    try:
        _run(["ip", "netns", "add", probe])
    except LabError as err:
        return f"`ip netns add` failed: {err}"
    try:
        _run(["ip", "netns", "exec", probe, "nft", "list", "tables"])
    except LabError as err:
        return f"nftables does not work inside a namespace: {err}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def list_namespaces() -> list[str]:
    """Names of every network namespace (``ip -j netns list``)."""
    out = _run(["ip", "-j", "netns", "list"]).strip()
    return [str(entry["name"]) for entry in json.loads(out)] if out else []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete namespaces of labs (``nl<pid>-<hex4>-...``) whose creating process is gone.

    Returns the names deleted. Namespaces of live processes and any other namespace are
    left alone.
    """
    deleted = []
    for name in list_namespaces():
        match = _NS_RE.match(name)
        if not match:
            continue
        pid = int(_PREFIX_RE.match(match["prefix"])["pid"])  # type: ignore[index]
        if pid != os.getpid() and not _pid_alive(pid):
            _run(["ip", "netns", "del", name], check=False)
            deleted.append(name)
    return deleted


def _subnet_for(prefix: str) -> ipaddress.IPv4Network:
    """A /24 inside 198.18.0.0/15 chosen from a hash of ``prefix`` (512 choices)."""
    digest = int.from_bytes(hashlib.sha256(prefix.encode()).digest()[:4], "big")
    subnets = list(NETWORK.subnets(new_prefix=24))
    return subnets[digest % len(subnets)]


@dataclass
class Host:
    """One host of the lab: a namespace with ``eth0`` on the bridge.

    ``address`` is its IPv4 address on ``eth0`` (dotted quad), ``index`` its position.
    """

    lab: Lab
    index: int
    namespace: str
    address: str

    def command(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` prefixed with ``ip netns exec <namespace>``."""
        return ["ip", "netns", "exec", self.namespace, *cmd]

    def run(self, cmd: Sequence[str], check: bool = True, timeout: float = 30.0,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the namespace and wait (text mode, output captured)."""
        kwargs.setdefault("capture_output", True)
        done = subprocess.run(self.command(cmd), text=True, timeout=timeout, check=False,
                              **kwargs)
        if check and done.returncode != 0:
            raise LabError(f"[{self.namespace}] {' '.join(cmd)} exited {done.returncode}: "
                           f"{(done.stderr or '').strip()}")
        return done

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``cmd`` inside the namespace; the lab kills it on cleanup."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(self.command(cmd), text=True, start_new_session=True,
                                **kwargs)
        self.lab._processes.append(proc)
        return proc

    def python(self, code: str, *args: str, check: bool = True, timeout: float = 30.0,
               **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run ``python3 -c code args...`` (this interpreter) inside the namespace."""
        return self.run([sys.executable, "-c", textwrap.dedent(code), *args], check=check,
                        timeout=timeout, **kwargs)

    def python_popen(self, code: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``python3 -c code args...`` inside the namespace (killed on cleanup)."""
        return self.popen([sys.executable, "-c", textwrap.dedent(code), *args], **kwargs)


@dataclass
class Lab:
    """A bridged LAN of ``hosts`` network namespaces; use as a context manager.

    ``prefix`` names the namespaces (default ``nl<pid>-<4 hex>``, unique per run, at most
    11 characters; it must match that pattern so :func:`sweep_stale` can find it);
    ``mtu`` is the link MTU in bytes; ``igmp_snooping`` turns on the bridge's IGMP snooping
    (with the bridge as querier) so multicast only reaches ports that joined.

    ``nic_gso``: with the default ``False`` every host's ``eth0`` cuts UDP GSO batches into
    datagrams as they leave the host (``ethtool -K eth0 tx-udp-segmentation off``), as a real
    NIC puts separate datagrams on the wire; per-datagram loss injected on the far side (nft)
    then models a real lossy link. ``True`` keeps veth's software GSO: a batch crosses veth
    and the bridge whole, one skb (for tests of GRO coalescing across the lab).
    """

    hosts: int = 3
    mtu: int = 1500
    igmp_snooping: bool = False
    nic_gso: bool = False
    prefix: str = field(default_factory=lambda: f"nl{os.getpid()}-{secrets.token_hex(2)}")
    _hosts: list[Host] = field(default_factory=list, init=False, repr=False)
    _processes: list[subprocess.Popen[str]] = field(default_factory=list, init=False,
                                                    repr=False)
    _namespaces: list[str] = field(default_factory=list, init=False, repr=False)
    _old_handlers: dict[int, Any] = field(default_factory=dict, init=False, repr=False)
    _started: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"bad lab prefix {self.prefix!r}: expected nl<pid>-<4 hex>")
        if not 1 <= self.hosts <= 200:
            raise ValueError(f"bad host count {self.hosts}: expected 1..200")
        if not 68 <= self.mtu <= 65535:
            raise ValueError(f"bad MTU {self.mtu}: expected 68..65535")
        self.subnet = _subnet_for(self.prefix)

    # ------------------------------------------------------------------ addresses

    @property
    def bridge_namespace(self) -> str:
        """Name of the namespace that holds the bridge ``br0``."""
        return f"{self.prefix}-br"

    @property
    def broadcast(self) -> str:
        """The subnet-directed broadcast address of the lab LAN."""
        return str(self.subnet.broadcast_address)

    @property
    def netmask(self) -> str:
        """The LAN netmask (``255.255.255.0``)."""
        return str(self.subnet.netmask)

    def host(self, i: int) -> Host:
        """Host ``i`` (0-based)."""
        return self._hosts[i]

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self, persist: bool = False) -> None:
        """Build the namespaces, bridge, veth pairs, addresses and routes.

        ``persist`` (CLI ``up``) skips the atexit/signal cleanup hooks. On failure the
        partial lab is torn down and :class:`LabError` raised.
        """
        if self._started:
            raise LabError(f"lab {self.prefix} already started")
        self._started = True
        if not persist:
            atexit.register(self.close)
            self._install_signal_handlers()
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _ns_add(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _build(self) -> None:
        br = self.bridge_namespace
        self._ns_add(br)
        snooping = "1" if self.igmp_snooping else "0"
        _run(["ip", "-n", br, "link", "add", "br0", "type", "bridge", "mcast_snooping",
              snooping, "mcast_querier", snooping, "stp_state", "0", "forward_delay", "0"])
        _run(["ip", "-n", br, "link", "set", "br0", "mtu", str(self.mtu), "up"])
        hosts = list(self.subnet.hosts())
        for i in range(self.hosts):
            ns = f"{self.prefix}-h{i}"
            self._ns_add(ns)
            port = f"p{i}"
            _run(["ip", "-n", br, "link", "add", port, "mtu", str(self.mtu), "type", "veth",
                  "peer", "name", "eth0", "mtu", str(self.mtu), "netns", ns])
            _run(["ip", "-n", br, "link", "set", port, "master", "br0", "up"])
            address = str(hosts[i])
            _run(["ip", "-n", ns, "addr", "add", f"{address}/{self.subnet.prefixlen}",
                  "brd", "+", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            self._nic_segmentation(ns)
            _run(["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])
            self._hosts.append(Host(self, i, ns, address))

    def _nic_segmentation(self, ns: str) -> None:
        """Unless ``nic_gso``: segment UDP GSO batches on ``eth0``'s transmit, like a NIC."""
        if self.nic_gso:
            return
        if shutil.which("ethtool") is None:
            raise LabError("`ethtool` is not installed (Debian package ethtool)")
        _run(["ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx-udp-segmentation", "off"])

    def close(self) -> None:
        """Kill the lab's processes and delete its namespaces; safe to call twice."""
        for proc in self._processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for proc in self._processes:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=3.0)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._processes.clear()
        for ns in reversed(self._namespaces):
            _run(["ip", "netns", "del", ns], check=False)
        self._namespaces.clear()
        self._hosts.clear()
        self._restore_signal_handlers()
        atexit.unregister(self.close)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.close()
        raise SystemExit(128 + signum)

    # ------------------------------------------------------------------ faults

    def set_loss(self, i: int, permyriad: int) -> None:
        """Drop ``permyriad``/10000 of UDP datagrams arriving at host ``i`` (0 removes it).

        An nftables table ``inet netlab`` in the host's namespace, input hook, rule
        ``meta l4proto udp numgen random mod 10000 < N counter name udp_lost drop``.
        """
        if not 0 <= permyriad <= 10000:
            raise ValueError(f"bad loss {permyriad}: expected 0..10000 per ten thousand")
        host = self.host(i)
        script = [
            f"add table inet {_TABLE}",
            f"add counter inet {_TABLE} {_COUNTER}",
            f"add chain inet {_TABLE} input {{ type filter hook input priority -10; "
            "policy accept; }",
            f"flush chain inet {_TABLE} input",
        ]
        if permyriad:
            # numgen yields 0..9999, so "< 10000" is out of nft's range: total loss has no test.
            chance = f"numgen random mod 10000 < {permyriad} " if permyriad < 10000 else ""
            script.append(f"add rule inet {_TABLE} input meta l4proto udp {chance}"
                          f"counter name {_COUNTER} drop")
        host.run(["nft", "-f", "-"], input="\n".join(script) + "\n")

    def loss_counter(self, i: int) -> int:
        """How many UDP datagrams the loss rule of host ``i`` dropped so far (0 if none)."""
        done = self.host(i).run(["nft", "-j", "list", "counter", "inet", _TABLE, _COUNTER],
                                check=False)
        if done.returncode != 0:
            return 0
        for item in json.loads(done.stdout)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        return 0

    def link_down(self, i: int) -> None:
        """Pull host ``i``'s cable: the bridge-side veth goes down (host keeps its address)."""
        _run(["ip", "-n", self.bridge_namespace, "link", "set", f"p{i}", "down"])

    def link_up(self, i: int) -> None:
        """Plug host ``i``'s cable back in."""
        _run(["ip", "-n", self.bridge_namespace, "link", "set", f"p{i}", "up"])

    def describe(self) -> str:
        """One line per namespace with its address, for humans."""
        lines = [f"lab {self.prefix}: bridge br0 in {self.bridge_namespace}, "
                 f"subnet {self.subnet}, broadcast {self.broadcast}, MTU {self.mtu}"]
        lines += [f"  {h.namespace}: eth0 {h.address}" for h in self._hosts]
        return "\n".join(lines)


class RoutedLab(Lab):
    """Two LANs joined by a multicast router; use as a context manager.

    Layout for ``RoutedLab(hosts_a=1, hosts_b=2)``::

        h0 eth0 A.2 ─ br0 ─ eth0 A.1 [router <prefix>-rt] eth1 B.1 ─ br1 ─ h1 eth0 B.2
                                                                       └── h2 eth0 B.3

    Hosts ``0 .. hosts_a-1`` are in subnet A, the others in subnet B (two /24s of
    198.18.0.0/15); every host's default route goes through the router, which forwards
    unicast (``ip_forward``) and runs ``smcrouted`` with the static multicast routes
    ``mroutes`` (``(in_interface, group/len, out_interface)``; default: 239.255.0.0/16 from
    A to B). The router decrements the TTL, so a datagram sent with TTL 1 never crosses it.
    Its nftables table ``inet netlab`` counts forwarded UDP datagrams and bytes per
    direction (:meth:`forwarded`). Both bridges live in ``<prefix>-br``.

    Raises (from :meth:`start`):
        LabError: a command failed, or ``smcrouted`` is not installed or did not start.
    """

    def __init__(self, hosts_a: int = 1, hosts_b: int = 2, mtu: int = 1500,
                 mroutes: Sequence[tuple[str, str, str]] = (("eth0", "239.255.0.0/16", "eth1"),),
                 prefix: str | None = None, multicast_routing: bool = True) -> None:  # fmt: skip
        if hosts_a < 1 or hosts_b < 1:
            raise ValueError(f"bad host counts {hosts_a}, {hosts_b}: expected >= 1 each")
        kwargs = {"prefix": prefix} if prefix else {}
        super().__init__(hosts=hosts_a + hosts_b, mtu=mtu, **kwargs)  # type: ignore[arg-type]
        self.hosts_a = hosts_a
        self.hosts_b = hosts_b
        self.mroutes = list(mroutes) if multicast_routing else []
        self.multicast_routing = multicast_routing
        self.subnet_a = self.subnet
        subnets = list(NETWORK.subnets(new_prefix=24))
        self.subnet_b = subnets[(subnets.index(self.subnet_a) + 1) % len(subnets)]
        self.router_addresses = (str(next(self.subnet_a.hosts())),
                                 str(next(self.subnet_b.hosts())))  # fmt: skip
        self._smcroute: subprocess.Popen[str] | None = None

    @property
    def router_namespace(self) -> str:
        """Name of the router's namespace."""
        return f"{self.prefix}-rt"

    def _build(self) -> None:
        if self.multicast_routing and shutil.which("smcrouted") is None:
            raise LabError("`smcrouted` is not installed (Debian package smcroute)")
        br, rt = self.bridge_namespace, self.router_namespace
        self._ns_add(br)
        self._ns_add(rt)
        for bridge in ("br0", "br1"):
            _run(["ip", "-n", br, "link", "add", bridge, "type", "bridge", "mcast_snooping",
                  "0", "stp_state", "0", "forward_delay", "0"])
            _run(["ip", "-n", br, "link", "set", bridge, "mtu", str(self.mtu), "up"])
        for side, (subnet, gateway) in enumerate(zip((self.subnet_a, self.subnet_b),
                                                     self.router_addresses, strict=True)):
            port = f"r{side}"
            _run(["ip", "-n", br, "link", "add", port, "mtu", str(self.mtu), "type", "veth",
                  "peer", "name", f"eth{side}", "mtu", str(self.mtu), "netns", rt])
            _run(["ip", "-n", br, "link", "set", port, "master", f"br{side}", "up"])
            _run(["ip", "-n", rt, "addr", "add", f"{gateway}/{subnet.prefixlen}", "brd", "+",
                  "dev", f"eth{side}"])
            _run(["ip", "-n", rt, "link", "set", f"eth{side}", "up"])
        for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0"):
            _run(["ip", "netns", "exec", rt, "sysctl", "-q", "-w", key])
        for i in range(self.hosts):
            side = 0 if i < self.hosts_a else 1
            subnet = (self.subnet_a, self.subnet_b)[side]
            ns = f"{self.prefix}-h{i}"
            self._ns_add(ns)
            port = f"p{i}"
            _run(["ip", "-n", br, "link", "add", port, "mtu", str(self.mtu), "type", "veth",
                  "peer", "name", "eth0", "mtu", str(self.mtu), "netns", ns])
            _run(["ip", "-n", br, "link", "set", port, "master", f"br{side}", "up"])
            n = i if side == 0 else i - self.hosts_a
            address = str(list(subnet.hosts())[n + 1])  # .1 is the router
            _run(["ip", "-n", ns, "addr", "add", f"{address}/{subnet.prefixlen}", "brd", "+",
                  "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            self._nic_segmentation(ns)
            _run(["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])
            _run(["ip", "-n", ns, "route", "add", "default", "via",
                  self.router_addresses[side]])
            self._hosts.append(Host(self, i, ns, address))
        self._count_forwarding()
        if self.multicast_routing:  # off: no smcrouted at all, only unicast crosses
            self._start_smcroute()

    def set_forward_loss(self, permyriad: int, iif: str = "eth0") -> None:
        """Drop ``permyriad``/10000 of the UDP datagrams the router forwards from ``iif``.

        (``eth0``: from A to B.) A rule in the router's ``forward`` chain, counted in
        :meth:`forwarded` as ``lost``; 0 removes it.
        """
        if not 0 <= permyriad < 10000:
            raise ValueError(f"bad loss {permyriad}: expected 0..9999 per ten thousand")
        script = [f"add counter inet {_TABLE} lost",
                  f"add chain inet {_TABLE} lossy {{ type filter hook forward priority -10; "
                  "policy accept; }", f"flush chain inet {_TABLE} lossy"]  # fmt: skip
        if permyriad:
            script.append(f'add rule inet {_TABLE} lossy iifname "{iif}" meta l4proto udp '
                          f"numgen random mod 10000 < {permyriad} counter name lost drop")
        done = subprocess.run(["ip", "netns", "exec", self.router_namespace, "nft", "-f", "-"],
                              input="\n".join(script) + "\n", text=True, check=False,
                              capture_output=True, timeout=30)  # fmt: skip
        if done.returncode != 0:
            raise LabError(f"nft loss in the router: {done.stderr.strip()}")

    def _count_forwarding(self) -> None:
        script = [f"add table inet {_TABLE}",
                  f"add chain inet {_TABLE} forward {{ type filter hook forward priority 0; "
                  "policy accept; }"]  # fmt: skip
        for name, iif, oif in (("a_to_b", "eth0", "eth1"), ("b_to_a", "eth1", "eth0")):
            script.append(f"add counter inet {_TABLE} {name}")
            script.append(f'add rule inet {_TABLE} forward iifname "{iif}" oifname "{oif}" '
                          f"meta l4proto udp counter name {name}")  # fmt: skip
        done = subprocess.run(["ip", "netns", "exec", self.router_namespace, "nft", "-f", "-"],
                              input="\n".join(script) + "\n", text=True, check=False,
                              capture_output=True, timeout=30)  # fmt: skip
        if done.returncode != 0:
            raise LabError(f"nft counters in the router: {done.stderr.strip()}")

    def _start_smcroute(self) -> None:
        run_dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-smcroute-"))
        self._run_dir = run_dir
        conf = run_dir / "smcroute.conf"
        conf.write_text("".join(f"mroute from {iif} group {group} to {oif}\n"
                                for iif, group, oif in self.mroutes))  # fmt: skip
        cmd = ["ip", "netns", "exec", self.router_namespace, "smcrouted", "-n", "-N", "-f",
               str(conf), "-u", str(run_dir / "smcroute.sock"), "-P",
               str(run_dir / "smcroute.pid"), "-l", "info"]
        if self.mroutes:
            cmd.remove("-N")  # every interface a multicast VIF (not only `phyint enable`)
        with (run_dir / "smcrouted.log").open("w") as log:
            proc = subprocess.Popen(cmd, text=True, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
        self._processes.append(proc)
        self._smcroute = proc
        deadline = time.monotonic() + 10.0
        for _ in range(200):
            if proc.poll() is not None:
                raise LabError(f"smcrouted exited {proc.returncode}: {self.smcroute_log()}")
            if self.mroutes and self._mroutes_installed():
                return
            if not self.mroutes and (run_dir / "smcroute.sock").exists():
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise LabError(f"smcrouted did not install its routes in 10 s: {self.smcroute_log()}")

    def _mroutes_installed(self) -> bool:
        done = subprocess.run(["ip", "netns", "exec", self.router_namespace, "smcroutectl",
                               "-u", str(self._run_dir / "smcroute.sock"), "-p", "show",
                               "routes"], capture_output=True, text=True, check=False,
                              timeout=5)  # fmt: skip
        return done.returncode == 0 and all(g.split("/")[0] in done.stdout
                                            for _, g, _ in self.mroutes)  # fmt: skip

    def smcroute_log(self) -> str:
        """The end of ``smcrouted``'s log, for messages."""
        with contextlib.suppress(OSError, AttributeError):
            return (self._run_dir / "smcrouted.log").read_text()[-2000:]
        return ""

    def forwarded(self) -> dict[str, dict[str, int]]:
        """UDP datagrams and bytes the router forwarded so far, per direction.

        Returns ``{"a_to_b": {"packets": N, "bytes": N}, "b_to_a": {...}}`` (bytes are IP
        datagram sizes, headers included).
        """
        done = _run(["ip", "netns", "exec", self.router_namespace, "nft", "-j", "list",
                     "counters", "table", "inet", _TABLE])  # fmt: skip
        out: dict[str, dict[str, int]] = {}
        for item in json.loads(done)["nftables"]:
            counter = item.get("counter")
            if counter:
                out[counter["name"]] = {"packets": int(counter["packets"]),
                                        "bytes": int(counter["bytes"])}  # fmt: skip
        return out

    def close(self) -> None:
        """Stop ``smcrouted`` and everything :meth:`Lab.close` stops; safe to call twice."""
        super().close()
        run_dir = getattr(self, "_run_dir", None)
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)

    def describe(self) -> str:
        """One line per namespace with its address, for humans."""
        lines = [f"routed lab {self.prefix}: A {self.subnet_a} (br0), B {self.subnet_b} "
                 f"(br1) in {self.bridge_namespace}; router {self.router_namespace} eth0 "
                 f"{self.router_addresses[0]}, eth1 {self.router_addresses[1]}; mroutes "
                 + ", ".join(f"{i} {g} -> {o}" for i, g, o in self.mroutes)]  # fmt: skip
        lines += [f"  {h.namespace}: eth0 {h.address} "
                  f"(subnet {'A' if h.index < self.hosts_a else 'B'})" for h in self._hosts]
        return "\n".join(lines)


# ---------------------------------------------------------------------- CLI

_RECEIVE = """
import socket, struct, sys
group, port, address = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((group, port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4si", socket.inet_aton(group), socket.inet_aton(address), 0))
print("ready", flush=True)
s.settimeout(5.0)
data, src = s.recvfrom(2000)
print(data.decode(), src[0], flush=True)
"""

_SEND = """
import socket, sys
group, port, address = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
s.bind((address, 0))
s.sendto(b"hello from " + address.encode(), (group, port))
"""


_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7))
print("ready", flush=True)
s.settimeout(5.0)
data, src = s.recvfrom(2000)
s.sendto(data, src)
"""

_ECHO_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2.0)
s.sendto(b"ping", (sys.argv[1], 7))
assert s.recvfrom(2000)[0] == b"ping"
"""


def _ping(lab: Lab, src: int, dst: int) -> bool:
    """UDP echo from host ``src`` to host ``dst`` (``ping`` may not be installed)."""
    if shutil.which("ping"):
        return lab.host(src).run(["ping", "-c", "1", "-W", "2", lab.host(dst).address],
                                 check=False).returncode == 0
    server = lab.host(dst).python_popen(_ECHO, lab.host(dst).address)
    assert server.stdout is not None
    server.stdout.readline()
    ok = lab.host(src).python(_ECHO_CLIENT, lab.host(dst).address, check=False).returncode == 0
    server.communicate(timeout=10)
    return ok and server.returncode == 0


def _demo() -> int:
    group, port = "239.255.42.1", 5004
    with Lab(hosts=3) as lab:
        print(lab.describe())
        ok = True
        for i in (1, 2):
            reached = _ping(lab, 0, i)
            ok = ok and reached
            print(f"ping h0 -> h{i}: {'ok' if reached else 'FAILED'}")
        receivers = [lab.host(i).python_popen(_RECEIVE, group, str(port), lab.host(i).address)
                     for i in (1, 2)]
        for proc in receivers:
            assert proc.stdout is not None
            proc.stdout.readline()  # "ready"
        lab.host(0).python(_SEND, group, str(port), lab.host(0).address)
        for i, proc in zip((1, 2), receivers, strict=True):
            out, err = proc.communicate(timeout=10)
            print(f"h{i} got: {out.splitlines()[-1] if out.strip() else err.strip()}")
            ok = ok and proc.returncode == 0
    print("torn down; namespaces left:",
          [n for n in list_namespaces() if n.startswith(lab.prefix)])
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: ``up`` builds a lab and leaves it, ``down`` deletes it, ``demo`` runs one."""
    parser = argparse.ArgumentParser(prog="netlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build a lab and leave it running")
    up.add_argument("--prefix", default=None, help="nl<digits>-<4 hex> (default: unique)")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--mtu", type=int, default=1500)
    up.add_argument("--igmp-snooping", action="store_true")
    down = sub.add_parser("down", help="delete a lab's namespaces (or sweep stale labs)")
    down.add_argument("--prefix", default=None, help="lab to delete (default: sweep stale)")
    sub.add_parser("demo", help="3 hosts: ping, one multicast datagram h0 -> h1, h2, teardown")
    args = parser.parse_args(argv)

    reason = available()
    if reason:
        print(f"netlab: cannot build a lab here: {reason}", file=sys.stderr)
        return 1
    if args.command == "up":
        # A persistent lab is named after a pid that must outlive us: use 0, never swept.
        prefix = args.prefix or f"nl0-{secrets.token_hex(2)}"
        lab = Lab(hosts=args.hosts, mtu=args.mtu, igmp_snooping=args.igmp_snooping,
                  prefix=prefix)
        lab.start(persist=True)
        print(lab.describe())
        print(f"run commands with: ip netns exec {lab.prefix}-h0 ...; "
              f"delete with: python {sys.argv[0]} down --prefix {lab.prefix}")
        return 0
    if args.command == "down":
        if args.prefix:
            if not _PREFIX_RE.match(args.prefix):
                print(f"netlab: bad prefix {args.prefix!r}", file=sys.stderr)
                return 2
            gone = [n for n in list_namespaces() if n.startswith(args.prefix + "-")]
            for name in gone:
                _run(["ip", "netns", "del", name], check=False)
        else:
            gone = sweep_stale()
        print("deleted:", " ".join(gone) or "nothing")
        return 0
    return _demo()


if __name__ == "__main__":
    sys.exit(main())
