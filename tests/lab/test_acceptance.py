"""Acceptance on a LAN in a box: one sender, three receivers, recordings, real clients.

h0 runs ``mcastcam-send``; h1, h2 and h3 each run ``mcastcam-recv`` serving HTTP on their lab
address, and a ``curl -N`` on each receiver host reads ``/stream`` from before the first
datagram is sent. With no loss injected every frame must reach every client byte-identical
to the recording (the naive FFD8..FFD9 split is the oracle), in order, none missing, and
each receiver's ``/status`` must count exactly the frames sent and no drop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DataFiles
from tests.lab import labkit

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.clients]

# (recording, frames to send): long recordings capped so the set stays well under 2 minutes.
RECORDINGS = [
    ("webcam_640x480_420.mjpeg", 60),
    ("pi_hqcam_640x480_420_static.mjpeg", 60),
    ("synthetic_160x120_420.mjpeg", 60),
    ("bedroom_960x540_420_first100.mjpeg", 60),
    ("synthetic_1280x720_422.mjpeg", 60),
    ("synthetic_1080x1920_420.mjpeg", 20),
]
FPS = "60"
RECEIVER_HOSTS = (1, 2, 3)


def check_delivery(receivers: list[labkit.Receiver], source: list[bytes], count: int) -> None:
    """Every receiver completed ``count`` frames, dropped none, and its client got them all."""
    expected = source[:count]
    statuses: dict[int, dict[str, Any]] = {}
    for r in receivers:
        statuses[r.host.index] = labkit.wait_until(
            lambda r=r: (
                (st := r.status())
                and (f := r.followed(st)) is not None
                and f["frames_completed"] >= count
                and st["frames_sent_total"] >= count
                and not any(c["busy"] for c in st["clients"])
                and st
            ),
            15.0,
            f"h{r.host.index} to complete and serve {count} frames",
        )
    got = labkit.finish_clients(receivers)
    for r in receivers:
        i = r.host.index
        st = statuses[i]
        followed = r.followed(st)
        assert followed is not None
        assert followed["frames_completed"] == count, (i, followed)
        assert followed["frames_dropped"] == {}, (i, followed)
        assert followed["lost"] == 0, (i, followed)
        assert followed["decode_errors"] == {}, (i, followed)
        assert st["frames_skipped_total"] == 0, (i, st["clients"])
        (frames,) = got[i]
        assert len(frames) == count, f"h{i}: client got {len(frames)} of {count} frames"
        positions = labkit.source_positions(frames, expected)
        assert positions == list(range(count)), f"h{i}: frames out of order or missing"
        assert frames == expected


def run_acceptance(netlab: Any, tmp_path: Path, path: Path, count: int,
                   broadcast: bool = False) -> None:
    source = labkit.load_frames(path)
    assert len(source) >= count
    lab = netlab(hosts=4)
    if broadcast:
        recv_mode: tuple[str, ...] = ("--broadcast", "--port", str(labkit.PORT))
        receivers = labkit.start_receivers(lab, RECEIVER_HOSTS, *recv_mode, group=None)
    else:
        receivers = labkit.start_receivers(lab, RECEIVER_HOSTS)
    labkit.connect_clients(receivers, tmp_path)
    send_mode = ("--broadcast", "--port", str(labkit.PORT)) if broadcast else ()
    sender = labkit.start_sender(lab, 0, path, "--fps", FPS, "--count", str(count),
                                 *send_mode, group=None if broadcast else labkit.GROUP)
    try:
        code = sender.wait(timeout=30)
    finally:
        labkit.stop(sender)
    assert code == 0, f"mcastcam-send exited {code}: {labkit.output(sender)}"
    check_delivery(receivers, source, count)


@pytest.mark.parametrize(
    ("name", "count"), RECORDINGS, ids=[n.removesuffix(".mjpeg") for n, _ in RECORDINGS]
)
def test_every_frame_reaches_three_receivers_byte_identical(
    netlab: Any, data_files: DataFiles, tmp_path: Path, name: str, count: int
) -> None:
    run_acceptance(netlab, tmp_path, data_files / name, count)


def test_bundled_sample_reaches_three_receivers(netlab: Any, tmp_path: Path) -> None:
    run_acceptance(netlab, tmp_path, labkit.SAMPLE, 60)


def test_broadcast_mode_delivers_every_frame(
    netlab: Any, data_files: DataFiles, tmp_path: Path
) -> None:
    run_acceptance(netlab, tmp_path, data_files / "synthetic_1280x720_422.mjpeg", 60,
                   broadcast=True)


def test_discovery_mode_finds_the_sender_and_delivers_frames(netlab: Any, tmp_path: Path) -> None:
    """No --group anywhere on the receivers: they find the sender by broadcast discovery."""
    source = labkit.load_frames(labkit.SAMPLE)
    lab = netlab(hosts=4)
    sender = labkit.start_sender(lab, 0, "sample", "--fps", "30", "--name", "cam-lab",
                                 group="239.255.42.1:9042")
    try:
        receivers = labkit.start_receivers(lab, RECEIVER_HOSTS, "--name", "cam-lab", group=None)
        for r in receivers:
            labkit.wait_until(lambda r=r: (f := r.followed(r.status())) and f["frames_completed"],
                              10.0, f"h{r.host.index} to discover and follow cam-lab")
        labkit.connect_clients(receivers, tmp_path)
        for r in receivers:
            labkit.wait_until(lambda r=r: r.status()["frames_sent_total"] >= 30, 10.0,
                              f"h{r.host.index} to serve 30 frames")
        got = labkit.finish_clients(receivers)
    finally:
        labkit.stop(sender)
    for i, (frames,) in got.items():
        assert len(frames) >= 30, f"h{i}: {len(frames)} frames"
        positions = labkit.source_positions(frames, source + source)  # the sample loops
        assert positions == list(range(positions[0], positions[0] + len(frames))), f"h{i}"
