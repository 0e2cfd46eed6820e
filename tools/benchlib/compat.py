"""``bench compat``: which original recordings each system carries, and how faithfully.

For every recording in ../shared/data, the first ``n`` frames as they are (no re-encoding):

* GStreamer: ``gst_send.py`` (appsrc ! rtpjpegpay ! udpsink) -> ``udpsrc ! rtpjpegdepay !
  fdsink``; counted: frames out, frames that decode (simplejpeg/libjpeg-turbo), frames
  byte-identical to the original (RFC 2435 rebuilds the headers, so none is expected);
  the sender's error when ``rtpjpegpay`` refuses the stream.
* mcastcam: ``mcastcam-send`` -> a ``Reassembler`` in this process on a real socket;
  counted: frames completed, and frames byte-identical to an original frame (SHA-256).
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path
from typing import Any

from . import common as c


def _gst(path: Path, frames: list[bytes], n: int) -> dict[str, Any]:
    import simplejpeg

    group = c.next_group()
    obs = c.Observer("gst", group)
    port = obs.port
    recv = c.spawn(c.gst_recv_argv(group, port), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    counter = c.JpegCounter(recv.stdout, keep=n)
    counter.start()
    try:
        c.wait_until(lambda: c.udp_sockets_on(port) >= 2, 20, "gst receiver")
        send = c.spawn(
            c.gst_send_argv(path, group, port, 30, n),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + n / 30 + 30
        while send.poll() is None and time.monotonic() < deadline:
            obs.poll()
        _, err = send.communicate(timeout=10)
        time.sleep(0.5)
    finally:
        c.stop(recv)
        obs.close()
    counter.join(5)
    originals = {hashlib.sha256(f).digest() for f in frames}
    decodes = 0
    for f in counter.kept:
        try:
            simplejpeg.decode_jpeg(f)
            decodes += 1
        except (ValueError, RuntimeError):
            pass
    error = err.decode(errors="replace").strip().splitlines()
    return {
        "sent_ok": send.returncode == 0,
        "error": error[-1][:200] if error else "",
        "out": counter.frames,
        "decodable": decodes,
        "byte_exact": sum(1 for f in counter.kept if hashlib.sha256(f).digest() in originals),
        "datagrams_seen": obs.datagrams,
    }


def _mcastcam(path: Path, frames: list[bytes], n: int) -> dict[str, Any]:
    from mcastcam import net
    from mcastcam.protocol.events import FrameCompleted
    from mcastcam.protocol.reassembly import Reassembler

    group = c.next_group()
    sock = net.open_multicast_receiver(group, 0, net.resolve_interface("lo"), c.RCVBUF)
    sock.setblocking(True)
    sock.settimeout(0.05)
    port = sock.getsockname()[1]
    r = Reassembler()
    got: list[bytes] = []
    try:
        send = c.spawn(
            c.mcastcam_send_argv(path, group, port, 30, n),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + n / 30 + 30
        while time.monotonic() < deadline:
            try:
                data, addr = sock.recvfrom(65536)
            except TimeoutError:
                if send.poll() is not None:
                    break
                continue
            r.receive_datagram(data, addr, time.monotonic())
            while (ev := r.next_event()) is not None:
                if isinstance(ev, FrameCompleted):
                    got.append(bytes(ev.frame.jpeg))
        _, err = send.communicate(timeout=10)
    finally:
        sock.close()
    originals = {hashlib.sha256(f).digest() for f in frames}
    error = err.decode(errors="replace").strip().splitlines()
    return {
        "sent_ok": send.returncode == 0,
        "error": error[-1][:200] if error else "",
        "out": len(got),
        "byte_exact": sum(1 for f in got if hashlib.sha256(f).digest() in originals),
    }


def run(quick: bool) -> dict[str, Any]:
    n = 20 if quick else 60
    out: dict[str, Any] = {"frames": n, "files": {}}
    files = sorted(c.DATA.glob("*.mjpeg"))
    if not files:
        raise c.Skip(f"no recordings in {c.DATA}")
    for src in files:
        frames = c.split_frames(src.read_bytes())[:n]
        sub = c.CACHE / f"compat_{src.stem}_{n}.mjpeg"
        c.CACHE.mkdir(parents=True, exist_ok=True)
        sub.write_bytes(b"".join(frames))
        row = {
            "sent": len(frames),
            "gst": _gst(sub, frames, len(frames)),
            "mcastcam": _mcastcam(sub, frames, len(frames)),
        }
        c.log(f"compat {src.name}: {row}")
        out["files"][src.name] = row
    return out
