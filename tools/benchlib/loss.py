"""``bench loss``: loss repair side by side in the netns lab (issue #11 item 7).

Two network namespaces on a bridge (``tools/netlab.py``, 1,500-byte MTU, GSO batches cut
into datagrams on transmit like a NIC); host 0 sends, host 1 receives. Systems, all fed the
same RTP-compatible frames (:func:`common.prepare`) at 30 fps:

* ``mcastcam``: ``mcastcam-send --fec auto`` (RaptorQ repair sized from receiver reports)
  and ``mcastcam-recv`` with NACKs on (the default);
* ``mcastcam-nonack``: the same with ``mcastcam-recv --no-nack`` (FEC only);
* ``gst-ulpfec``: ``rtpjpegpay ! rtpulpfecenc percentage=20`` / ``rtpstorage !
  rtpjitterbuffer do-lost ! rtpulpfecdec`` (``gst_send.py``, ``gst_recv_fec.py``);
* ``gst-st2022``: ``rtpst2022-1-fecenc columns=10 rows=5`` / ``rtpst2022-1-fecdec !
  rtpjitterbuffer``.

Loss: an nftables table ``inet benchloss`` on host 1's input hook (priority -20, every UDP
datagram: media, repair, heartbeats): independent drops (``numgen random mod 1000000 < N``)
at 0, 0.5, 1, 2, 5, 10 %, and a Gilbert–Elliott burst model (2 % average, mean burst 4),
run by nftables itself: a one-element dynamic set is the Bad state, each datagram in Bad is
dropped and leaves Bad with probability r = 1/4 (``delete @badstate``), each datagram in Good
enters Bad with probability p = avg / (burst (1 - avg)) (``add @badstate``); p and r come
from ``tools/lossmodel.py``. Counters give the achieved loss and mean burst. The receiver's
reports and NACKs (host 1 -> host 0) are not dropped.

Measured per run: delivered frames (mcastcam: ``frames_completed`` in ``/status``; GStreamer:
JPEGs out of ``rtpjpegdepay`` whose entropy-coded scan is byte-identical to a frame sent),
corrupt frames (mcastcam: frames on the raw TCP re-serve not byte-identical to a frame sent,
``loss_client.py``; GStreamer: scans not identical), extra datagrams (mcastcam: repair /
source symbols from the sender's ``--status-json``; GStreamer: FEC / media packets counted
by nftables on host 1 before the loss rule), latency capture hand-off -> frame complete
(mcastcam: at a TCP re-serve client in host 1, time.time_ns() minus the frame's
``capture_ts_ns``; GStreamer: when this process read the JPEG from the receiver's stdout
minus ``base_time + i / fps``, the wall-clock time the sender's pipeline released frame i),
and CPU per frame of the sender and receiver processes (``/proc/PID/stat``) over the
steady part of the run (from 2 s after the first sample to the sender's exit). mcastcam
rows also keep the sender's NACK counters (``repair_budget_exhausted``, ``nacks_refused``,
``nack_entries_unknown_frame``) and the receiver's (``recv_nack``: NACKs sent, rate-limited).

``tools/bench loss --systems mcastcam,mcastcam-nonack`` (``MCASTCAM_BENCH_LOSS_SYSTEMS``)
runs a subset; with ``--previous PATH`` (``MCASTCAM_BENCH_LOSS_PREVIOUS``, an earlier
``loss.json``) the rows not run (system, resolution and condition) are copied from that
run's trials, each marked with its ``previous_commit`` so the report labels them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import common as c

RANDOM = (0, 0.005, 0.01, 0.02, 0.05, 0.10)
RANDOM_QUICK = (0, 0.01, 0.05)
BURST = (0.02, 4.0)  # average loss, mean burst length (datagrams)
SYSTEMS = ("mcastcam", "mcastcam-nonack", "gst-ulpfec", "gst-st2022")
CLIPS = ("640x480", "720p", "1080p")
FPS = 30
PORT = 5004
HTTP, TCP = 8080, 8081
HERE = Path(__file__).resolve().parent
INTERVAL_NS = int(1e9 / FPS)  # gst_send.py: PTS of frame i = i * int(SECOND / fps)


def _pct(xs: list[float], q: float) -> float | None:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def _scan_key(jpeg: bytes | bytearray) -> bytes | None:
    """SHA-256 of the entropy-coded data after the SOS segment (what RTP/JPEG carries)."""
    i = jpeg.find(b"\xff\xda")
    if i < 0 or i + 4 > len(jpeg):
        return None
    start = i + 2 + int.from_bytes(jpeg[i + 2 : i + 4], "big")
    return hashlib.sha256(jpeg[start:]).digest()


class _GstFrames(c.JpegCounter):
    """Frames out of a GStreamer receiver's stdout: arrival wall time and scan identity."""

    def __init__(self, stream: Any, keys: dict[bytes, list[int]]) -> None:
        super().__init__(stream)
        self.keys = keys
        self.got: list[tuple[int, int]] = []  # (time_ns at read, file index)

    def _frame(self, frame: bytes | bytearray) -> None:
        now = time.time_ns()
        idx = self.keys.get(_scan_key(frame) or b"")
        if idx is None:
            self.bad += 1
            return
        self.frames += 1
        self.got.append((now, idx[0]))


def _nft_script(loss: float, burst: float | None) -> str:
    rules = [
        f"udp dport {PORT} @th,72,8 & 0x7f == 122 counter name fec_ulp",
        f"udp dport {{ {PORT + 2}, {PORT + 4} }} counter name fec_st",
        f"udp dport {PORT} counter name port_main",
        "meta l4proto udp counter name total",
    ]
    if burst is not None:
        sys.path.insert(0, str(c.ROOT / "tools"))
        import lossmodel

        m = lossmodel.GilbertElliott.from_loss(loss, burst, seed=1)
        p, r = round(m.p * 1e6), round(m.r * 1e6)
        rules.append("meta l4proto udp jump gech")
        gech = [
            f"ip protocol @badstate numgen random mod 1000000 < {r} "
            "delete @badstate { ip protocol } counter name lost drop",
            "ip protocol @badstate counter name lost drop",
            f"numgen random mod 1000000 < {p} add @badstate {{ ip protocol }} "
            "counter name bursts accept",
        ]
    else:
        gech = []
        if loss > 0:
            rules.append(
                f"meta l4proto udp numgen random mod 1000000 < {round(loss * 1e6)} "
                "counter name lost drop"
            )
    counters = "\n  ".join(
        f"counter {n} {{}}" for n in ("fec_ulp", "fec_st", "port_main", "total", "lost", "bursts")
    )
    return (
        "table inet benchloss {\n"
        "  set badstate { type inet_proto; flags dynamic; }\n"
        f"  {counters}\n"
        "  chain input { type filter hook input priority -20; policy accept;\n    "
        + "\n    ".join(rules)
        + "\n  }\n  chain gech {\n    "
        + ("\n    ".join(gech) or "return")
        + "\n  }\n}\n"
    )


def _set_loss(host: Any, loss: float, burst: float | None) -> None:
    host.run(["nft", "delete", "table", "inet", "benchloss"], check=False)
    host.run(["nft", "-f", "-"], input=_nft_script(loss, burst))


def _counters(host: Any) -> dict[str, int]:
    done = host.run(["nft", "-j", "list", "counters", "table", "inet", "benchloss"], check=False)
    out: dict[str, int] = {}
    if done.returncode == 0:
        for item in json.loads(done.stdout)["nftables"]:
            if "counter" in item:
                out[item["counter"]["name"]] = int(item["counter"]["packets"])
    return out


def _sample_until_exit(
    send: subprocess.Popen[Any], recv: subprocess.Popen[Any], deadline: float
) -> list[tuple[float, float | None, float | None]]:
    samples = []
    while send.poll() is None and time.monotonic() < deadline:
        samples.append((time.monotonic(), c.proc_cpu_s(send.pid), c.proc_cpu_s(recv.pid)))
        time.sleep(0.25)
    return samples


def _cpu_per_frame(samples: list[tuple[float, float | None, float | None]]) -> dict[str, Any]:
    ok = [s for s in samples if s[1] is not None and s[2] is not None]
    if not ok:
        return {}
    window = [s for s in ok if s[0] >= ok[0][0] + 2.0]
    if len(window) < 4:
        return {}
    (t0, s0, r0), (t1, s1, r1) = window[0], window[-1]
    frames = (t1 - t0) * FPS
    return {
        "send_cpu_ms": (s1 - s0) / frames * 1e3,  # type: ignore[operator]
        "recv_cpu_ms": (r1 - r0) / frames * 1e3,  # type: ignore[operator]
        "cpu_window_s": round(t1 - t0, 1),
    }


def _curl_status(host: Any) -> Any:
    done = host.run(["curl", "-sf", f"http://127.0.0.1:{HTTP}/status"], check=False)
    return json.loads(done.stdout) if done.returncode == 0 and done.stdout else None


def _mcastcam(lab: Any, system: str, path: Path, count: int, tmp: Path) -> dict[str, Any]:
    h0, h1 = lab.host(0), lab.host(1)
    group = c.next_group()
    recv_argv = c.mcastcam_recv_argv(group, PORT, HTTP, iface="eth0")
    recv_argv += ["--tcp", f"127.0.0.1:{TCP}"]
    if system == "mcastcam-nonack":
        recv_argv.append("--no-nack")
    status_json = tmp / f"send-{group}.json"
    row: dict[str, Any] = {}
    procs: list[subprocess.Popen[Any]] = []
    try:
        recv = c.spawn(h1.command(recv_argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(recv)
        c.wait_until(lambda: _curl_status(h1) is not None, 30, "mcastcam-recv /status")
        client = c.spawn(
            h1.command([sys.executable, str(HERE / "loss_client.py"), "127.0.0.1", str(TCP),
                        str(path), str(count / FPS + 60)]),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(client)
        time.sleep(0.5)
        send_argv = c.mcastcam_send_argv(path, group, PORT, FPS, count, iface="eth0", ttl=1)
        send_argv += ["--fec", "auto", "--status-json", str(status_json), "--quiet"]
        send = c.spawn(h0.command(send_argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(send)
        samples = _sample_until_exit(send, recv, time.monotonic() + count / FPS * 2 + 60)
        _, err = send.communicate(timeout=30)
        row["sender_exit"] = send.returncode
        if send.returncode:
            row["note"] = err.decode(errors="replace")[-300:]
        time.sleep(1.5)
        st = _curl_status(h1) or {}
        c.stop(client)
        cl = json.loads(client.stdout.read() or b"{}")
        c.stop(recv)
    finally:
        for pr in reversed(procs):
            c.stop(pr)
    streams = st.get("streams") or [{}]
    s0 = streams[0]
    sender = json.loads(status_json.read_text()) if status_json.exists() else {}
    fec = sender.get("fec", {})
    src = fec.get("source_symbols_sent") or 0
    rep = (fec.get("repair_proactive_sent") or 0) + (fec.get("repair_nack_sent") or 0)
    row.update(
        delivered=sum(s.get("frames_completed", 0) for s in streams),
        corrupt=cl.get("corrupt"),
        client_frames=cl.get("frames"),
        client_exact=cl.get("exact"),
        extra_pct=100 * rep / src if src else None,
        repair_proactive=fec.get("repair_proactive_sent"),
        repair_nack=fec.get("repair_nack_sent"),
        source_symbols=src,
        redundancy_pct_last=fec.get("redundancy_pct"),
        nacks_received=fec.get("nacks_received"),
        repair_budget_exhausted=fec.get("repair_budget_exhausted"),
        nacks_refused=fec.get("nacks_refused"),
        nack_entries_unknown_frame=fec.get("nack_entries_unknown_frame"),
        recv_nack=st.get("nack"),
        recv_dropped=s0.get("frames_dropped"),
        latency_ms=cl.get("latency_ms") or [],
        recv_counters={k: v for k, v in s0.items() if isinstance(v, int | float)},
        **_cpu_per_frame(samples),
    )
    return row


def _gst(lab: Any, system: str, path: Path, count: int) -> dict[str, Any]:
    h0, h1 = lab.host(0), lab.host(1)
    group = c.next_group()
    fec = system.split("-", 1)[1]
    files = c.split_frames(path.read_bytes())
    keys: dict[bytes, list[int]] = {}
    for i, f in enumerate(files):
        keys.setdefault(_scan_key(f) or b"", []).append(i)
    recv_argv = [
        c.SYS_PYTHON, str(HERE / "gst_recv_fec.py"), "--fec", fec, "--group", group,
        "--port", str(PORT), "--interface", "eth0", "--rcvbuf", str(c.RCVBUF),
    ]  # fmt: skip
    row: dict[str, Any] = {}
    procs: list[subprocess.Popen[Any]] = []
    out = b""
    try:
        recv = c.spawn(h1.command(recv_argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(recv)
        reader = _GstFrames(recv.stdout, keys)
        reader.start()
        time.sleep(1.5)
        send_argv = c.gst_send_argv(path, group, PORT, FPS, count, bind=h0.address, ttl=1)
        send_argv += ["--fec", fec, "--wall-clock"]
        send = c.spawn(h0.command(send_argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(send)
        samples = _sample_until_exit(send, recv, time.monotonic() + count / FPS * 2 + 60)
        out, err = send.communicate(timeout=30)
        row["sender_exit"] = send.returncode
        if send.returncode:
            row["note"] = err.decode(errors="replace")[-300:]
        time.sleep(1.0)
        c.stop(recv)
        reader.join(5)
        rerr = recv.stderr.read().decode(errors="replace").strip().splitlines()
        row["recv_stderr"] = rerr[-3:]
        with contextlib.suppress(ValueError, IndexError):
            row.update(json.loads(rerr[-1]))
    finally:
        for pr in reversed(procs):
            c.stop(pr)
    line = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    base = line.get("base_time_ns")
    lat: list[float] = []
    if base:
        last = -1
        n = len(files)
        for t, j in reader.got:  # global frame index: the next i > last with i % n == j
            i = last + 1 + (j - (last + 1)) % n
            last = i
            lat.append((t - (base + i * INTERVAL_NS)) / 1e6)
    ctr = _counters(h1)
    media = ctr.get("port_main", 0) - ctr.get("fec_ulp", 0)
    fec_pkts = ctr.get("fec_ulp", 0) + ctr.get("fec_st", 0)
    row.update(
        delivered=reader.frames,
        corrupt=reader.bad,
        extra_pct=100 * fec_pkts / media if media else None,
        media_packets=media,
        fec_packets=fec_pkts,
        latency_ms=lat,
        **_cpu_per_frame(samples),
    )
    return row


def run(quick: bool) -> dict[str, Any]:
    sys.path.insert(0, str(c.ROOT / "tools"))
    import netlab

    why = netlab.available()
    if why:
        raise c.Skip(f"netns lab unavailable: {why}")
    for el in ("rtpulpfecenc", "rtpst2022-1-fecenc", "rtpst2022-1-fecdec", "rtpulpfecdec"):
        if subprocess.run(["gst-inspect-1.0", el], capture_output=True, check=False).returncode:
            raise c.Skip(f"GStreamer element {el} missing (gstreamer1.0-plugins-good >= 1.22)")
    count = 120 if quick else 600
    rates = RANDOM_QUICK if quick else RANDOM
    wanted = os.environ.get("MCASTCAM_BENCH_LOSS_SYSTEMS", "")
    systems = tuple(s for s in SYSTEMS if s in wanted.split(",")) if wanted else SYSTEMS
    if not systems:
        raise c.Skip(f"--systems {wanted!r}: none of {', '.join(SYSTEMS)}")
    conditions: list[tuple[str, float, float | None]] = [("random", p, None) for p in rates]
    conditions.append(("burst", *BURST))
    out: dict[str, Any] = {
        "count": count,
        "fps": FPS,
        "systems": list(systems),
        "conditions": [list(x) for x in conditions],
        "trials": [],
    }
    paths = {clip: c.prepare(clip) for clip in CLIPS}
    out["frames_in_file"] = {k: len(c.split_frames(p.read_bytes())) for k, p in paths.items()}
    with tempfile.TemporaryDirectory(prefix="bench-loss-") as tmpd, netlab.Lab(hosts=2) as lab:
        for clip in CLIPS:
            for kind, loss, burst in conditions:
                for system in systems:
                    _set_loss(lab.host(1), loss, burst)
                    t0 = time.monotonic()
                    try:
                        if system.startswith("mcastcam"):
                            row = _mcastcam(lab, system, paths[clip], count, Path(tmpd))
                        else:
                            row = _gst(lab, system, paths[clip], count)
                    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                        row = {"error": repr(exc)}
                    ctr = _counters(lab.host(1))
                    lat = row.pop("latency_ms", [])
                    row.update(
                        clip=clip, kind=kind, loss=loss, burst=burst, system=system,
                        sent=count, wall_s=round(time.monotonic() - t0, 1),
                        fraction=(row.get("delivered") or 0) / count,
                        achieved_loss=ctr.get("lost", 0) / ctr["total"] if ctr.get("total")
                        else None,
                        mean_burst=ctr.get("lost", 0) / ctr["bursts"] if ctr.get("bursts")
                        else None,
                        lat_p50=_pct(lat, 0.5), lat_p99=_pct(lat, 0.99),
                        lat_p90=_pct(lat, 0.9), lat_p95=_pct(lat, 0.95),
                        lat_max=max(lat) if lat else None,
                        lat_over_frame=sum(x > 1000 / FPS for x in lat),
                        lat_n=len(lat), lat_mean=statistics.fmean(lat) if lat else None,
                        loadavg=list(os.getloadavg()),
                    )  # fmt: skip
                    c.log(
                        f"{clip} {kind} {loss:.1%} {system:16s}: "
                        f"{row.get('delivered')}/{count} corrupt {row.get('corrupt')} "
                        f"extra {row.get('extra_pct')} lat p50/p99 {row['lat_p50']}/"
                        f"{row['lat_p99']} cpu {row.get('send_cpu_ms')}/{row.get('recv_cpu_ms')}"
                        f" (achieved loss {row['achieved_loss']}) {row.get('error', '')}"
                    )
                    out["trials"].append(row)
                    c.save("loss-partial", out)
    previous = os.environ.get("MCASTCAM_BENCH_LOSS_PREVIOUS")
    if previous:
        earlier = json.loads(Path(previous).read_text())
        commit = str(earlier.get("mcastcam_commit", "?"))
        ran = {(t["clip"], t["kind"], t["loss"], t["system"]) for t in out["trials"]}
        copied = [
            {**t, "previous_commit": t.get("previous_commit", commit)}
            for t in earlier.get("trials", [])
            if (t["clip"], t["kind"], t["loss"], t["system"]) not in ran
        ]
        out["trials"] += copied
        if copied:
            out["previous"] = {
                "path": previous,
                "commit": commit,
                "systems": sorted({t["system"] for t in copied}),
            }
    return out
