"""UDP GSO/GRO end to end with the real CLIs (issue #13).

One sender, two receivers on the same group: one with UDP GRO (the default) and one with
``--no-gro``; both must serve the same frames, byte for byte, whether the sender batches with
GSO or not (``--no-gso``). On loopback (multicast pinned to ``lo``, TTL 0) and across the
namespace lab (veth + bridge, no uplink), where ``--mtu 9000`` on a 1,500-byte link makes the
kernel refuse the GSO batches (EMSGSIZE): the sender falls back and no frame is lost.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcastcam.client import iter_frames
from tests.conftest import DataFiles, naive_split
from tests.lab import labkit
from tests.test_end_to_end import SAMPLE, Loop, free_port, receiver, sender, status, wait_for

SOURCE = naive_split(SAMPLE.read_bytes())
COUNT = 45


@pytest.fixture
def loop_programs() -> Iterator[Loop]:
    programs = Loop()
    try:
        yield programs
    finally:
        programs.close()


def _read(port: int) -> list[bytes]:
    url = f"http://127.0.0.1:{port}/stream"
    return [f.jpeg for f in iter_frames(url, max_frames=COUNT, timeout=15, reconnect=False)]


def _sender_status(path: Path) -> dict[str, Any]:
    wait_for(path.exists, 10)
    return json.loads(path.read_text())  # type: ignore[no-any-return]


@pytest.mark.multicast
@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
def test_gro_and_plain_receivers_serve_the_same_frames(
    loop_programs: Loop, tmp_path: Path, gso: bool
) -> None:
    group = f"239.255.{random.randint(2, 254)}.{random.randint(1, 254)}"
    group += f":{free_port(socket.SOCK_DGRAM)}"
    with_gro, _ = receiver(loop_programs, group)
    without_gro, _ = receiver(loop_programs, group, "--no-gro")
    assert status(with_gro)["gro"] == "on"
    assert status(without_gro)["gro"] == "off (--no-gro)"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        reads = [pool.submit(_read, port) for port in (with_gro, without_gro)]
        wait_for(lambda: all(status(p)["clients_count"] == 1 for p in (with_gro, without_gro)), 10)
        json_path = tmp_path / "sender.json"
        extra = ["--fps", "30", "--count", str(COUNT), "--status-json", str(json_path)]
        done = sender(loop_programs, group, str(SAMPLE), *extra, *([] if gso else ["--no-gso"]))
        assert done.result(timeout=30) == 0
        got = [r.result(timeout=30) for r in reads]
    assert got[0] == got[1] == SOURCE[:COUNT]
    for port in (with_gro, without_gro):
        st = status(port)["streams"][0]
        assert (st["frames_completed"], st["lost"], st["frames_dropped"]) == (COUNT, 0, {})
    sent = _sender_status(json_path)
    if gso:
        assert sent["gso"] == "on" and sent["gso_calls"] > 0
        assert status(with_gro)["gro_buffers"] > 0  # loopback keeps a GSO batch whole
    else:
        assert sent["gso"] == "off (--no-gso)" and sent["gso_calls"] == 0
        assert status(with_gro)["gro_buffers"] == 0  # lo has no GRO engine: nothing coalesced
    assert status(without_gro)["gro_buffers"] == 0


@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.parametrize("mtu", [1500, 9000])
def test_across_veth_gso_fallback_loses_no_frame(
    netlab: Callable[..., Any], tmp_path: Path, data_files: DataFiles, mtu: int
) -> None:
    """h0 sends, h1 receives with GRO, h2 without; the links have a 1,500-byte MTU.

    The frames are 1280x720 (tens of kB: several 9,000-byte datagrams each).
    ``--mtu 1500``: GSO batches cross veth and the bridge whole (``nic_gso``: the lab keeps
    veth's software GSO) and reach h1 coalesced.
    ``--mtu 9000``: each segment is larger than the link MTU, the first batch fails with
    EMSGSIZE, the sender turns GSO off and sends the same datagrams one by one (the kernel
    fragments them at the IP layer): every frame still arrives.
    """
    path = data_files / "synthetic_1280x720_422.mjpeg"
    source = naive_split(path.read_bytes())
    lab = netlab(hosts=3, nic_gso=True)
    receivers = labkit.start_receivers(lab, [1])
    receivers += labkit.start_receivers(lab, [2], "--no-gro")
    labkit.connect_clients(receivers, tmp_path)
    json_path = tmp_path / "sender.json"
    proc = labkit.start_sender(
        lab, 0, path, "--fps", "30", "--count", str(COUNT), "--mtu", str(mtu),
        "--ttl", "1", "--status-json", str(json_path),
    )  # fmt: skip
    assert proc.wait(timeout=60) == 0, labkit.output(proc)
    sent = _sender_status(json_path)
    statuses = [r.status() for r in receivers]
    got = labkit.finish_clients(receivers)
    assert got[1] == got[2] == [source[:COUNT]]
    for st in statuses:
        s = st["streams"][0]
        assert (s["frames_completed"], s["lost"]) == (COUNT, 0)
    assert statuses[0]["gro"] == "on" and statuses[1]["gro"] == "off (--no-gro)"
    assert statuses[1]["gro_buffers"] == 0
    if mtu == 1500:
        assert sent["gso"] == "on" and sent["gso_calls"] > 0
        assert statuses[0]["gro_buffers"] > 0
    else:
        assert sent["gso"].startswith("off (a ") and "Message too long" in sent["gso"]
        assert statuses[0]["gro_buffers"] == 0
        assert sent["send_errors"] == {}
