"""Attacks on a keyed stream across the namespace lab (issue #12, docs/security.md §3).

h0 sends the bundled sample with ``--key-file``; h1 receives with the key while a client reads
``/stream``; h2 has no key. h2 records the sender's first run from a joined socket, the
sender restarts (a new run), then for a few seconds h2 replays the first run (after the
restart), replays and bit-flips datagrams of the current run as it hears them, sends forged
symbols under the current run's header (a guessed run: fake payload, random tag), forged
heartbeats (untagged and with a random tag, a huge interval, a fake restart with another
stream id and the same name) and forged NACKs to the sender's source address; meanwhile two
intruding ``mcastcam-send`` with the same name run on h2, one without a key and one with a
wrong key. Expected: every served frame is byte-equal to a frame of the sample, the followed
stream id never changes, every kind of refusal is counted in the receiver's ``/status`` and
the sender's status JSON (forged NACKs refused, no NACK repair sent).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mcastcam.keys import generate_key_file
from tests.lab import labkit

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SEND = ("--fps", "30", "--loop", "--heartbeat-interval", "0.5", "--name", "cam")

# argv: group port address capture_s sender_address; records the group for capture_s s from
# its first datagram ("recorded N"), waits for a line on stdin, then attacks for ATTACK_S s
# and prints its counts as JSON.
ATTACKER = """
import dataclasses, json, os, random, select, socket, sys, time
from mcastcam import net
from mcastcam.errors import DecodeError
from mcastcam.protocol import codec
from mcastcam.protocol.codec import Heartbeat, Nack, NackEntry
from mcastcam.protocol.wire import Flag

group, port, address, capture_s = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
sender_ip = sys.argv[5]
ATTACK_S = 5.0
rng = random.Random(12)
eth0 = net.resolve_interface("eth0")
listen = net.open_multicast_receiver(group, port, eth0, 4 << 20)
listen.setblocking(True)
out = net.open_multicast_sender(eth0, 1, False)
out.setblocking(True)
dest = (group, port)

def drain(into, limit):
    n = 0
    while n < limit and select.select([listen], [], [], 0)[0]:
        data, src = listen.recvfrom(65536)
        into.append((data, src))
        n += 1
    return n

first = []
select.select([listen], [], [], 20.0)  # the capture starts with the sender's first datagram
end = time.monotonic() + capture_s
while time.monotonic() < end and len(first) < 20000:
    if select.select([listen], [], [], 0.1)[0]:
        first.append(listen.recvfrom(65536))
print(f"recorded {len(first)}", flush=True)
sys.stdin.readline()
drain([], 100000)  # what queued up meanwhile
counts = dict.fromkeys(("replay_earlier", "replay_same", "bit_flips", "forged_symbols",
                        "forged_heartbeats", "forged_nacks"), 0)
hb, sender_addr = None, None
end = time.monotonic() + ATTACK_S
earlier = iter(first)
for _ in range(200000):
    if time.monotonic() > end:
        break
    fresh = []
    drain(fresh, 64)
    for data, src in fresh:
        if data[3] == 2 and src[0] == sender_ip:
            hb, sender_addr = codec.decode(data), src
    for _ in range(20):  # the earlier run, replayed after the restart
        item = next(earlier, None)
        if item is not None:
            out.sendto(item[0], dest)
            counts["replay_earlier"] += 1
    fresh = [data for data, src in fresh if src[0] == sender_ip]
    for data in fresh[:8]:  # the current run: replays and bit flips
        out.sendto(data, dest)
        bad = bytearray(data)
        bad[rng.randrange(14, len(bad))] ^= 1 << rng.randrange(8)
        out.sendto(bytes(bad), dest)
        counts["replay_same"] += 1
        counts["bit_flips"] += 1
    symbols = [d for d in fresh if d[3] in (1, 16)]
    for data in symbols[:4]:  # a guessed run: the real header, a fake payload, a random tag
        out.sendto(data[:48] + os.urandom(len(data) - 64) + os.urandom(16), dest)
        counts["forged_symbols"] += 1
    if hb is not None:
        plain = dataclasses.replace(hb, interval_ms=60000, flags=0, key_id=0, tag=b"")
        restart = dataclasses.replace(plain, stream_id=0x0BAD0001, run_nonce=77)
        tagged = dataclasses.replace(hb, interval_ms=60000, seq=hb.seq + 5, tag=os.urandom(16))
        for msg in (plain, restart, tagged):
            out.sendto(codec.encode(msg), dest)
            counts["forged_heartbeats"] += 1
        frame_id = int.from_bytes(symbols[0][14:18], "big") if symbols else 0
        nack = Nack(hb.stream_id, rng.getrandbits(32), rng.getrandbits(32) or 1,
                    (NackEntry(frame_id, 5),), hb.run_nonce)
        for msg in (nack, dataclasses.replace(nack, flags=int(Flag.AUTH), key_id=hb.key_id,
                                              tag=os.urandom(16))):
            out.sendto(codec.encode(msg), sender_addr)
            counts["forged_nacks"] += 1
    time.sleep(0.01)
print(json.dumps(counts), flush=True)
"""


def test_attacks_on_a_keyed_stream_serve_no_forged_frame(netlab: Any, tmp_path: Path) -> None:
    key, wrong = tmp_path / "cam.key", tmp_path / "wrong.key"
    generate_key_file(key, 2)
    generate_key_file(wrong, 2)
    lab = netlab(hosts=3)
    attacker = lab.host(2).python_popen(ATTACKER, labkit.GROUP_ADDR, str(labkit.PORT),
                                        lab.host(2).address, "2.0", lab.host(0).address,
                                        stdin=subprocess.PIPE)
    assert attacker.stdout is not None and attacker.stdin is not None
    run1 = labkit.start_sender(lab, 0, labkit.SAMPLE, *SEND, "--key-file", str(key))
    recorded = attacker.stdout.readline()
    assert labkit.stop(run1) == 0
    assert int(recorded.split()[1]) > 300, recorded  # ~2 s of the first run
    status_json = tmp_path / "sender-status.json"
    run2 = labkit.start_sender(lab, 0, labkit.SAMPLE, *SEND, "--key-file", str(key),
                               "--status-json", str(status_json))
    (r,) = labkit.start_receivers(lab, (1,), "--key-file", str(key), "--name", "cam")
    labkit.wait_until(lambda: (r.followed() or {}).get("frames_completed", 0) > 10, 15.0,
                      "the receiver to follow the real run")
    followed = r.status()["followed"]
    labkit.connect_clients([r], tmp_path)
    intruders = [
        labkit.start_sender(lab, 2, labkit.SAMPLE, "--fps", "10", "--loop", "--name", "cam"),
        labkit.start_sender(lab, 2, labkit.SAMPLE, "--fps", "10", "--loop", "--name", "cam",
                            "--key-file", str(wrong)),
    ]
    attacker.stdin.write("go\n")
    attacker.stdin.flush()
    samples = []
    for _ in range(40):  # the followed stream id, while the attack runs (~5 s)
        if attacker.poll() is not None:
            break
        samples.append(r.status()["followed"])
        time.sleep(0.15)
    out, err = attacker.communicate(timeout=30)
    for proc in intruders:
        labkit.stop(proc)
    assert attacker.returncode == 0, err
    counts = json.loads(out.strip().splitlines()[-1])
    st = r.status()
    sender_st = json.loads(status_json.read_text())
    labkit.stop(run2)
    (frames,) = labkit.finish_clients([r])[1]
    print(f"attack {counts}; receiver decode errors {st['decode_errors']}, streams "
          f"{[(s['stream_id'], s['decode_errors']) for s in st['streams']]}, auth {st['auth']}; "
          f"sender rx_errors {sender_st['rx_errors']}; frames served {len(frames)}")
    assert all(v > 0 for v in counts.values()), counts
    # 0 forged frames served: every frame is byte-equal to a frame of the sample
    source = set(labkit.load_frames(labkit.SAMPLE))
    assert len(frames) >= 60 and all(f in source for f in frames)
    # 0 takeovers
    assert set(samples) == {followed} and st["followed"] == followed
    errors: dict[str, int] = dict(st["decode_errors"])
    for s in st["streams"]:
        for reason, n in s["decode_errors"].items():
            errors[reason] = errors.get(reason, 0) + n
    assert errors.get("unauthenticated", 0) > 50  # the keyless intruder, untagged heartbeats
    assert errors.get("bad_tag", 0) > 50  # bit flips, forged symbols, the wrong key's sender
    # same-run replays: refused by the window when verified on their own, else (lazy
    # verification, protocol §8.5) before any crypto as symbols of a finished frame or copies
    # of a symbol held
    refused = ("replayed", "replayed_old", "late", "duplicate")
    assert sum(errors.get(r, 0) for r in refused) > 20, errors
    assert st["auth"]["awaiting_freshness"] >= 1  # the earlier run's frames: held, not served
    # the sender refused every forged NACK, and sent no NACK repair (the lab loses nothing)
    assert sender_st["rx_errors"].get("unauthenticated", 0) > 10, sender_st["rx_errors"]
    assert sender_st["rx_errors"].get("bad_tag", 0) > 10, sender_st["rx_errors"]
    assert sender_st["auth"]["refused"] == sender_st["rx_errors"]
    assert sender_st["fec"]["repair_nack_sent"] == 0


# argv: group port address seconds; for every symbol of the real run it hears, sends forged
# repair symbols (the real header, kind 16, a garbage payload, a random tag) for every planned
# repair ESI and a few beyond; while the sender spreads a frame over ~200 ms they reach the
# receiver before the real repair symbols, so a frame that lost a source symbol decodes from
# forgeries first. Prints its counts as JSON.
REPAIR_FORGER = """
import json, os, select, sys, time
from mcastcam import net

group, port, address, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
eth0 = net.resolve_interface("eth0")
listen = net.open_multicast_receiver(group, port, eth0, 4 << 20)
listen.setblocking(True)
out = net.open_multicast_sender(eth0, 1, False)
out.setblocking(True)
sent, seen, end = 0, set(), time.monotonic() + seconds
while time.monotonic() < end and sent < 100000:
    if not select.select([listen], [], [], 0.1)[0]:
        continue
    data, src = listen.recvfrom(65536)
    if src[0] == address or len(data) < 64 or data[3] != 1 or not data[5] & 1:
        continue
    fid = data[14:18]
    if fid in seen:
        continue
    seen.add(fid)
    t = int.from_bytes(data[22:24], "big")
    k = -(-int.from_bytes(data[24:28], "big") // t)
    r = int.from_bytes(data[42:44], "big")
    for esi in range(k, k + r + 3):
        header = bytearray(data[:48])
        header[3] = 16
        header[18:22] = esi.to_bytes(4, "big")
        out.sendto(bytes(header) + os.urandom(t) + os.urandom(16), (group, port))
        sent += 1
print(json.dumps({"forged_repair": sent, "frames": len(seen)}), flush=True)
"""


def test_forged_repair_symbols_under_loss_never_publish_a_forged_frame(
    netlab: Any, tmp_path: Path
) -> None:
    """Forged repair symbols for live frames while h1 loses 8 % of its datagrams: frames
    that need FEC decode from forgeries first, fail their frame tag, and take the slow path
    (forgeries found by their own tags, decoding again from genuine symbols, NACKs as usual):
    no forged or corrupt frame, the stream keeps going."""
    key = tmp_path / "cam.key"
    generate_key_file(key, 3)
    lab = netlab(hosts=3)
    (r,) = labkit.start_receivers(lab, (1,), "--key-file", str(key), "--name", "cam")
    sender = labkit.start_sender(lab, 0, labkit.SAMPLE, "--fps", "4", "--max-rate", "500k",
                                 "--loop", "--fec", "30", "--heartbeat-interval", "0.5",
                                 "--name", "cam", "--key-file", str(key))
    labkit.wait_until(lambda: (r.followed() or {}).get("frames_completed", 0) > 3, 15.0,
                      "the receiver to follow the keyed stream")
    before = r.followed()
    assert before is not None
    labkit.connect_clients([r], tmp_path)
    lab.set_loss(1, 800)
    forger = lab.host(2).python_popen(REPAIR_FORGER, labkit.GROUP_ADDR, str(labkit.PORT),
                                      lab.host(2).address, "8.0")
    out, err = forger.communicate(timeout=40)
    lab.set_loss(1, 0)
    time.sleep(1.0)
    st = r.status()
    after = r.followed(st)
    labkit.stop(sender)
    (frames,) = labkit.finish_clients([r])[1]
    assert forger.returncode == 0, err
    counts = json.loads(out.strip().splitlines()[-1])
    assert after is not None
    completed = after["frames_completed"] - before["frames_completed"]
    dropped = sum(after["frames_dropped"].values()) - sum(before["frames_dropped"].values())
    errors = after["decode_errors"]
    print(f"forger {counts}; completed {completed} (FEC {after['repaired_fec']}, NACK "
          f"{after['repaired_nack']}), dropped {after['frames_dropped']}, corrupt "
          f"{after['corrupt']}; errors {errors}; served {len(frames)}")
    assert counts["forged_repair"] > 100
    source = set(labkit.load_frames(labkit.SAMPLE))
    assert len(frames) >= 20 and all(f in source for f in frames)
    assert after["corrupt"] == 0 and after["stream_id"] == before["stream_id"]
    assert completed >= 20 and completed >= 0.9 * (completed + dropped)
    assert errors.get("bad_frame_tag", 0) > 0  # decoded from forgeries: the slow path ran
    assert errors.get("bad_tag", 0) > 0
    assert after["repaired_fec"] + after["repaired_nack"] > 0
