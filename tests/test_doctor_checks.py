"""The pure evaluation of ``mcastcam doctor`` (mcastcam/diagnosis.py) on captured text.

Samples are real output captured on Debian 12 (nftables 1.0.6, iptables 1.8.9 nf_tables,
kernel 6.x) in a throwaway network namespace: ``nft -j list ruleset`` for two rulesets,
``iptables-save`` and the same rules as ``nft -j`` sees them (iptables-nft), ``/proc/net/igmp``
and IGMP queries read from a raw socket in the lab (a Linux bridge querier, v2 and v3).
"""

from __future__ import annotations

import json

import pytest

from mcastcam import diagnosis
from mcastcam.diagnosis import Check, Packet, Status

# nft -f: inet filter input policy drop; ct state established,related accept; ct state
# invalid drop; iif "lo" accept; ip protocol igmp accept; udp dport { 8990, 5353 } accept;
# tcp dport 8080 accept; ip saddr 10.0.0.0/8 udp dport 8989 accept. Plus ip mangle pre
# (prerouting): iifname "eth0" udp dport 8000-9000 counter drop.
NFT_POLICY_DROP = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json'
    '_schema_version": 1}}, {"table": {"family": "inet", "name": "filter", "handle": 1}}, {"c'
    'hain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filt'
    'er", "hook": "input", "prio": 0, "policy": "drop"}}, {"rule": {"family": "inet", "table"'
    ': "filter", "chain": "input", "handle": 2, "expr": [{"match": {"op": "in", "left": {"ct"'
    ': {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}}, {"rule"'
    ': {"family": "inet", "table": "filter", "chain": "input", "handle": 3, "expr": [{"match"'
    ': {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}, {"drop": null}]}}'
    ', {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 4, "expr": '
    '[{"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}}, {"accept": nu'
    'll}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 5, "e'
    'xpr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "protocol"'
    '}}, "right": "igmp"}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "filter'
    '", "chain": "input", "handle": 7, "expr": [{"match": {"op": "==", "left": {"payload": {"'
    'protocol": "udp", "field": "dport"}}, "right": {"set": [5353, 8990]}}}, {"accept": null}'
    ']}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 8, "expr'
    '": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "'
    'right": 8080}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "filter", "cha'
    'in": "input", "handle": 9, "expr": [{"match": {"op": "==", "left": {"payload": {"protoco'
    'l": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}}, {"m'
    'atch": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right":'
    ' 8989}}, {"accept": null}]}}, {"table": {"family": "ip", "name": "mangle", "handle": 2}}'
    ', {"chain": {"family": "ip", "table": "mangle", "name": "pre", "handle": 1, "type": "fil'
    'ter", "hook": "prerouting", "prio": -150, "policy": "accept"}}, {"rule": {"family": "ip"'
    ', "table": "mangle", "chain": "pre", "handle": 2, "expr": [{"match": {"op": "==", "left"'
    ': {"meta": {"key": "iifname"}}, "right": "eth0"}}, {"match": {"op": "==", "left": {"payl'
    'oad": {"protocol": "udp", "field": "dport"}}, "right": {"range": [8000, 9000]}}}, {"coun'
    'ter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}]}'
)

# inet netlab: input (priority -10, policy accept): meta l4proto udp numgen random mod 10000
# < 300 counter drop; udp dport 8989 reject; jump extra. extra: ip daddr 239.255.0.0/16 drop.
NFT_REJECT_JUMP = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json'
    '_schema_version": 1}}, {"table": {"family": "inet", "name": "netlab", "handle": 3}}, {"c'
    'hain": {"family": "inet", "table": "netlab", "name": "extra", "handle": 1}}, {"chain": {'
    '"family": "inet", "table": "netlab", "name": "input", "handle": 2, "type": "filter", "ho'
    'ok": "input", "prio": -10, "policy": "accept"}}, {"rule": {"family": "inet", "table": "n'
    'etlab", "chain": "extra", "handle": 3, "expr": [{"match": {"op": "==", "left": {"payload'
    '": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "239.255.0.0", "l'
    'en": 16}}}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "netlab", "chain": '
    '"input", "handle": 4, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"'
    '}}, "right": "udp"}}, {"match": {"op": "<", "left": {"numgen": {"mode": "random", "mod":'
    ' 10000, "offset": 0}}, "right": 300}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop":'
    ' null}]}}, {"rule": {"family": "inet", "table": "netlab", "chain": "input", "handle": 5,'
    ' "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport'
    '"}}, "right": 8989}}, {"reject": {"type": "icmpx", "expr": "port-unreachable"}}]}}, {"ru'
    'le": {"family": "inet", "table": "netlab", "chain": "input", "handle": 6, "expr": [{"jum'
    'p": {"target": "extra"}}]}}]}'
)

# iptables -P INPUT DROP; conntrack RELATED,ESTABLISHED accept; -i lo accept; udp 8990
# accept; tcp 8080 accept; -p udp -m multiport --dports 5000:6000,8989 -j REJECT.
IPTABLES_SAVE = """\
# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 30 10:54:54 2026
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p udp -m udp --dport 8990 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT
-A INPUT -p udp -m multiport --dports 5000:6000,8989 -j REJECT --reject-with icmp-port-unreachable
COMMIT
# Completed on Mon Nov 30 10:54:54 2026
"""

# The same iptables rules as `nft -j list ruleset` shows them (conntrack/multiport are xt).
NFT_IPTABLES = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json'
    '_schema_version": 1}}, {"table": {"family": "ip", "name": "filter", "handle": 1}}, {"cha'
    'in": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 1, "type": "filter",'
    ' "hook": "input", "prio": 0, "policy": "drop"}}, {"rule": {"family": "ip", "table": "fil'
    'ter", "chain": "INPUT", "handle": 2, "expr": [{"xt": {"type": "match", "name": "conntrac'
    'k"}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}, {"rule": {"family": '
    '"ip", "table": "filter", "chain": "INPUT", "handle": 3, "expr": [{"match": {"op": "==", '
    '"left": {"meta": {"key": "iifname"}}, "right": "lo"}}, {"counter": {"packets": 0, "bytes'
    '": 0}}, {"accept": null}]}}, {"rule": {"family": "ip", "table": "filter", "chain": "INPU'
    'T", "handle": 4, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp",'
    ' "field": "dport"}}, "right": 8990}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept"'
    ': null}]}}, {"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 5, '
    '"expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"'
    '}}, "right": 8080}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}, {"rul'
    'e": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 6, "expr": [{"match"'
    ': {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}}, {"xt": {"type": "'
    'match", "name": "multiport"}}, {"counter": {"packets": 0, "bytes": 0}}, {"xt": {"type": '
    '"target", "name": "REJECT"}}]}}]}'
)

NFT_EMPTY = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", '
    '"json_schema_version": 1}}]}'
)

# /proc/net/igmp in a lab host after a Linux bridge's IGMPv2 query (eth0 fell back to V2),
# with a group joined on lo in the root namespace.
PROC_IGMP = (
    "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n"
    "1\tlo        :     2      V3\n"
    "\t\t\t\t0E61FFEF     1 0:00000000\t\t0\n"
    "\t\t\t\t010000E0     1 0:00000000\t\t0\n"
    "2\teth0      :     1      V2\n"
    "\t\t\t\t010000E0     1 0:00000000\t\t0\n"
)

# Whole IP datagrams from a raw IPPROTO_IGMP socket on a lab host: a Linux bridge's general
# query (source 0.0.0.0, router-alert option, IHL 6) as IGMPv2 and as IGMPv3.
QUERY_V2 = bytes.fromhex("46c00020000040000102041700000000e0000001940400001164ee9b00000000")
QUERY_V3 = bytes.fromhex(
    "46c00024000040000102041300000000e0000001940400001164ec9a0000000002010000"
)

ROUTE_GET = (
    '[{"type":"multicast","dst":"239.255.0.1","dev":"eth0","prefsrc":"192.0.2.2",'
    '"flags":["rt_offload_failed"],"uid":0,"cache":["mc"]}]\n'
)

STREAM = Packet(8989, "239.255.0.1", "eth0")
DISCOVERY = Packet(8990, "198.18.0.255", "eth0")


def firewall(*rulesets: str, stream: Packet = STREAM, discovery: Packet | None = DISCOVERY,
             iptables: str | None = None) -> Check:
    parsed = [diagnosis.parse_nft_ruleset(r) for r in rulesets]
    if iptables is not None:
        parsed.append(diagnosis.parse_iptables_save(iptables))
    return diagnosis.evaluate_firewall(parsed, stream, discovery)


# ---------------------------------------------------------------------------- firewall


def test_a_certain_drop_in_prerouting_fails_even_when_input_may_accept() -> None:
    check = firewall(NFT_POLICY_DROP)
    assert check.status is Status.FAIL
    assert check.data["stream_nftables"] == {
        "verdict": "drop",
        "rules": ["nftables ip mangle pre: meta iifname eth0 udp dport 8000-9000 counter drop"],
    }
    # Discovery (8990) is accepted by the input chain but the prerouting range drops it too.
    assert check.data["discovery_nftables"]["verdict"] == "drop"
    assert "drops stream udp 239.255.0.1:8989" in check.finding
    assert "drops discovery udp 198.18.0.255:8990" in check.finding
    assert check.fix is not None
    assert check.fix.startswith("nft insert rule ip mangle pre udp dport 8989 accept")


def test_on_another_interface_the_saddr_rule_makes_it_a_maybe() -> None:
    # iifname "eth0" does not match wlan0; input's policy drop is avoided only by the rule
    # `ip saddr 10.0.0.0/8 udp dport 8989 accept`, which depends on the sender's address.
    check = firewall(NFT_POLICY_DROP, stream=Packet(8989, "239.255.0.1", "wlan0"),
                     discovery=Packet(8990, "198.18.0.255", "wlan0"))
    assert check.status is Status.WARN
    assert check.data["stream_nftables"] == {
        "verdict": "maybe", "rules": ["nftables inet filter input: policy drop"]}
    assert check.data["discovery_nftables"]["verdict"] == "accept"
    assert check.fix == "nft insert rule inet filter input udp dport 8989 accept"


def test_reject_is_a_drop_and_numgen_loss_is_a_maybe() -> None:
    check = firewall(NFT_REJECT_JUMP, discovery=None)
    assert check.status is Status.FAIL
    assert check.data["stream_nftables"]["rules"] == [
        "nftables inet netlab input: udp dport 8989 reject"]
    # Another port: the jump target drops 239.255.0.0/16 for certain.
    other = firewall(NFT_REJECT_JUMP, stream=Packet(5004, "239.255.77.1", "eth0"),
                     discovery=None)
    assert other.status is Status.FAIL
    assert other.data["stream_nftables"]["rules"] == [
        "nftables inet netlab extra: ip daddr 239.255.0.0/16 drop"]
    # Unicast to 5004: only the random-loss rule can drop it.
    lossy = firewall(NFT_REJECT_JUMP, stream=Packet(5004, "192.0.2.7", "eth0"),
                     discovery=None)
    assert lossy.status is Status.WARN
    assert "may drop" in lossy.finding and "numgen" in lossy.finding


def test_iptables_save_is_evaluated_exactly() -> None:
    check = firewall(iptables=IPTABLES_SAVE)
    assert check.status is Status.FAIL
    assert check.data["stream_iptables"] == {
        "verdict": "drop",
        "rules": ["iptables filter INPUT: INPUT -p udp -m multiport --dports 5000:6000,8989 "
                  "-j REJECT --reject-with icmp-port-unreachable"],
    }
    assert check.data["discovery_iptables"]["verdict"] == "accept"
    assert check.fix == "iptables -I INPUT -p udp --dport 8989 -j ACCEPT"
    closed = firewall(iptables=IPTABLES_SAVE, stream=Packet(7000, "239.255.0.1", "eth0"))
    assert closed.data["stream_iptables"]["rules"] == ["iptables filter INPUT: policy drop"]


def test_iptables_nft_rules_seen_by_nft_are_a_maybe_and_iptables_save_settles_it() -> None:
    nft_only = firewall(NFT_IPTABLES)
    assert nft_only.status is Status.WARN  # xt conntrack/multiport: nft cannot tell
    assert nft_only.data["stream_nftables"]["verdict"] == "maybe"
    assert nft_only.data["discovery_nftables"]["verdict"] == "accept"
    both = firewall(NFT_IPTABLES, iptables=IPTABLES_SAVE)
    assert both.status is Status.FAIL


def test_an_empty_ruleset_is_ok_and_no_tool_is_a_warning() -> None:
    check = firewall(NFT_EMPTY)
    assert check.status is Status.OK
    assert check.finding == "nftables: nothing drops udp 8989 and 8990"
    blind = diagnosis.evaluate_firewall([], STREAM, DISCOVERY, ["nft: Operation not permitted"])
    assert blind.status is Status.WARN and "Operation not permitted" in blind.finding


def test_not_nft_json_is_refused() -> None:
    with pytest.raises(ValueError, match="nftables"):
        diagnosis.parse_nft_ruleset('{"rules": []}')
    with pytest.raises(ValueError):
        diagnosis.parse_nft_ruleset("table inet filter {")


def test_samples_are_what_nft_prints() -> None:
    for text in (NFT_POLICY_DROP, NFT_REJECT_JUMP, NFT_IPTABLES, NFT_EMPTY):
        assert json.loads(text)["nftables"][0]["metainfo"]["json_schema_version"] == 1


# ---------------------------------------------------------------------------- IGMP


def test_proc_net_igmp() -> None:
    got = diagnosis.parse_proc_igmp(PROC_IGMP)
    assert got == {
        "lo": {"querier": "V3", "groups": ["239.255.97.14", "224.0.0.1"]},
        "eth0": {"querier": "V2", "groups": ["224.0.0.1"]},
    }
    assert diagnosis.parse_proc_igmp("") == {}


def test_igmp_queries_from_a_raw_socket() -> None:
    assert diagnosis.parse_igmp_query(QUERY_V2) == (2, "0.0.0.0")
    assert diagnosis.parse_igmp_query(QUERY_V3) == (3, "0.0.0.0")
    v1 = bytearray(QUERY_V2)
    v1[25] = 0  # Max Resp Time 0: an IGMPv1 query
    assert diagnosis.parse_igmp_query(bytes(v1)) == (1, "0.0.0.0")
    report = bytearray(QUERY_V2)
    report[24] = 0x16  # a v2 membership report
    assert diagnosis.parse_igmp_query(bytes(report)) is None
    assert diagnosis.parse_igmp_query(QUERY_V2[:27]) is None
    assert diagnosis.parse_igmp_query(b"") is None


def test_igmp_querier_verdicts() -> None:
    heard = diagnosis.evaluate_igmp("eth0", False, 0, "V3", [("192.168.1.1", 3)], 3.0)
    assert heard.status is Status.OK and "192.168.1.1, IGMPv3" in heard.finding
    silent = diagnosis.evaluate_igmp("eth0", False, 0, "V3", [], 0.5)
    assert silent.status is Status.WARN
    assert "no querier heard in 0.5 s" in silent.finding
    assert "streams stop after a few minutes" in silent.finding
    assert silent.fix is not None and "querier" in silent.fix
    fallback = diagnosis.evaluate_igmp("eth0", False, 0, "V2", [], 0.5)
    assert fallback.status is Status.OK and "IGMPv2 querier" in fallback.finding
    forced = diagnosis.evaluate_igmp("eth0", False, 2, "V2", [], 0.5)
    assert forced.status is Status.WARN and "forced to v2" in forced.finding
    blind = diagnosis.evaluate_igmp("eth0", False, 0, "V3", [], 3.0, "needs CAP_NET_RAW")
    assert blind.status is Status.WARN and "cannot listen" in blind.finding
    assert diagnosis.evaluate_igmp("lo", True, 0, "V3", [], 0.0).status is Status.OK


# ---------------------------------------------------------------------------- the rest


def test_rp_filter_takes_the_max_of_all_and_the_interface() -> None:
    assert diagnosis.evaluate_rp_filter("eth0", 0, 0).status is Status.OK
    loose = diagnosis.evaluate_rp_filter("eth0", 2, 1)
    assert loose.status is Status.OK and "loose" in loose.finding
    strict = diagnosis.evaluate_rp_filter("eth0", 1, 0)
    assert strict.status is Status.WARN
    assert "net.ipv4.conf.all.rp_filter = 1" in strict.finding
    assert strict.data["effective"] == 1
    iface = diagnosis.evaluate_rp_filter("eth0", 0, 1)
    assert "net.ipv4.conf.eth0.rp_filter = 1" in iface.finding
    assert diagnosis.evaluate_rp_filter("eth0", None, None).status is Status.WARN


def test_buffers_against_what_is_asked() -> None:
    asked = 4 << 20
    capped = diagnosis.evaluate_buffer("rcv", asked, 212992, 2 * 212992, 212992, "recv")
    assert capped.status is Status.WARN
    assert "asks 4194304 bytes, gets 212992" in capped.finding
    assert capped.fix is not None
    assert capped.fix.startswith("sysctl -w net.core.rmem_max=4194304")
    enough = diagnosis.evaluate_buffer("rcv", asked, 8 << 20, 2 * asked, 212992)
    assert enough.status is Status.OK
    # Not measured: the sysctl alone decides.
    assert diagnosis.evaluate_buffer("snd", asked, 65536, None).status is Status.WARN
    nothing = diagnosis.evaluate_buffer("snd", None, 212992, None, 212992, "send")
    assert nothing.status is Status.OK and "asks no SO_SNDBUF" in nothing.finding


def test_link_and_multicast_flag() -> None:
    assert diagnosis.evaluate_link("eth9", None, None).status is Status.FAIL
    down = diagnosis.evaluate_link("eth0", 0x1002, "down")
    assert down.status is Status.FAIL and down.fix == "ip link set eth0 up"
    nocarrier = diagnosis.evaluate_link("eth0", 0x1003, "lowerlayerdown")
    assert nocarrier.status is Status.FAIL and "no carrier" in nocarrier.finding
    assert diagnosis.evaluate_link("eth0", 0x1003, "up").status is Status.OK
    assert diagnosis.evaluate_link("lo", 0x9, "unknown").status is Status.OK
    assert diagnosis.evaluate_multicast_flag("eth0", 0x1003).status is Status.OK
    assert diagnosis.evaluate_multicast_flag("lo", 0x9).status is Status.OK
    off = diagnosis.evaluate_multicast_flag("eth0", 0x0003)
    assert off.status is Status.FAIL and off.fix == "ip link set eth0 multicast on"


def test_address_and_the_no_brd_case() -> None:
    ok = diagnosis.evaluate_address("eth0", "192.168.1.20", "255.255.255.0",
                                    "192.168.1.255", False)
    assert ok.status is Status.OK
    # `ip addr add 10.9.0.5/24 dev d0` (no `brd +`): netifaces reports the address itself.
    nobrd = diagnosis.evaluate_address("d0", "10.9.0.5", "255.255.255.0", "10.9.0.5", False)
    assert nobrd.status is Status.WARN
    assert "the directed broadcast is 10.9.0.255" in nobrd.finding
    assert nobrd.fix is not None and nobrd.fix.startswith("ip addr change 10.9.0.5/24 brd +")
    assert nobrd.data["derived_broadcast"] == "10.9.0.255"
    lo = diagnosis.evaluate_address("lo", "127.0.0.1", "255.0.0.0", None, True)
    assert lo.status is Status.OK
    assert diagnosis.evaluate_address("tun0", "10.8.0.2", "255.255.255.255", None,
                                      False).status is Status.WARN
    assert diagnosis.evaluate_address("eth0", None, None, None, False).status is Status.FAIL


def test_route() -> None:
    ok = diagnosis.evaluate_route("eth0", "239.255.0.1", 0, ROUTE_GET, "")
    assert ok.status is Status.OK and ok.data == {"dev": "eth0"}
    other = diagnosis.evaluate_route("lo", "239.255.0.1", 0, ROUTE_GET, "")
    assert other.status is Status.WARN and "routed via eth0, not lo" in other.finding
    none = diagnosis.evaluate_route("eth0", "239.255.0.1", 2, "",
                                    "RTNETLINK answers: Network is unreachable\n")
    assert none.status is Status.WARN
    assert "no route for 239.255.0.1 (RTNETLINK answers: Network is unreachable)" in none.finding
    assert none.fix == "ip route add 224.0.0.0/4 dev eth0"
    assert diagnosis.evaluate_route("eth0", "239.255.0.1", 0, "garbage", "").status \
        is Status.WARN


def test_key_file_modes() -> None:
    assert diagnosis.evaluate_key_file("/k", 0o600, True, True).status is Status.OK
    for mode in (0o640, 0o604, 0o660, 0o602):
        bad = diagnosis.evaluate_key_file("/k", mode, True, True)
        assert bad.status is Status.FAIL and bad.fix == "chmod 600 /k", oct(mode)
    assert diagnosis.evaluate_key_file("/k", None, False, False, "No such file").status \
        is Status.FAIL
    assert diagnosis.evaluate_key_file("/k", 0o700, False, True).status is Status.FAIL
    assert diagnosis.evaluate_key_file("/k", 0o400, True, False).status is Status.FAIL


def test_self_test_and_discovery_verdicts() -> None:
    assert diagnosis.evaluate_self_test("lo", "239.255.0.1", 5000, 5, 5, None, 0.01).status \
        is Status.OK
    assert diagnosis.evaluate_self_test("lo", "239.255.0.1", 5000, 5, 3, None, 1.0).status \
        is Status.WARN
    assert diagnosis.evaluate_self_test("lo", "239.255.0.1", 5000, 5, 0, None, 1.0).status \
        is Status.FAIL
    assert diagnosis.evaluate_self_test("lo", "239.255.0.1", 0, 0, 0, "ENODEV", 0).status \
        is Status.FAIL
    assert diagnosis.evaluate_discovery("eth0", ["cam ..."], 1.0, None).status is Status.OK
    assert diagnosis.evaluate_discovery("eth0", [], 1.0, None).status is Status.WARN
    assert diagnosis.evaluate_discovery("lo", [], 1.0, "no broadcast").status is Status.OK


def test_exit_code_and_text() -> None:
    ok = Check("a", Status.OK, "fine")
    warn = Check("b", Status.WARN, "hmm", "do x")
    fail = Check("c", Status.FAIL, "broken", "do y")
    assert diagnosis.exit_code([ok, warn]) == 0
    assert diagnosis.exit_code([ok, warn], strict=True) == 1
    assert diagnosis.exit_code([ok, fail]) == 1
    assert diagnosis.exit_code([]) == 0
    assert diagnosis.render_text([ok, warn, fail]).splitlines() == [
        "[ ok ] a: fine",
        "[warn] b: hmm",
        "       fix: do x",
        "[fail] c: broken",
        "       fix: do y",
        "3 checks: 1 ok, 1 warn, 1 fail",
    ]
    assert warn.to_json() == {"name": "b", "status": "warn", "finding": "hmm", "fix": "do x",
                              "data": {}}
