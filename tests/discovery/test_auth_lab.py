"""Discovery with a key across a namespaced LAN (docs/protocol.md §9): a hostile host.

h0 runs a keyed sender's discovery service, first as an earlier run (stream 0xold, group
239.255.9.1), then as the current run (another stream id, group 239.255.9.77). h2, without
the key, listens on the discovery port: it records the earlier run's tagged announces and
h1's queries; when h1 looks up with the key, h2 answers every query at once, to the query's
source port, with an untagged announce and one tagged under a wrong key (both echoing the
query's nonce, readable on the wire, and naming an attacker group from h2's address), and
replays the earlier run's recorded announces with h0's source address spoofed (a raw
socket); it also replays h1's recorded queries to h0. The querier with the key must list only
the current run; h0 refuses the unauthenticated and replayed queries and counts them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mcastcam.keys import generate_key_file
from tests.discovery.test_lab import DISCOVER

pytestmark = pytest.mark.netns

SENDER = """
import asyncio, json, sys
from mcastcam import net
from mcastcam.discovery.service import DiscoveryService
from mcastcam.keys import load_master_keys
from mcastcam.protocol.codec import DiscoveryAnnounce
from mcastcam.protocol.config import DiscoveryConfig
from mcastcam.protocol.trust import DiscoveryAuth

group, stream_id, key_file = sys.argv[1], int(sys.argv[2], 16), sys.argv[3]

async def main():
    eth0 = net.resolve_interface("eth0")
    ann = DiscoveryAnnounce(stream_id=stream_id, seq=0, name="cam", host="0.0.0.0",
                            transport=0, group=group, port=9000, width=320, height=240,
                            fps_milli=30000, run_nonce=stream_id ^ 0x5A5A)
    auth = DiscoveryAuth(load_master_keys(key_file))
    svc = await DiscoveryService.start(eth0, ann, DiscoveryConfig(8990, 0.3), auth)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    try:
        await asyncio.wait_for(stop.wait(), 30.0)
    except TimeoutError:
        pass
    st = svc.responder.stats
    svc.close()
    print(json.dumps({"answered": st.answered, "queries": st.queries,
                      "rejected": dict(st.rejected), "status": svc.status_text()}), flush=True)

asyncio.run(main())
"""

# h2: records the sender's announces until "attack" on stdin (prints "recorded N"), then
# answers each new query at once with forged and replayed announces and replays the earlier
# queries to the sender (broadcast, source spoofed); prints its counts as JSON at the end.
HOSTILE = """
import dataclasses, json, select, socket, struct, sys, time
from mcastcam import net
from mcastcam.keys import load_master_keys
from mcastcam.protocol import codec
from mcastcam.protocol.codec import DiscoveryAnnounce, DiscoveryQuery
from mcastcam.protocol.trust import DiscoveryAuth

sender_ip, wrong_key = sys.argv[1], sys.argv[2]
wrong = DiscoveryAuth(load_master_keys(wrong_key))
eth0 = net.resolve_interface("eth0")
listen = net.open_broadcast_receiver(8990, eth0)
out = net.open_broadcast_sender(eth0)
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
raw.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)

def spoof(src, dst, payload):
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
    raw.sendto(ip + udp, (dst[0], 0))

old_announces, queries = [], []
counts = {"forged": 0, "replayed_announces": 0, "replayed_queries": 0, "queries_heard": 0}
print("ready", flush=True)
phase = "record"
for _ in range(100000):
    line_ready = select.select([listen, sys.stdin], [], [], 20.0)[0]
    if not line_ready:
        break
    if sys.stdin in line_ready:
        cmd = sys.stdin.readline().strip()
        if cmd != "attack":
            break
        phase = "attack"
        print(f"recorded {len(old_announces)}", flush=True)
        continue
    data, src = listen.recvfrom(2048)
    try:
        msg = codec.decode(data)
    except Exception:
        continue
    if phase == "record":
        if isinstance(msg, DiscoveryAnnounce) and src[0] == sender_ip:
            old_announces.append(data)
        continue
    if not isinstance(msg, DiscoveryQuery) or src[0] == eth0.address:
        continue
    if any(data == q for q, _ in queries):  # our own replay, heard back: no feedback loop
        continue
    counts["queries_heard"] += 1
    queries.append((data, src))
    fake = DiscoveryAnnounce(stream_id=0xBAD, seq=1000 + counts["forged"], name="cam",
                             host=eth0.address, transport=0, group="239.255.66.6", port=9000,
                             width=320, height=240, fps_milli=30000, run_nonce=1,
                             echo_query_nonce=msg.query_nonce)
    plain = codec.encode(fake)
    for forged in (plain, wrong.seal(plain)):
        out.sendto(forged, src)
        counts["forged"] += 1
    for old in old_announces[-3:]:
        spoof((sender_ip, 8990), src, old)
        counts["replayed_announces"] += 1
    for q, qsrc in queries[:-1]:
        spoof(qsrc, (eth0.broadcast, 8990), q)  # an earlier query again, from its querier
        counts["replayed_queries"] += 1
print(json.dumps(counts), flush=True)
"""


def _sender(lab: Any, group: str, stream_id: str, key: Path) -> subprocess.Popen[str]:
    proc = lab.host(0).python_popen(SENDER, group, stream_id, str(key), stdin=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        _out, err = proc.communicate(timeout=10)
        pytest.fail(f"keyed discovery sender did not start: {line!r} {err}")
    return proc


def _stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    stats: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return stats


def test_keyed_querier_finds_only_the_real_current_sender(netlab: Any, tmp_path: Path) -> None:
    key, wrong = tmp_path / "cam.key", tmp_path / "wrong.key"
    generate_key_file(key, 1)
    generate_key_file(wrong, 1)
    lab = netlab(hosts=3)
    hostile = lab.host(2).python_popen(HOSTILE, lab.host(0).address, str(wrong),
                                       stdin=subprocess.PIPE)
    assert hostile.stdout is not None and hostile.stdin is not None
    assert hostile.stdout.readline().strip() == "ready"
    earlier = _sender(lab, "239.255.9.1", "0000abcd", key)
    # h1 looks the earlier run up once (h2 records its queries and announces meanwhile)
    first = lab.host(1).run([*DISCOVER, "--json", "--timeout", "1", "--key-file", str(key)],
                            check=False, timeout=30)
    _stop(earlier)
    hostile.stdin.write("attack\n")
    hostile.stdin.flush()
    assert int(hostile.stdout.readline().split()[1]) >= 2  # the earlier run's announces
    current = _sender(lab, "239.255.9.77", "00001234", key)
    try:
        lookups = [
            lab.host(1).run([*DISCOVER, "--json", "--timeout", "1", "--name", "cam",
                             "--key-file", str(key)], check=False, timeout=30)
            for _ in range(2)
        ]
        keyless = lab.host(1).run([*DISCOVER, "--json", "--timeout", "1"], check=False,
                                  timeout=30)
    finally:
        stats = _stop(current)
        hostile.stdin.write("stop\n")
        hostile.stdin.flush()
        h_out, h_err = hostile.communicate(timeout=30)
    assert first.returncode == 0, first.stderr
    assert [(f["group"], f["stream_id"]) for f in json.loads(first.stdout)] == [
        ("239.255.9.1", "0000abcd")]
    attack = json.loads(h_out.strip().splitlines()[-1])
    assert attack["forged"] >= 12 and attack["replayed_announces"] >= 6, (attack, h_err)
    assert attack["replayed_queries"] >= 3, attack
    for done in lookups:
        assert done.returncode == 0, done.stderr
        # only the current run: no forged group, no replayed earlier run
        assert [(f["group"], f["stream_id"], f["host"]) for f in json.loads(done.stdout)] == [
            ("239.255.9.77", "00001234", lab.host(0).address)], done.stdout
    # a querier without the key gets no answer from the keyed sender (only h2's forgery)
    assert "00001234" not in keyless.stdout
    assert stats["rejected"].get("unauthenticated", 0) >= 3, stats
    assert stats["rejected"].get("replayed", 0) >= 3, stats
    # the keyed look-ups only (3 copies each, the querier's own budget: burst 3, then 1/s)
    assert 2 <= stats["answered"] <= 6 and stats["queries"] == 6, stats
