"""Discovery across a namespaced LAN (tools/netlab.py): real broadcast on a bridge.

``lo`` has no broadcast address, so every datagram here travels between namespaces the test
builds (198.18.0.0/15 on a bridge with no uplink). Senders run :class:`DiscoveryService` in a
snippet inside their host until their stdin closes (or a hard 30 s limit); queriers run the
real ``mcastcam-discover`` CLI (``python -m mcastcam.discovery.cli``) or :func:`discover`.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from typing import Any

import pytest

pytestmark = pytest.mark.netns

Lab = Any

# A sender's discovery side: prints "ready", runs until stdin closes (bounded by LIFE s), then
# prints its responder counters as JSON.
SENDER = """
import asyncio, json, sys
from mcastcam import net
from mcastcam.discovery.service import DiscoveryService
from mcastcam.protocol.config import DiscoveryConfig
from mcastcam.protocol.codec import DiscoveryAnnounce

name, group, stream_id, interval = sys.argv[1], sys.argv[2], int(sys.argv[3], 16), \
    float(sys.argv[4])
LIFE = 30.0

async def main():
    eth0 = net.resolve_interface("eth0")
    ann = DiscoveryAnnounce(stream_id=stream_id, seq=0, name=name, host="0.0.0.0",
                            transport=0, group=group, port=9000, width=320, height=240,
                            fps_milli=30000)
    svc = await DiscoveryService.start(eth0, ann, DiscoveryConfig(8990, interval))
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    try:
        await asyncio.wait_for(stop.wait(), LIFE)
    except TimeoutError:
        pass
    loop.remove_reader(sys.stdin.fileno())
    st = svc.responder.stats
    svc.close()
    await asyncio.sleep(0)
    print(json.dumps({"queries": st.queries, "answered": st.answered,
                      "rate_limited": st.rate_limited, "announces": st.announces,
                      "garbage": dict(st.garbage), "status": svc.status_text()}), flush=True)

asyncio.run(main())
"""

# Flood: RATE (default 200) queries/s for SECONDS s to the broadcast address (every 10th
# datagram garbage), counting the announces that come back; prints {"sent", "garbage",
# "answers"}.
FLOOD = """
import json, select, sys, time
from mcastcam import net
from mcastcam.protocol import codec
from mcastcam.protocol.codec import DiscoveryAnnounce, DiscoveryQuery

SECONDS = float(sys.argv[1])
RATE = float(sys.argv[2]) if len(sys.argv) > 2 else 200.0
eth0 = net.resolve_interface("eth0")
sock = net.open_broadcast_sender(eth0)
answers = sent = garbage = 0

def drain(wait):
    global answers
    end = time.monotonic() + wait
    for _ in range(10000):
        left = end - time.monotonic()
        if not select.select([sock], [], [], max(0.0, left))[0]:
            return
        data, _src = sock.recvfrom(2048)
        if isinstance(codec.decode(data), DiscoveryAnnounce):
            answers += 1

start = time.monotonic()
with sock:
    for i in range(int(SECONDS * RATE)):
        drain(start + i / RATE - time.monotonic())
        if i % 10 == 9:
            sock.sendto(b"junk" * 8, (eth0.broadcast, 8990))
            garbage += 1
        else:
            sock.sendto(codec.encode(DiscoveryQuery(7, i, "")), (eth0.broadcast, 8990))
            sent += 1
    drain(0.3)
print(json.dumps({"sent": sent, "garbage": garbage, "answers": answers}))
"""

# Listens on the discovery port for broadcast announces for SECONDS s; prints one line each:
# "<monotonic s> <source> <name>".
LISTEN = """
import select, sys, time
from mcastcam import net
from mcastcam.protocol import codec
seconds = float(sys.argv[1])
eth0 = net.resolve_interface("eth0")
sock = net.open_broadcast_receiver(8990, eth0)
print("ready", flush=True)
end = time.monotonic() + seconds
with sock:
    for _ in range(1000):
        left = end - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            break
        data, src = sock.recvfrom(2048)
        print(f"{time.monotonic():.3f} {src[0]} {codec.decode(data).name}", flush=True)
"""

DISCOVER = [sys.executable, "-m", "mcastcam.discovery.cli", "--interface", "eth0"]


def start_sender(lab: Lab, i: int, name: str, stream_id: str,
                 interval: float = 5.0) -> subprocess.Popen[str]:
    proc = lab.host(i).python_popen(SENDER, name, f"239.255.9.{i + 1}", stream_id,
                                    str(interval), stdin=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        _out, err = proc.communicate(timeout=10)
        pytest.fail(f"discovery sender on h{i} did not start: {line!r} {err}")
    return proc


def stop_sender(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=10)  # closes stdin: the snippet stops
    assert proc.returncode == 0, err
    stats: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return stats


def run_discover(lab: Lab, i: int, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.host(i).run([*DISCOVER, *args], check=False, timeout=30)


def test_discover_lists_a_sender_on_another_host_within_one_second(netlab: Any) -> None:
    lab = netlab(hosts=3)
    sender = start_sender(lab, 0, "cam0", "1a2b3c4d")
    try:
        done = run_discover(lab, 1, "--json", "--timeout", "1")
        lines = run_discover(lab, 2, "--timeout", "1")
    finally:
        stats = stop_sender(sender)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{
        "name": "cam0", "stream_id": "1a2b3c4d", "host": lab.host(0).address,
        "transport": "multicast", "group": "239.255.9.1", "port": 9000, "width": 320,
        "height": 240, "fps": 30.0,
    }]
    assert lines.returncode == 0, lines.stderr
    assert lines.stdout == (f"cam0  stream 1a2b3c4d  multicast 239.255.9.1:9000  320x240  "
                            f"30 fps  host {lab.host(0).address}\n")
    # each CLI run broadcasts its query 3 times; every copy is answered (within the bucket)
    assert stats["queries"] == 6
    assert stats["answered"] == 6


def test_two_senders_are_both_listed_and_names_filter(netlab: Any) -> None:
    lab = netlab(hosts=3)
    senders = [start_sender(lab, 0, "kitchen", "000000aa"),
               start_sender(lab, 2, "garage", "000000bb")]
    try:
        everyone = run_discover(lab, 1, "--json")
        kitchen = run_discover(lab, 1, "--json", "--name", "kitchen")
        nobody = run_discover(lab, 1, "--name", "attic", "--timeout", "0.5")
    finally:
        stats = [stop_sender(p) for p in senders]
    found = json.loads(everyone.stdout)
    assert [(f["name"], f["host"], f["stream_id"]) for f in found] == [
        ("garage", lab.host(2).address, "000000bb"),
        ("kitchen", lab.host(0).address, "000000aa"),
    ]
    assert [f["name"] for f in json.loads(kitchen.stdout)] == ["kitchen"]
    assert nobody.returncode == 3  # EXIT_NOT_FOUND (issue #12: was 0)
    assert nobody.stdout == ""
    assert nobody.stderr.strip() == "no sender found on eth0 within 0.5 s"
    assert stats[1]["answered"] == 3  # garage: only the unfiltered query (3 copies)


def test_periodic_broadcast_announces_reach_listeners(netlab: Any) -> None:
    lab = netlab(hosts=2)
    listener = lab.host(1).python_popen(LISTEN, "3.0")
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "ready"
    sender = start_sender(lab, 0, "periodic", "0000cafe", interval=0.5)
    out, err = listener.communicate(timeout=30)
    stats = stop_sender(sender)
    assert listener.returncode == 0, err
    heard = [line.split() for line in out.splitlines()]
    assert heard, "no announce heard"
    assert {(src, name) for _t, src, name in heard} == {(lab.host(0).address, "periodic")}
    # one at start, then every 0.5 s: about 5 in the ~2.5 s the listener overlaps the sender
    assert 3 <= len(heard) <= 8
    times = [float(t) for t, _s, _n in heard]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # the timer is re-armed from when it fired: gaps are the interval plus scheduling delay
    assert all(0.35 < g < 1.5 for g in gaps), gaps
    assert stats["announces"] >= len(heard)


def test_query_flood_is_rate_limited_and_garbage_counted(netlab: Any) -> None:
    lab = netlab(hosts=3)
    sender = start_sender(lab, 0, "cam0", "00000001")
    try:
        flood = json.loads(lab.host(2).python(FLOOD, "2.0", timeout=60).stdout)
        # the sender survived the flood and still answers once the bucket refills
        time.sleep(1.0)
        after = run_discover(lab, 1, "--json")
    finally:
        stats = stop_sender(sender)
    assert flood["sent"] == 360 and flood["garbage"] == 40
    # one querier address (issue #12): its own budget, 3 at once then 1/s, over ~2.3 s
    assert 3 <= flood["answers"] <= 3 + 1 * 2.3, flood
    assert stats["garbage"] == {"bad_magic": 40}
    assert stats["rate_limited"] >= 360 - 17
    assert [f["name"] for f in json.loads(after.stdout)] == ["cam0"]


def test_discover_returns_early_with_max_found(netlab: Any) -> None:
    lab = netlab(hosts=2)
    sender = start_sender(lab, 0, "cam0", "00000002")
    try:
        done = lab.host(1).python(
            """
            import asyncio, time
            from mcastcam.discovery.query import discover
            t0 = time.monotonic()
            found = asyncio.run(discover("eth0", timeout=10.0, max_found=1, query_id=5))
            print(len(found), found[0].name, round(time.monotonic() - t0, 3))
            """
        )
    finally:
        stop_sender(sender)
    count, name, elapsed = done.stdout.split()
    assert (count, name) == ("1", "cam0")
    assert float(elapsed) < 5.0  # well before the 10 s timeout


def _drop_brd(host: Any) -> None:
    """Re-add the host's address as ``ip addr add A/24`` without ``brd`` (issue #12)."""
    host.run(["ip", "addr", "flush", "dev", "eth0"])
    host.run(["ip", "addr", "add", f"{host.address}/24", "dev", "eth0"])
    shown = host.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
    assert " brd " not in shown, shown


def test_discovery_works_on_addresses_without_brd(netlab: Any) -> None:
    """Sender and querier configured without a broadcast address still find each other."""
    lab = netlab(hosts=3)
    _drop_brd(lab.host(0))
    _drop_brd(lab.host(1))
    listener = lab.host(2).python_popen(LISTEN, "2.0")  # h2 keeps its brd
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "ready"
    sender = start_sender(lab, 0, "nobrd", "0000b0b0", interval=0.5)
    try:
        found = run_discover(lab, 1, "--json", "--timeout", "1", "--debug")
        heard, _err = listener.communicate(timeout=30)
    finally:
        stats = stop_sender(sender)
    assert found.returncode == 0, found.stderr
    assert [(f["name"], f["host"]) for f in json.loads(found.stdout)] == [
        ("nobrd", lab.host(0).address)]
    derived = lab.broadcast
    notes = [line for line in found.stderr.splitlines()
             if "configured without a broadcast address" in line]
    assert len(notes) == 1 and derived in notes[0], found.stderr
    assert stats["answered"] == 3
    # h1's queries and h0's periodic announces go to the derived subnet broadcast: h2 hears
    # both ("<time> <source> <name>"; a query names no stream)
    lines = [line.split() for line in heard.splitlines()]
    announces = [src for _t, src, *name in lines if name == ["nobrd"]]
    queries = [src for _t, src, *name in lines if not name]
    assert len(announces) >= 2 and set(announces) == {lab.host(0).address}, heard
    assert queries == [lab.host(1).address] * 3, heard
    # nothing answers any more: exit status 3 (documented in --help)
    gone = run_discover(lab, 1, "--timeout", "0.5")
    assert gone.returncode == 3, gone.stderr
    assert gone.stderr.strip() == "no sender found on eth0 within 0.5 s"


def test_one_address_flooding_queries_does_not_starve_real_queriers(netlab: Any) -> None:
    """h2 sends 50 queries/s for 6 s; h1 looks the sender up 3 times meanwhile: found each time."""
    lab = netlab(hosts=3)
    sender = start_sender(lab, 0, "cam0", "00000003")
    flooder = lab.host(2).python_popen(FLOOD, "6.0", "50")
    try:
        time.sleep(1.0)  # the flood has emptied the shared bucket's burst
        lookups = [run_discover(lab, 1, "--json", "--timeout", "1") for _ in range(3)]
        flood_out, flood_err = flooder.communicate(timeout=60)
    finally:
        stats = stop_sender(sender)
    assert flooder.returncode == 0, flood_err
    flood = json.loads(flood_out)
    assert flood["sent"] == 270, flood  # 300 datagrams, every 10th garbage
    for done in lookups:
        assert done.returncode == 0, done.stderr
        assert [f["name"] for f in json.loads(done.stdout)] == ["cam0"]
    # the flooding address got its own budget only: 3 at once, then 1/s over ~6.3 s
    assert flood["answers"] <= 3 + 1 * 6.5, flood
    assert stats["answered"] >= 9 + 3  # every copy of the 3 lookups, plus the flooder's
    assert stats["rate_limited"] >= 270 - 10
