"""tools/lossy_relay.py inside the namespace lab, where ``--netns-ok`` is accepted.

h0 sends numbered datagrams to a multicast group on its ``eth0`` (TTL 1, inside the lab's
bridge, which has no uplink); the relay runs in h1 (``ip netns exec``), joins the group on
h1's ``eth0`` and forwards unicast to h0's ``eth0`` address, dropping in bursts. h0 collects
what comes back: exactly the seeded model's survivors.
"""

from __future__ import annotations

import bisect
import json
import re
import select
import sys
from typing import Any

import pytest

from tests.tools.toolkit import TOOLS, load_tool

pytestmark = [pytest.mark.netns]

lm = load_tool("lossmodel")

COUNT = 1000
CHUNK = 100
GROUP = "239.255.73.1"

GROUP_PORT, BACK_PORT = 47001, 47002  # fresh namespaces: no other user of these ports

# Runs in h0: send COUNT numbered datagrams to the group, CHUNK at a time, waiting after each
# chunk (at most 2 s) until the survivors expected so far came back; print what came back.
H0_SCRIPT = """
import json, select, socket, sys, time
addr, group, port, back = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
count, chunk, wants = int(sys.argv[5]), int(sys.argv[6]), json.loads(sys.argv[7])
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.bind((addr, back))
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(addr))
tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
got = []
def drain(wait):
    while select.select([rx], [], [], wait)[0]:
        got.append(int(rx.recv(2048).split(b" ", 1)[0]))
        wait = 0
for seq in range(count):
    tx.sendto(b"%d " % seq + b"." * 200, (group, port))
    if seq % chunk == chunk - 1:
        until = time.monotonic() + 2.0
        while len(got) < wants[seq // chunk] and time.monotonic() < until:
            drain(0.01)
drain(0.2)
print(json.dumps(got))
"""


def test_relay_between_namespaces_with_netns_ok(netlab: Any) -> None:
    lab = netlab(hosts=2)
    h0, h1 = lab.host(0), lab.host(1)
    avg, burst, seed = 0.05, 4.0, 11
    expected = lm.apply_loss(lm.GilbertElliott.from_loss(avg, burst, seed=seed), range(COUNT))
    wants = [bisect.bisect_right(expected, end - 1) for end in range(CHUNK, COUNT + 1, CHUNK)]
    relay = h1.popen(
        [
            sys.executable,
            str(TOOLS / "lossy_relay.py"),
            *f"--netns-ok --listen {GROUP}:{GROUP_PORT} --listen-interface eth0".split(),
            *f"--to {h0.address}:{BACK_PORT} --loss {avg} --burst {burst} --seed {seed}".split(),
            *f"--max-datagrams {COUNT} --duration 30".split(),
        ]
    )
    assert relay.stderr is not None
    ready, _, _ = select.select([relay.stderr], [], [], 10.0)
    line = relay.stderr.readline() if ready else ""
    assert re.search(rf"listening on {GROUP}:{GROUP_PORT}, forwarding to {h0.address}", line), line
    done = h0.python(
        H0_SCRIPT,
        h0.address,
        GROUP,
        str(GROUP_PORT),
        str(BACK_PORT),
        str(COUNT),
        str(CHUNK),
        json.dumps(wants),
        timeout=60,
    )
    out, err = relay.communicate(timeout=30)
    assert relay.returncode == 0, err
    counters = json.loads(out)
    assert counters["exit"] == "max-datagrams" and counters["received"] == COUNT
    assert json.loads(done.stdout) == expected
    assert counters["dropped"] == COUNT - len(expected) > 0
    assert counters["mean_burst"] >= 2.0
