#!/usr/bin/python3
"""GStreamer RTP/JPEG receiver with loss repair, for ``bench loss``: JPEGs on stdout.

Runs under Debian's ``/usr/bin/python3`` with ``python3-gi`` (like ``gst_send.py``).
Pipelines (``--fec``)::

    ulpfec: udpsrc P ! rtpstorage size-time=L+50ms ! rtpjitterbuffer do-lost=true latency=L
                ! rtpulpfecdec pt=122 ! rtpjpegdepay ! fdsink fd=1
    st2022: udpsrc P   ! rtpst2022-1-fecdec name=dec ! rtpjitterbuffer latency=L
                ! rtpjpegdepay ! fdsink fd=1
            udpsrc P+2 ! dec.fec_0      (column FEC)
            udpsrc P+4 ! dec.fec_1      (row FEC)

ULPFEC packets share the media stream's sequence numbers with payload type 122; the jitter
buffer asks for the clock rate of every payload type it sees (``request-pt-map``, answered
here with 90 kHz; rtpbin does the same), else it would drop the FEC packets. ``L`` is
``--latency`` ms (default 100: ST 2022-1's column FEC for a 10 x 5 matrix arrives after 50
packets, often with the next frame, 33 ms later at 30 fps). The sender uses SSRC 0 (ULPFEC's
decoder needs the SSRC in its caps). On SIGTERM/SIGINT the pipeline
stops and one JSON line goes to stderr: ``recovered`` / ``unrecovered`` packets (ULPFEC's
counters; ``null`` for ST 2022-1, which has none).

    /usr/bin/python3 gst_recv_fec.py --fec st2022 --group 239.255.9.1 --port 5004 \\
        --interface eth0 > frames.mjpeg
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

RTP_CAPS = "application/x-rtp,media=video,clock-rate=90000,encoding-name=JPEG,payload=26"
FEC_CAPS = "application/x-rtp,media=video,clock-rate=90000,payload=96"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fec", choices=("ulpfec", "st2022"), required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--interface", default="lo")
    p.add_argument("--rcvbuf", type=int, default=4 << 20, help="bytes")
    p.add_argument("--latency", type=int, default=100, help="jitter buffer latency, ms")
    a = p.parse_args()

    def src(port: int, caps: str) -> str:
        return (
            f"udpsrc address={a.group} port={port} multicast-iface={a.interface} "
            f'buffer-size={a.rcvbuf} caps="{caps}"'
        )

    out = "rtpjpegdepay ! fdsink fd=1 sync=false"
    if a.fec == "ulpfec":
        desc = (
            f"{src(a.port, RTP_CAPS + ',ssrc=(uint)0')} "
            f"! rtpstorage size-time={(a.latency + 50) * 1_000_000} "
            f"! rtpjitterbuffer name=jb do-lost=true latency={a.latency} "
            f"! rtpulpfecdec name=dec pt=122 ! {out}"
        )
    else:
        desc = (
            f"{src(a.port, RTP_CAPS)} ! rtpst2022-1-fecdec name=dec "
            f"! rtpjitterbuffer name=jb latency={a.latency} ! {out} "
            f"{src(a.port + 2, FEC_CAPS)} ! dec.fec_0 "
            f"{src(a.port + 4, FEC_CAPS)} ! dec.fec_1"
        )
    Gst.init(None)
    pipe = Gst.parse_launch(desc)
    jb = pipe.get_by_name("jb")
    jb.connect(
        "request-pt-map",
        lambda _jb, pt: Gst.Caps.from_string(
            RTP_CAPS if pt == 26 else f"application/x-rtp,clock-rate=90000,payload={pt}"
        ),
    )
    dec = pipe.get_by_name("dec")
    loop = GLib.MainLoop()
    status = {"code": 0}

    def on_message(_bus: Gst.Bus, msg: Gst.Message) -> None:
        if msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"gstreamer error: {err.message} ({dbg})", file=sys.stderr, flush=True)
            status["code"] = 1
            loop.quit()

    bus = pipe.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda: loop.quit() or False)
    pipe.set_state(Gst.State.PLAYING)
    loop.run()
    stats = {"recovered": None, "unrecovered": None}
    if a.fec == "ulpfec":
        stats = {k: dec.get_property(k) for k in ("recovered", "unrecovered")}
    pipe.set_state(Gst.State.NULL)
    print(json.dumps(stats), file=sys.stderr, flush=True)
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
