#!/usr/bin/python3
"""GStreamer RTP/JPEG (RFC 2435) sender for the benchmarks, paced through ``appsrc``.

Runs under Debian's ``/usr/bin/python3`` with ``python3-gi`` (PyGObject is not importable
from the project's own interpreter), so it imports nothing from mcastcam. Pipeline::

    appsrc format=time (PTS = i / fps) ! rtpjpegpay mtu=M
        ! udpsink host=GROUP port=P bind-address=127.0.0.1 ttl-mc=0 sync=true

``udpsink sync=true`` sends each frame at its timestamp, so the pipeline clock paces the
stream. In GStreamer 1.22 ``udpsink multicast-iface`` does not set the outgoing interface:
``bind-address`` pins loopback multicast to ``lo`` and ``ttl-mc=0`` keeps it on this host.
For a netns lab give ``--bind`` the sender host's address and ``--ttl 1``.

Loss repair (``bench loss``): ``--fec ulpfec`` inserts ``rtpulpfecenc percentage=20 pt=122``
(RFC 5109 FEC packets in the media stream, same port) after the payloader; ``--fec st2022``
inserts ``rtpst2022-1-fecenc columns=10 rows=5`` (SMPTE ST 2022-1 row/column FEC, +30 %
packets) with its column FEC on port P+2 and its row FEC on P+4. With FEC the payloader's
packets are 32 bytes smaller so that FEC packets (their header + the largest protected
payload) still fit the MTU. ``--wall-clock`` runs the pipeline on the realtime clock and adds
``base_time_ns`` to the JSON line: frame i leaves at ``base_time_ns + i * 1e9 / fps`` (wall
clock, ns), its hand-off time.

Frames come from a raw concatenated-JPEG file (SOI..EOI, no container). Prints one JSON line
(frames pushed, wall seconds) on stdout at the end. Exit 0 on EOS, 1 on a pipeline error.

    /usr/bin/python3 gst_send.py FILE.mjpeg --group 239.255.9.1 --port 5004 --fps 30 --count 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import Gst  # noqa: E402


def split_jpegs(data: bytes) -> list[bytes]:
    """Split a concatenated-JPEG stream at each EOI followed by SOI."""
    frames = []
    start = 0
    while True:
        end = data.find(b"\xff\xd9\xff\xd8", start)
        if end < 0:
            tail = data[start:]
            if tail:
                frames.append(tail)
            return frames
        frames.append(data[start : end + 2])
        start = end + 2


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """(width, height) from the first SOFn segment (ITU T.81 B.2.2); (0, 0) if none."""
    i = 2
    while i + 9 < len(jpeg):
        if jpeg[i] != 0xFF:
            return 0, 0
        marker = jpeg[i + 1]
        seglen = int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h = int.from_bytes(jpeg[i + 5 : i + 7], "big")
            w = int.from_bytes(jpeg[i + 7 : i + 9], "big")
            return w, h
        i += 2 + seglen
    return 0, 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("file")
    p.add_argument("--group", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--mtu", type=int, default=1500, help="RTP packet size cap, bytes")
    p.add_argument("--bind", default="127.0.0.1", help="local address (pins the interface)")
    p.add_argument("--ttl", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0, help="give up after S seconds")
    p.add_argument("--fec", choices=("none", "ulpfec", "st2022"), default="none")
    p.add_argument("--wall-clock", action="store_true", help="realtime pipeline clock")
    a = p.parse_args()
    frames = split_jpegs(open(a.file, "rb").read())  # noqa: SIM115
    if not frames:
        print("no JPEG frames in " + a.file, file=sys.stderr)
        return 1
    width, height = jpeg_size(frames[0])
    Gst.init(None)
    # rtpjpegpay's mtu counts the whole IP packet budget like mcastcam's --mtu: leave room
    # for IP (20) + UDP (8) headers.
    sink = (
        f"udpsink host={a.group} port={{port}} bind-address={a.bind} ttl-mc={a.ttl} "
        "auto-multicast=false sync={sync} async=false"
    )
    fec = {
        "none": "",
        "ulpfec": "! rtpulpfecenc percentage=20 pt=122 ",
        "st2022": "! rtpst2022-1-fecenc name=fec columns=10 rows=5 pt=96 ",
    }[a.fec]
    desc = (
        "appsrc name=src format=time is-live=false block=true max-bytes=4000000 "
        f"caps=image/jpeg,width={width},height={height},framerate={round(a.fps * 1000)}/1000 "
        f"! rtpjpegpay mtu={a.mtu - 28 - (32 if fec else 0)} "
        + ("ssrc=0 " if fec else "")  # ST 2022-1 wants SSRC 0; the ULPFEC receiver's caps name it
        + fec
        + "! "
        + sink.format(port=a.port, sync="true")
    )
    if a.fec == "st2022":  # column FEC (fec_0) on P+2, row FEC (fec_1) on P+4
        desc += " fec.fec_0 ! " + sink.format(port=a.port + 2, sync="false")
        desc += " fec.fec_1 ! " + sink.format(port=a.port + 4, sync="false")
    pipe = Gst.parse_launch(desc)
    if a.wall_clock:
        clock = Gst.SystemClock.obtain()
        clock.set_property("clock-type", Gst.ClockType.REALTIME)
        pipe.use_clock(clock)
    src = pipe.get_by_name("src")
    bus = pipe.get_bus()
    pipe.set_state(Gst.State.PLAYING)
    t0 = time.monotonic()
    interval = int(Gst.SECOND / a.fps)
    pushed = 0
    ok = True
    for i in range(a.count):
        buf = Gst.Buffer.new_wrapped(frames[i % len(frames)])
        buf.pts = i * interval
        buf.duration = interval
        if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
            ok = False
            break
        pushed += 1
        if time.monotonic() - t0 > a.timeout:
            ok = False
            break
    src.emit("end-of-stream")
    msg = bus.timed_pop_filtered(
        int(a.timeout * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    if msg is None or msg.type == Gst.MessageType.ERROR:
        ok = False
        if msg is not None:
            err, dbg = msg.parse_error()
            print(f"gstreamer error: {err.message} ({dbg})", file=sys.stderr)
    wall = time.monotonic() - t0
    base_time = pipe.get_base_time()  # fixed once PLAYING
    pipe.set_state(Gst.State.NULL)
    line = {"pushed": pushed, "wall_s": wall, "ok": ok}
    if a.wall_clock:
        line["base_time_ns"] = base_time
    print(json.dumps(line), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
