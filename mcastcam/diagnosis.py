"""What ``mcastcam doctor`` concludes from what it read: pure evaluation, no I/O.

Every function here takes text or numbers that the shell (:mod:`mcastcam.doctor`) read from
``/proc``, ``/sys``, ``ip -j``, ``nft -j list ruleset``, ``iptables-save`` or a socket, and
returns a :class:`Check`: a status (``ok``/``warn``/``fail``), a one-line finding and the fix.
Nothing here opens a file or a socket, so the rules are tested with captured sample text.

Status policy: ``fail`` means mcastcam cannot work as configured on this host (interface down,
no IPv4 address, no MULTICAST flag, the firewall drops the stream's port, the self-test did not
get its datagrams back, an unusable key file); ``warn`` means it works but degrades or breaks in
some networks (strict ``rp_filter``, ``rmem_max`` below what the receiver asks, no multicast
route, no IGMP querier heard, no sender answered discovery). :func:`exit_code` maps a list of
checks to the exit status: 1 when any check failed (or, with ``strict``, warned), else 0.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import shlex
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

__all__ = [
    "Check",
    "Packet",
    "Status",
    "evaluate_address",
    "evaluate_buffer",
    "evaluate_discovery",
    "evaluate_firewall",
    "evaluate_igmp",
    "evaluate_key_file",
    "evaluate_link",
    "evaluate_multicast_flag",
    "evaluate_route",
    "evaluate_rp_filter",
    "evaluate_self_test",
    "exit_code",
    "parse_igmp_query",
    "parse_iptables_save",
    "parse_nft_ruleset",
    "parse_proc_igmp",
    "render_text",
]

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000

IGMP_MEMBERSHIP_QUERY = 0x11


class Status(StrEnum):
    """The verdict of one check; ordered ``ok`` < ``warn`` < ``fail``."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        """0, 1, 2 for ok, warn, fail."""
        return ("ok", "warn", "fail").index(self.value)


@dataclass(frozen=True, slots=True)
class Check:
    """One finding of ``mcastcam doctor``.

    ``name``: a short stable id (``"rp_filter"``); ``status``; ``finding``: one line saying
    what was seen; ``fix``: what to run or change (``None`` when nothing is to be done);
    ``data``: the raw values behind the finding (JSON-serialisable).
    """

    name: str
    status: Status
    finding: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"name", "status", "finding", "fix", "data"}``."""
        return {"name": self.name, "status": self.status.value, "finding": self.finding,
                "fix": self.fix, "data": self.data}


def exit_code(checks: Iterable[Check], strict: bool = False) -> int:
    """0 when no check failed (warnings allowed), else 1; ``strict``: warnings count too."""
    worst = max((c.status.rank for c in checks), default=0)
    return 1 if worst >= (Status.WARN.rank if strict else Status.FAIL.rank) else 0


def render_text(checks: Sequence[Check]) -> str:
    """One line per check (``[ ok ] name: finding``), an indented ``fix:`` line, a summary."""
    lines = []
    for c in checks:
        lines.append(f"[{c.status.value:^4}] {c.name}: {c.finding}")
        if c.fix and c.status is not Status.OK:
            lines.append(f"       fix: {c.fix}")
    counts = {s: sum(c.status is s for c in checks) for s in Status}
    lines.append(f"{len(checks)} checks: {counts[Status.OK]} ok, {counts[Status.WARN]} warn, "
                 f"{counts[Status.FAIL]} fail")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- interface


def evaluate_link(name: str, flags: int | None, operstate: str | None) -> Check:
    """Interface present and up.

    ``flags``: ``/sys/class/net/IF/flags`` (``IFF_*`` bits), ``None`` when the interface does
    not exist; ``operstate``: ``/sys/class/net/IF/operstate`` (``up``, ``down``,
    ``lowerlayerdown``, ``dormant``, ``unknown``, ...).
    """
    if flags is None:
        return Check("interface", Status.FAIL, f"no interface {name}",
                     "pick one of `ip -br link` with --interface")
    data = {"flags": f"0x{flags:x}", "operstate": operstate}
    if not flags & IFF_UP:
        return Check("interface", Status.FAIL, f"{name} is administratively down",
                     f"ip link set {name} up", data)
    if operstate in ("down", "lowerlayerdown", "notpresent"):
        return Check("interface", Status.FAIL,
                     f"{name} is up but has no carrier (operstate {operstate})",
                     "check the cable, the switch port or the Wi-Fi association", data)
    if operstate in ("dormant", "testing"):
        return Check("interface", Status.WARN, f"{name} is {operstate}",
                     "wait for the link (802.1X or Wi-Fi authentication) to finish", data)
    return Check("interface", Status.OK, f"{name} is up (operstate {operstate})", None, data)


def evaluate_multicast_flag(name: str, flags: int) -> Check:
    """The ``MULTICAST`` flag (``IFF_MULTICAST``); loopback delivers multicast without it."""
    data = {"flags": f"0x{flags:x}"}
    if flags & IFF_MULTICAST:
        return Check("multicast_flag", Status.OK, f"{name} has the MULTICAST flag", None, data)
    if flags & IFF_LOOPBACK:
        return Check("multicast_flag", Status.OK,
                     f"{name} is loopback: no MULTICAST flag, local delivery works without it",
                     None, data)
    return Check("multicast_flag", Status.FAIL,
                 f"{name} lacks the MULTICAST flag: the NIC filters out group traffic",
                 f"ip link set {name} multicast on", data)


def evaluate_address(name: str, address: str | None, netmask: str | None,
                     broadcast: str | None, loopback: bool) -> Check:
    """IPv4 address and broadcast, as netifaces reports them (``None``: absent).

    netifaces reports the host's own address as the broadcast when the address was added
    without one (``ip addr add A/N dev IF`` without ``brd +``); discovery then "broadcasts"
    to this host only. The finding gives the directed broadcast derived from address/netmask.
    """
    if address is None:
        return Check("address", Status.FAIL, f"{name} has no IPv4 address",
                     f"ip addr add ADDRESS/PREFIX brd + dev {name} (or fix DHCP)")
    net = ipaddress.IPv4Network(f"{address}/{netmask or '255.255.255.255'}", strict=False)
    derived = str(net.broadcast_address)
    data = {"address": address, "prefix": net.prefixlen, "broadcast": broadcast,
            "derived_broadcast": derived}
    where = f"{address}/{net.prefixlen}"
    if broadcast is None:
        if loopback:
            return Check("address", Status.OK,
                         f"{name} {where}, no broadcast (loopback: use --group; discovery "
                         "needs a LAN interface)", None, data)
        return Check("address", Status.WARN,
                     f"{name} {where} has no broadcast address (point-to-point?): "
                     "discovery cannot work", "use --group on the receiver", data)
    if broadcast == address and net.prefixlen < 31:
        return Check("address", Status.WARN,
                     f"{name} {where} has no broadcast set (the broadcast reads as the host's "
                     f"own address {address}): discovery queries stay on this host; the "
                     f"directed broadcast is {derived}",
                     f"ip addr change {where} brd + dev {name} (or fix the network config "
                     "to set the broadcast)", data)
    if broadcast != derived:
        return Check("address", Status.WARN,
                     f"{name} {where} broadcast {broadcast} differs from the directed "
                     f"broadcast {derived}", f"ip addr change {where} brd + dev {name}", data)
    return Check("address", Status.OK, f"{name} {where} broadcast {broadcast}", None, data)


# ---------------------------------------------------------------------------- route


def evaluate_route(name: str, group: str, returncode: int, stdout: str, stderr: str) -> Check:
    """Where ``ip -j route get GROUP`` sends the group (exit code, stdout, stderr).

    mcastcam pins its sockets to ``--interface`` (``IP_MULTICAST_IF``, joins by index), so a
    missing or other route only warns: it still bites other programs (``ffplay udp://@G:P``)
    and mcastcam runs started without ``--interface``.
    """
    fix = f"ip route add 224.0.0.0/4 dev {name}"
    if returncode != 0:
        reason = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {returncode}"
        return Check("route", Status.WARN,
                     f"no route for {group} ({reason}): mcastcam works with --interface "
                     f"{name}, programs without an explicit interface do not", fix,
                     {"error": reason})
    try:
        routes = json.loads(stdout or "[]")
        dev = str(routes[0]["dev"]) if routes and "dev" in routes[0] else None
    except (ValueError, LookupError, TypeError):
        return Check("route", Status.WARN, f"cannot read `ip -j route get {group}`: "
                     f"{stdout.strip()[:80]!r}", fix)
    data = {"dev": dev}
    if dev == name:
        return Check("route", Status.OK, f"{group} is routed via {name}", None, data)
    return Check("route", Status.WARN,
                 f"{group} is routed via {dev}, not {name}: mcastcam pins {name}, programs "
                 f"without an explicit interface use {dev}", fix, data)


# ---------------------------------------------------------------------------- rp_filter


def evaluate_rp_filter(name: str, all_value: int | None, if_value: int | None) -> Check:
    """Reverse-path filtering; the kernel uses ``max(conf.all, conf.IF)``: 0 off, 1 strict, 2 loose.

    Strict mode drops datagrams whose source address is not routed back out of the interface
    they came in on: multicast from a sender on another subnet, a second NIC or a VPN vanishes
    without a counter in mcastcam.
    """
    values = [v for v in (all_value, if_value) if v is not None]
    data = {"all": all_value, name: if_value}
    if not values:
        return Check("rp_filter", Status.WARN, "cannot read net.ipv4.conf.*.rp_filter", None,
                     data)
    effective = max(values)
    data["effective"] = effective
    if effective == 1:
        which = " and ".join(f"net.ipv4.conf.{n}.rp_filter"
                             for n, v in (("all", all_value), (name, if_value)) if v == 1)
        return Check("rp_filter", Status.WARN,
                     f"strict reverse-path filtering on {name} ({which} = 1) drops multicast "
                     "from senders whose address is not routed back via this interface",
                     f"sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{name}.rp_filter=2"
                     " (loose), or route the senders' subnet via this interface", data)
    mode = {0: "off", 2: "loose"}.get(effective, str(effective))
    return Check("rp_filter", Status.OK, f"rp_filter on {name} is {mode}", None, data)


# ---------------------------------------------------------------------------- buffers


def evaluate_buffer(which: str, asked: int | None, maximum: int | None, granted: int | None,
                    default: int | None = None, asked_by: str = "") -> Check:
    """``net.core.rmem_max`` (``which="rcv"``) or ``wmem_max`` (``"snd"``) against the ask.

    ``asked``: bytes the program asks for (``SO_RCVBUF``/``SO_SNDBUF``; ``None``: it asks
    nothing and gets ``default`` = ``net.core.{r,w}mem_default``); ``maximum``: the sysctl;
    ``granted``: what ``getsockopt`` returned after asking (the kernel doubles it), ``None``
    if not measured. All in bytes.
    """
    sysctl = "net.core.rmem_max" if which == "rcv" else "net.core.wmem_max"
    name = "rmem_max" if which == "rcv" else "wmem_max"
    option = "SO_RCVBUF" if which == "rcv" else "SO_SNDBUF"
    data = {"asked": asked, "max": maximum, "granted": granted, "default": default}
    if asked is None:
        return Check(name, Status.OK,
                     f"{sysctl} = {maximum} bytes; {asked_by or 'the program'} asks no "
                     f"{option} (the kernel default is {default} bytes)", None, data)
    got = granted // 2 if granted is not None else (min(asked, maximum) if maximum else None)
    if got is not None and got < asked:
        return Check(name, Status.WARN,
                     f"{sysctl} = {maximum} bytes caps {option}: {asked_by or 'mcastcam'} asks "
                     f"{asked} bytes, gets {got}; bursts of datagrams overflow it "
                     "(nstat UdpRcvbufErrors)",
                     f"sysctl -w {sysctl}={asked} and add `{sysctl}={asked}` to "
                     "/etc/sysctl.d/60-mcastcam.conf", data)
    return Check(name, Status.OK,
                 f"{sysctl} = {maximum} bytes: {asked_by or 'mcastcam'} gets the {asked} "
                 f"bytes of {option} it asks", None, data)


# ---------------------------------------------------------------------------- firewall


@dataclass(frozen=True, slots=True)
class Packet:
    """The datagram a firewall rule is evaluated against: UDP to ``daddr:dport`` on ``iif``.

    ``daddr`` ``None`` means unknown (any address rule is then "maybe"); conntrack state is
    ``new`` (one-way UDP never becomes ``established``).
    """

    dport: int
    daddr: str | None
    iif: str


# Three-valued match results: True, False, None (cannot tell: saddr, numgen, named sets ...).
Tri = bool | None


@dataclass(frozen=True, slots=True)
class _Match:
    key: str  # l4proto dport daddr iif ctstate other
    op: str  # == != < > <= >=
    value: Any  # int | str | list of (lo, hi) int ranges | IPv4Network list | str patterns


@dataclass(frozen=True, slots=True)
class _Rule:
    matches: tuple[_Match, ...]
    verdict: str | None  # accept drop jump goto return None
    target: str | None
    text: str


@dataclass
class _Chain:
    name: str
    rules: list[_Rule] = field(default_factory=list)
    hook: str | None = None
    policy: str | None = None


@dataclass
class _Ruleset:
    source: str  # "nftables" or "iptables"
    chains: dict[str, _Chain] = field(default_factory=dict)  # key: "table chain"


_INPUT_HOOKS = ("input", "prerouting")


T = TypeVar("T")


def _elements(value: Any, leaf: Callable[[Any], list[T] | None]) -> list[T] | None:
    """An nft right-hand side, a ``{"set": [...]}`` or one element, through ``leaf``.

    ``None`` when any element is not a literal ``leaf`` understands (a named set, a map).
    """
    if not (isinstance(value, dict) and "set" in value):
        return leaf(value)
    out: list[T] = []
    for elem in value["set"]:
        got = _elements(elem, leaf)
        if got is None:
            return None
        out += got
    return out


def _port_leaf(value: Any) -> list[tuple[int, int]] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return [(value, value)]
    if isinstance(value, dict) and "range" in value:
        lo, hi = value["range"]
        return [(int(lo), int(hi))] if isinstance(lo, int) and isinstance(hi, int) else None
    return None


def _net_leaf(value: Any) -> list[ipaddress.IPv4Network] | None:
    try:
        if isinstance(value, str):
            return [ipaddress.IPv4Network(value, strict=False)]
        if isinstance(value, dict) and "prefix" in value:
            p = value["prefix"]
            return [ipaddress.IPv4Network(f"{p['addr']}/{p['len']}", strict=False)]
        if isinstance(value, dict) and "range" in value:
            lo, hi = (ipaddress.IPv4Address(v) for v in value["range"])
            return list(ipaddress.summarize_address_range(lo, hi))
    except (ValueError, KeyError, TypeError):
        return None
    return None


def _ports(value: Any) -> list[tuple[int, int]] | None:
    """An nft right-hand side -> port ranges; ``None`` when not a port literal."""
    return _elements(value, _port_leaf)


def _nets(value: Any) -> list[ipaddress.IPv4Network] | None:
    """An nft right-hand side -> IPv4 networks; ``None`` when not an address literal."""
    return _elements(value, _net_leaf)


def _rhs_text(value: Any) -> str:
    if isinstance(value, dict) and "set" in value:
        return "{ " + ", ".join(_rhs_text(v) for v in value["set"]) + " }"
    if isinstance(value, dict) and "range" in value:
        return f"{value['range'][0]}-{value['range'][1]}"
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _nft_match(m: dict[str, Any]) -> tuple[_Match, str]:
    left, right, op = m.get("left"), m.get("right"), str(m.get("op", "=="))
    op = {"in": "=="}.get(op, op)
    if isinstance(left, dict) and "payload" in left:
        proto = left["payload"].get("protocol")
        fld = left["payload"].get("field")
        text = f"{proto} {fld} {'' if op == '==' else op + ' '}{_rhs_text(right)}"
        if proto in ("udp", "th") and fld == "dport":
            ports = _ports(right)
            return (_Match("dport", op, ports) if ports is not None else
                    _Match("other", op, None)), text
        if proto in ("tcp", "sctp", "dccp", "icmp", "ip6", "icmpv6", "ether", "arp"):
            return _Match("l4proto", op, proto if proto != "ip6" else "ipv6-only"), text
        if proto == "ip" and fld == "protocol":
            return _Match("l4proto", op, right), text
        if proto == "ip" and fld == "daddr":
            nets = _nets(right)
            return (_Match("daddr", op, nets) if nets is not None else
                    _Match("other", op, None)), text
        return _Match("other", op, None), text
    if isinstance(left, dict) and "meta" in left:
        key = left["meta"].get("key")
        text = f"meta {key} {'' if op == '==' else op + ' '}{_rhs_text(right)}"
        if key == "l4proto":
            return _Match("l4proto", op, right), text
        if key in ("iif", "iifname"):
            names = right["set"] if isinstance(right, dict) and "set" in right else [right]
            return _Match("iif", op, [str(n) for n in names]), text
        if key == "nfproto":
            return _Match("nfproto", op, right), text
        return _Match("other", op, None), text
    if isinstance(left, dict) and "ct" in left and left["ct"].get("key") == "state":
        states = right if isinstance(right, list) else [right]
        return _Match("ctstate", op, [str(s) for s in states]), f"ct state {_rhs_text(right)}"
    return _Match("other", op, None), json.dumps(m, separators=(",", ":"))[:60]


def _nft_rule(exprs: list[dict[str, Any]]) -> _Rule:
    matches: list[_Match] = []
    parts: list[str] = []
    verdict: str | None = None
    target: str | None = None
    for e in exprs:
        if "match" in e:
            match, text = _nft_match(e["match"])
            matches.append(match)
            parts.append(text)
        elif "accept" in e or "drop" in e or "return" in e:
            verdict = next(k for k in ("accept", "drop", "return") if k in e)
            parts.append(verdict)
        elif "reject" in e:
            verdict = "drop"
            parts.append("reject")
        elif "jump" in e or "goto" in e:
            verdict = "jump" if "jump" in e else "goto"
            target = str(e[verdict]["target"])
            parts.append(f"{verdict} {target}")
        elif "xt" in e:
            xt = e["xt"]
            name = str(xt.get("name", "?"))
            if xt.get("type") == "target" and name in ("REJECT", "DROP", "ACCEPT"):
                verdict = "drop" if name != "ACCEPT" else "accept"
            elif xt.get("type") == "match":
                matches.append(_Match("other", "==", None))
            parts.append(f"xt {name}")
        elif "counter" in e or "log" in e or "limit" in e:
            if "limit" in e:
                matches.append(_Match("other", "==", None))
            parts.append(next(iter(e)))
        else:
            matches.append(_Match("other", "==", None))
            parts.append(next(iter(e), "?"))
    return _Rule(tuple(matches), verdict, target, " ".join(parts))


def parse_nft_ruleset(text: str) -> _Ruleset:
    """Parse ``nft -j list ruleset`` (libnftables JSON, schema 1).

    Raises:
        ValueError: not that JSON.
    """
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("nftables"), list):
        raise ValueError("not nft JSON: no top-level 'nftables' list")
    rs = _Ruleset("nftables")
    for item in doc["nftables"]:
        if "chain" in item:
            c = item["chain"]
            key = f"{c['family']} {c['table']} {c['name']}"
            hook = c.get("hook") if c.get("type", "filter") == "filter" else None
            if c["family"] not in ("ip", "inet"):
                hook = None
            rs.chains[key] = _Chain(key, hook=hook, policy=c.get("policy", "accept"))
        elif "rule" in item:
            r = item["rule"]
            key = f"{r['family']} {r['table']} {r['chain']}"
            rs.chains.setdefault(key, _Chain(key)).rules.append(_nft_rule(r.get("expr", [])))
    # jump targets live in the same table: make them "family table name" keys
    return rs


def _ipt_ports(text: str) -> list[tuple[int, int]] | None:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return None
        out.append((int(lo), int(hi or lo)))
    return out


def parse_iptables_save(text: str) -> _Ruleset:
    """Parse ``iptables-save`` output (tables ``filter``, ``mangle``, ``raw``: INPUT/PREROUTING).

    Understood: ``-p``, ``--dport``/``--dports``/``--destination-port(s)``, ``-d``, ``-i``,
    ``--ctstate``/``--state``, ``!`` before them, ``-j``/``-g``; any other option makes the
    rule "maybe" (it could match our datagrams).
    """
    rs = _Ruleset("iptables")
    table = ""
    hooks = {"INPUT": "input", "PREROUTING": "prerouting"}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and table in ("filter", "mangle", "raw"):
            name, policy = [*line[1:].split(), "-"][:2]
            key = f"{table} {name}"
            rs.chains[key] = _Chain(key, hook=hooks.get(name),
                                    policy={"DROP": "drop", "ACCEPT": "accept"}.get(policy))
        elif line.startswith("-A ") and table in ("filter", "mangle", "raw"):
            try:
                tokens = shlex.split(line)
            except ValueError:
                continue
            key = f"{table} {tokens[1]}"
            rs.chains.setdefault(key, _Chain(key)).rules.append(_ipt_rule(tokens[2:], line))
    return rs


def _ipt_rule(tokens: list[str], line: str) -> _Rule:
    matches: list[_Match] = []
    verdict: str | None = None
    target: str | None = None
    negate = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        arg = tokens[i + 1] if i + 1 < len(tokens) else ""
        op = "!=" if negate else "=="
        negate = False
        step = 2
        if tok == "!":
            negate, step = True, 1
        elif tok in ("-p", "--protocol"):
            matches.append(_Match("l4proto", op, arg))
        elif tok in ("--dport", "--dports", "--destination-port", "--destination-ports"):
            ports = _ipt_ports(arg)
            matches.append(_Match("dport", op, ports) if ports else _Match("other", op, None))
        elif tok in ("-d", "--destination"):
            try:
                matches.append(_Match("daddr", op, [ipaddress.IPv4Network(arg, strict=False)]))
            except ValueError:
                matches.append(_Match("other", op, None))
        elif tok in ("-i", "--in-interface"):
            matches.append(_Match("iif", op, [arg.replace("+", "*")]))
        elif tok in ("--ctstate", "--state"):
            matches.append(_Match("ctstate", op, [s.lower() for s in arg.split(",")]))
        elif tok == "-m":
            pass  # the module's own options follow
        elif tok in ("-j", "--jump", "-g", "--goto"):
            name = arg.upper()
            if name in ("ACCEPT", "DROP", "REJECT", "RETURN"):
                verdict = {"ACCEPT": "accept", "RETURN": "return"}.get(name, "drop")
            elif name in ("LOG", "NFLOG", "MARK", "CONNMARK", "CT", "NOTRACK", "TRACE"):
                verdict = None
            else:
                verdict, target = ("goto" if tok in ("-g", "--goto") else "jump"), arg
            step = len(tokens)  # target options follow; nothing else to read
        elif tok.startswith("-"):
            matches.append(_Match("other", op, None))
            if arg.startswith("-") or not arg:
                step = 1
        else:
            step = 1
        i += step
    return _Rule(tuple(matches), verdict, target, line.removeprefix("-A ").strip())


def _match(m: _Match, pkt: Packet) -> Tri:
    result: Tri
    if m.key == "dport":
        result = any(lo <= pkt.dport <= hi for lo, hi in m.value)
    elif m.key == "l4proto":
        if m.op not in ("==", "!="):
            return None
        names = m.value["set"] if isinstance(m.value, dict) and "set" in m.value else [m.value]
        result = any(str(v).lower() in ("udp", "17") for v in names)
    elif m.key == "nfproto":
        result = str(m.value).lower() in ("ipv4", "2")
    elif m.key == "daddr":
        if pkt.daddr is None:
            return None
        result = any(ipaddress.IPv4Address(pkt.daddr) in n for n in m.value)
    elif m.key == "iif":
        result = any(fnmatch.fnmatchcase(pkt.iif, p) for p in m.value)
    elif m.key == "ctstate":
        result = "new" in m.value
    else:
        return None
    if m.op == "!=":
        return not result
    if m.op != "==":
        return None
    return result


def _rule_matches(rule: _Rule, pkt: Packet) -> Tri:
    seen_unknown = False
    for m in rule.matches:
        r = _match(m, pkt)
        if r is False:
            return False
        if r is None:
            seen_unknown = True
    return None if seen_unknown else True


@dataclass
class _Walk:
    outcomes: set[str] = field(default_factory=set)
    drops: list[tuple[bool, str]] = field(default_factory=list)  # (certain, description)


def _walk(rs: _Ruleset, chain: _Chain, pkt: Packet, walk: _Walk, depth: int) -> bool:
    """Walk ``chain``; add outcomes; return whether the packet may fall off its end."""
    if depth > 16:
        walk.outcomes.add("accept")
        return True
    table = chain.name.rsplit(" ", 1)[0]
    for rule in chain.rules:
        m = _rule_matches(rule, pkt)
        if m is False or rule.verdict is None:
            continue
        if rule.verdict in ("accept", "drop"):
            walk.outcomes.add(rule.verdict)
            if rule.verdict == "drop":
                walk.drops.append((m is True, f"{rs.source} {chain.name}: {rule.text}"))
            if m is True:
                return False
        elif rule.verdict == "return":
            if m is True:
                return True
        elif rule.verdict in ("jump", "goto"):
            sub = rs.chains.get(f"{table} {rule.target}")
            falls = True if sub is None else _walk(rs, sub, pkt, walk, depth + 1)
            if m is True and (not falls or rule.verdict == "goto"):
                return falls if rule.verdict == "goto" else False
    return True


def _verdicts(rs: _Ruleset, pkt: Packet) -> tuple[str, list[str]]:
    """``("drop"|"maybe"|"accept", descriptions of the dropping rules/policies)``."""
    certain: list[str] = []
    maybe: list[str] = []
    for chain in rs.chains.values():
        if chain.hook not in _INPUT_HOOKS:
            continue
        walk = _Walk()
        if _walk(rs, chain, pkt, walk, 0):
            policy = chain.policy or "accept"
            walk.outcomes.add(policy)
            if policy == "drop":
                sure = walk.outcomes == {"drop"}
                walk.drops.append((sure, f"{rs.source} {chain.name}: policy drop"))
        if walk.outcomes == {"drop"}:
            certain += [d for sure, d in walk.drops if sure] or [d for _, d in walk.drops]
        elif "drop" in walk.outcomes:
            maybe += [d for _, d in walk.drops]
    if certain:
        return "drop", certain
    return ("maybe", maybe) if maybe else ("accept", [])


def _accept_fix(rs: _Ruleset, chain_desc: str, pkt: Packet) -> str:
    if rs.source == "iptables":
        chain = chain_desc.split(": ", 1)[0].split()[-1]
        return f"iptables -I {chain} -p udp --dport {pkt.dport} -j ACCEPT"
    family, table, chain = chain_desc.split(": ", 1)[0].split()[1:4]
    return f"nft insert rule {family} {table} {chain} udp dport {pkt.dport} accept"


def evaluate_firewall(rulesets: Sequence[_Ruleset], stream: Packet,
                      discovery: Packet | None, errors: Sequence[str] = ()) -> Check:
    """Whether nftables/iptables input rules drop the stream's or discovery's datagrams.

    ``rulesets``: from :func:`parse_nft_ruleset` / :func:`parse_iptables_save`; ``errors``:
    why a tool could not be read (``nft`` missing, not root ...). A certain drop of the
    stream's port fails, of the discovery port warns; a rule that may drop (it also matches
    on things we cannot know, like the source address) warns.
    """
    worst = Status.OK
    findings: list[str] = []
    fixes: list[str] = []
    data: dict[str, Any] = {"sources": [rs.source for rs in rulesets], "errors": list(errors)}
    for what, pkt in (("stream", stream), ("discovery", discovery)):
        if pkt is None:
            continue
        dest = f"udp {pkt.daddr or '*'}:{pkt.dport}"
        for rs in rulesets:
            verdict, where = _verdicts(rs, pkt)
            data[f"{what}_{rs.source}"] = {"verdict": verdict, "rules": where}
            if verdict == "accept":
                continue
            status = (Status.FAIL if what == "stream" else Status.WARN) \
                if verdict == "drop" else Status.WARN
            worst = max(worst, status, key=lambda s: s.rank)
            verb = "drops" if verdict == "drop" else "may drop"
            findings.append(f"{rs.source} {verb} {what} {dest} ({'; '.join(where[:2])})")
            fixes.append(_accept_fix(rs, where[0], pkt) if where else "")
    if errors and not rulesets:
        return Check("firewall", Status.WARN, "cannot read the firewall: " + "; ".join(errors),
                     "run as root with nft (nftables) installed", data)
    if not findings:
        ports = f"{stream.dport}" + (f" and {discovery.dport}" if discovery else "")
        read = " and ".join(rs.source for rs in rulesets) or "nothing"
        return Check("firewall", Status.OK, f"{read}: nothing drops udp {ports}", None, data)
    return Check("firewall", worst, "; ".join(findings),
                 "; ".join(f for f in fixes if f) or None, data)


# ---------------------------------------------------------------------------- IGMP


def parse_proc_igmp(text: str) -> dict[str, dict[str, Any]]:
    """``/proc/net/igmp`` -> ``{device: {"querier": "V3", "groups": ["239.255.0.1", ...]}}``.

    Group addresses are printed as little-endian hex (``010000E0`` = 224.0.0.1).
    """
    out: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        if not line[0].isspace():
            head, _, tail = line.partition(":")
            parts = head.split()
            fields = tail.split()
            if len(parts) < 2:
                current = None
                continue
            current = {"querier": fields[1] if len(fields) > 1 else None, "groups": []}
            out[parts[1]] = current
        elif current is not None:
            word = line.split()[0]
            try:
                raw = struct.pack("<I", int(word, 16))
            except (ValueError, struct.error):
                continue
            current["groups"].append(str(ipaddress.IPv4Address(raw)))
    return out


def parse_igmp_query(packet: bytes) -> tuple[int, str] | None:
    """An IP datagram from a raw ``IPPROTO_IGMP`` socket -> ``(version, group)`` if a query.

    Version by length and Max Resp Code (RFC 3376 §7.1): 8 bytes with code 0: IGMPv1; 8
    bytes: v2; 12 or more: v3. ``group`` ``"0.0.0.0"`` is a general query. ``None`` for
    anything else (reports, truncated datagrams).
    """
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = int.from_bytes(packet[2:4], "big")
    igmp = packet[ihl : max(ihl, min(len(packet), total or len(packet)))]
    if len(igmp) < 8 or igmp[0] != IGMP_MEMBERSHIP_QUERY:
        return None
    group = str(ipaddress.IPv4Address(igmp[4:8]))
    if len(igmp) >= 12:
        return 3, group
    return (1 if igmp[1] == 0 else 2), group


def evaluate_igmp(name: str, loopback: bool, force_version: int | None,
                  proc_querier: str | None, heard: Sequence[tuple[str, int]],
                  waited: float, listen_error: str | None = None) -> Check:
    """IGMP version in use and whether a querier was heard.

    ``force_version``: ``net.ipv4.conf.IF.force_igmp_version`` (0 = automatic);
    ``proc_querier``: the ``Querier`` column of ``/proc/net/igmp`` (``V1``/``V2``/``V3``: the
    version this host speaks, lowered when an older querier was heard); ``heard``:
    ``(source address, version)`` of the queries heard while listening ``waited`` seconds;
    ``listen_error``: why listening was impossible (no CAP_NET_RAW ...).
    """
    data: dict[str, Any] = {"force_igmp_version": force_version, "proc_querier": proc_querier,
                            "heard": [list(h) for h in heard], "waited": waited}
    version = (f"forced to v{force_version}" if force_version else
               f"{proc_querier or 'v3'} (automatic)").replace("V", "v")
    if loopback:
        return Check("igmp", Status.OK, f"{name} is loopback: no IGMP on it", None, data)
    if heard:
        src, ver = heard[0]
        who = f"{src} (a switch without an address)" if src == "0.0.0.0" else src
        return Check("igmp", Status.OK,
                     f"IGMP {version}; querier heard: {who}, IGMPv{ver}", None, data)
    if not force_version and proc_querier in ("V1", "V2"):
        # The kernel drops below v3 only for the Older Version Querier Present Timeout after
        # an older querier's query (RFC 3376 §7.2.1: 260 s with the default intervals).
        return Check("igmp", Status.OK,
                     f"IGMP {version}: the kernel heard an IGMP{proc_querier.lower()} querier "
                     f"in the last few minutes (/proc/net/igmp shows {proc_querier})", None,
                     data)
    if listen_error:
        return Check("igmp", Status.WARN,
                     f"IGMP {version}; cannot listen for a querier: {listen_error}",
                     "run mcastcam doctor as root (a raw IGMP socket needs CAP_NET_RAW)", data)
    return Check("igmp", Status.WARN,
                 f"IGMP {version}; no querier heard in {waited:g} s: behind an IGMP-snooping "
                 "switch streams stop after a few minutes (queriers ask every 125 s; "
                 "--igmp-wait 130 to be sure)",
                 "enable an IGMP querier on the switch or router (\"IGMP snooping querier\"), "
                 "or on a Linux bridge: ip link set BRIDGE type bridge mcast_querier 1", data)


# ---------------------------------------------------------------------------- the rest


def evaluate_self_test(name: str, group: str, port: int, sent: int, received: int,
                       error: str | None, elapsed: float) -> Check:
    """The self-test: ``sent`` datagrams to ``group:port`` (TTL 0), ``received`` came back."""
    data = {"group": f"{group}:{port}", "sent": sent, "received": received,
            "elapsed": round(elapsed, 4)}
    if error:
        return Check("self_test", Status.FAIL, f"self-test on {name} failed: {error}",
                     "fix the checks above (interface, address) and try again", data)
    if received == 0:
        return Check("self_test", Status.FAIL,
                     f"sent {sent} datagrams to {group}:{port} on {name} (TTL 0, loop on), "
                     f"none came back in {elapsed:.2f} s",
                     "check the firewall (output and input hooks) and the interface", data)
    status = Status.OK if received == sent else Status.WARN
    return Check("self_test", status,
                 f"{received}/{sent} datagrams to {group}:{port} looped back on {name} "
                 f"(TTL 0) in {elapsed * 1000:.0f} ms", None if status is Status.OK else
                 "datagrams lost on this host: check rmem_max and the firewall", data)


def evaluate_discovery(name: str, found: Sequence[str], timeout: float, skipped: str | None,
                       error: str | None = None) -> Check:
    """Senders that answered discovery (``found``: one description line each)."""
    data = {"found": list(found), "timeout": timeout}
    if skipped:
        return Check("discovery", Status.OK, f"skipped: {skipped}", None, data)
    if error:
        return Check("discovery", Status.WARN, f"discovery on {name} failed: {error}",
                     "see the address and firewall checks", data)
    if not found:
        return Check("discovery", Status.WARN,
                     f"no sender answered discovery on {name} within {timeout:g} s",
                     "start mcastcam-send on this LAN, allow UDP 8990, or give the receiver "
                     "--group", data)
    return Check("discovery", Status.OK,
                 f"{len(found)} sender(s) on {name}: " + " | ".join(found[:3]), None, data)


def evaluate_key_file(path: str, mode: int | None, is_file: bool, readable: bool,
                      error: str | None = None) -> Check:
    """A key file: present, a regular file, readable by us, not accessible to group/others.

    ``mode``: ``st_mode`` permission bits (``None`` when it does not exist).
    """
    data = {"path": path, "mode": None if mode is None else f"{mode & 0o7777:04o}"}
    if mode is None:
        return Check("key_file", Status.FAIL, f"key file {path}: {error or 'not found'}",
                     "mcastcam keygen FILE, or fix the path", data)
    if not is_file:
        return Check("key_file", Status.FAIL, f"key file {path} is not a regular file",
                     "point --key-file at the key file", data)
    if mode & 0o077:
        return Check("key_file", Status.FAIL,
                     f"key file {path} has mode {mode & 0o777:04o}: readable or writable by "
                     "group/others, so mcastcam refuses it (anyone on the host could forge "
                     "the stream)", f"chmod 600 {shlex.quote(path)}", data)
    if not readable:
        return Check("key_file", Status.FAIL, f"key file {path} is not readable by this user",
                     "run as the key's owner (or chown it to the service user)", data)
    return Check("key_file", Status.OK, f"key file {path} mode {mode & 0o777:04o}", None,
                 data)
