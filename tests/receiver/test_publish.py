"""``mcastcam-recv --publish``: ffmpeg pushes H.264 to a real nginx-rtmp on loopback.

The sender and the receiver are the real programs (subprocesses, multicast pinned to ``lo``
with TTL 0); nginx with Debian's ``libnginx-mod-rtmp`` is started by the test with a config
written here (RTMP and an HTTP server for the HLS folder, both on 127.0.0.1 ports); ffprobe
reads the stream back over RTMP and over HLS. Meanwhile a curl client of the receiver's own
``/stream`` must keep getting frames: while ffmpeg runs, when it is killed (and restarted),
when it is missing from ``PATH``, and when the RTMP server is down.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcastcam.errors import ConfigError
from mcastcam.receiver.publish import check_publish_url, ffmpeg_command, redact_url
from tests.conftest import naive_split
from tests.lab.labkit import parse_multipart, stop, wait_until

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "mcastcam" / "data" / "sample_webcam_640x480.mjpeg"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
FPS = 15


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- pure parts --------------------------------------------------------------------------


def test_publish_url_is_checked_and_shown_without_credentials() -> None:
    url = "rtmp://user:secret@media.example.org:1935/live/cam1"
    assert check_publish_url(url) == url
    assert redact_url(url) == "rtmp://media.example.org:1935/live/cam1"
    assert redact_url("rtmp://h/live/x") == "rtmp://h/live/x"
    for bad in ("http://h/live/x", "rtmp:///live/x", "rtmp://h/live", "h/live/x"):
        with pytest.raises(ConfigError, match="--publish"):
            check_publish_url(bad)
    with pytest.raises(ConfigError) as err:
        check_publish_url("srt://u:secret@h/live/x")
    assert "secret" not in str(err.value)


def test_ffmpeg_command_is_low_latency_h264_with_a_two_second_gop() -> None:
    cmd = ffmpeg_command("ffmpeg", "rtmp://h/live/x", 12.5)
    joined = " ".join(cmd)
    assert "-f mjpeg -i -" in joined
    assert "-c:v libx264 -preset veryfast -tune zerolatency" in joined
    assert cmd[cmd.index("-g") + 1] == "25"
    assert cmd[cmd.index("-r") + 1] == "12.5"
    assert cmd[cmd.index("-pix_fmt") + 1] == "yuv420p"
    assert cmd[-3:] == ["-f", "flv", "rtmp://h/live/x"]


# -- real programs -----------------------------------------------------------------------


@dataclass
class Nginx:
    rtmp_port: int
    http_port: int
    hls: Path
    proc: subprocess.Popen[str]

    def rtmp_url(self, name: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{name}"


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    """nginx with the RTMP module on 127.0.0.1: RTMP ``live`` application with HLS, and an
    HTTP server for the HLS folder (config written here, stopped after the test)."""
    if shutil.which("nginx") is None or not RTMP_MODULE.exists():
        pytest.skip("nginx / libnginx-mod-rtmp not installed (tools/test installs them)")
    root = tmp_path / "nginx"
    hls = root / "hls"
    (root / "tmp").mkdir(parents=True)
    hls.mkdir()
    rtmp_port, http_port = free_port(), free_port()
    temp = root / "tmp"
    conf = root / "nginx.conf"
    conf.write_text(f"""
load_module {RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
  server {{
    listen 127.0.0.1:{rtmp_port};
    application live {{
      live on;
      hls on;
      hls_path {hls};
      hls_fragment 1s;
      hls_playlist_length 4s;
    }}
  }}
}}
http {{
  access_log off;
  client_body_temp_path {temp}; proxy_temp_path {temp}; fastcgi_temp_path {temp};
  uwsgi_temp_path {temp}; scgi_temp_path {temp};
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
  server {{ listen 127.0.0.1:{http_port}; root {hls}; }}
}}
""")
    proc = subprocess.Popen(
        ["nginx", "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, text=True,
    )  # fmt: skip

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited {proc.returncode}: "
                                 f"{(root / 'error.log').read_text()[-2000:]}")  # fmt: skip
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", rtmp_port)) == 0

    try:
        wait_until(listening, 10.0, "nginx to listen")
        yield Nginx(rtmp_port, http_port, hls, proc)
    finally:
        stop(proc)


@dataclass
class Run:
    """A sender and a receiver (``--publish``) on loopback, and a curl on ``/stream``."""

    sender: subprocess.Popen[str]
    receiver: subprocess.Popen[str]
    client: subprocess.Popen[str] | None
    http_port: int
    log: Path
    body: Path

    def status(self) -> dict[str, Any]:
        if self.receiver.poll() is not None:
            raise AssertionError(f"receiver exited: {self.log.read_text()[-3000:]}")
        url = f"http://127.0.0.1:{self.http_port}/status"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def try_status(self) -> dict[str, Any] | None:
        try:
            return self.status()
        except OSError:
            return None

    def stream_frames(self) -> int:
        """Frames the receiver wrote to the curl ``/stream`` client so far."""
        st = self.status()
        return sum(c["frames_sent"] for c in st["clients"] if c["kind"] == "http")

    def snapshot_ok(self) -> bool:
        url = f"http://127.0.0.1:{self.http_port}/snapshot"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bool(resp.status == 200 and resp.read(2) == b"\xff\xd8")

    def keeps_streaming(self, seconds: float) -> None:
        """The local ``/stream`` client gets about ``FPS`` frames/s for ``seconds``."""
        before = self.stream_frames()
        time.sleep(seconds)
        got = self.stream_frames() - before
        assert got >= FPS * seconds * 0.6, f"/stream got {got} frames in {seconds} s"


def spawn(cmd: list[str], stderr: Any, env: dict[str, str] | None = None
          ) -> subprocess.Popen[str]:  # fmt: skip
    """Start ``cmd`` in the repository, in its own session (stopped by :func:`stop`)."""
    return subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=stderr,
                            env=env, start_new_session=True, text=True)  # fmt: skip


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def make(url: str, env: dict[str, str] | None = None) -> Run:
        group = f"239.255.{random.randint(2, 254)}.{random.randint(1, 254)}:" \
                f"{free_port(socket.SOCK_DGRAM)}"  # fmt: skip
        http_port = free_port()
        log = tmp_path / f"recv-{len(runs)}.log"
        body = tmp_path / f"stream-{len(runs)}.multipart"
        with log.open("w") as log_file:
            receiver = spawn(
                [sys.executable, "-m", "mcastcam.receiver.cli", "--interface", "lo",
                 "--group", group, "--http", f"127.0.0.1:{http_port}", "--publish", url],
                log_file, env,
            )  # fmt: skip
        sender = spawn(
            [sys.executable, "-m", "mcastcam.sender.cli", "--source", "sample", "--interface",
             "lo", "--ttl", "0", "--group", group, "--fps", str(FPS), "--quiet"],
            subprocess.DEVNULL,
        )  # fmt: skip
        run = Run(sender, receiver, None, http_port, log, body)
        runs.append(run)
        wait_until(run.try_status, 15.0, "the receiver to answer /status")
        run.client = spawn(
            ["curl", "-s", "-N", "--max-time", "60", "-o", str(body),
             f"http://127.0.0.1:{http_port}/stream"],
            subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: run.stream_frames() > 0, 15.0, "frames on the local /stream")
        return run

    try:
        yield make
    finally:
        for run in runs:
            for proc in (run.client, run.sender, run.receiver):
                if proc is not None:
                    stop(proc)


def sample_frames() -> set[bytes]:
    return set(naive_split(SAMPLE.read_bytes()))


def check_local_client(run: Run) -> None:
    """Stop the receiver; what its ``/stream`` client got is whole frames of the sample."""
    stop(run.receiver)
    assert run.receiver.returncode == 0, run.log.read_text()[-3000:]
    assert run.client is not None
    stop(run.client)
    frames = parse_multipart(run.body.read_bytes())
    source = sample_frames()
    assert len(frames) >= FPS
    assert all(f in source for f in frames), "a /stream frame is not a frame of the sample"


def ffprobe(url: str) -> dict[str, Any]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-rw_timeout", "5000000", "-analyzeduration", "1000000",
         "-probesize", "500000", "-select_streams", "v:0",
         "-show_entries", "stream=codec_name,width,height,pix_fmt", "-of", "json", url],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"ffprobe {url}: {done.stderr}"
    (stream,) = json.loads(done.stdout)["streams"]
    return stream  # type: ignore[no-any-return]


@pytest.mark.multicast
@pytest.mark.clients
@pytest.mark.slow
def test_publish_to_nginx_rtmp_read_back_over_rtmp_and_hls_and_survive_a_killed_ffmpeg(
    nginx: Nginx, start: Callable[..., Run]
) -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg not installed")
    run = start(nginx.rtmp_url("cam"))
    st = wait_until(lambda: (p := run.status()["publish"])["state"] == "running"
                    and p["frames_sent"] >= FPS and p, 15.0, "ffmpeg to take frames")  # fmt: skip
    assert st["url"] == nginx.rtmp_url("cam") and st["restarts"] == 0
    publishers = [c for c in run.status()["clients"] if c["kind"] == "publish"]
    assert len(publishers) == 1 and publishers[0]["address"] == f"ffmpeg[{st['pid']}]"

    expected = {"codec_name": "h264", "width": 640, "height": 480}
    got = ffprobe(nginx.rtmp_url("cam"))
    assert {k: got[k] for k in expected} == expected and got["pix_fmt"] == "yuv420p"
    playlist = nginx.hls / "cam.m3u8"
    wait_until(lambda: playlist.exists() and b".ts" in playlist.read_bytes(), 15.0,
               "an HLS playlist with a segment")  # fmt: skip
    got = ffprobe(f"http://127.0.0.1:{nginx.http_port}/cam.m3u8")
    assert {k: got[k] for k in expected} == expected
    run.keeps_streaming(1.0)

    # ffmpeg killed: the local stream goes on, ffmpeg comes back after the 1 s back-off.
    old_pid = st["pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: run.status()["publish"]["restarts"] == 1, 5.0, "the exit to be seen")
    run.keeps_streaming(0.5)
    st = wait_until(lambda: (p := run.status()["publish"])["state"] == "running"
                    and p["pid"] != old_pid and p["frames_sent"] > 0 and p, 10.0,
                    "ffmpeg to be restarted")  # fmt: skip
    assert st["last_exit"] == -signal.SIGKILL and st["restarts"] == 1
    assert ffprobe(nginx.rtmp_url("cam"))["codec_name"] == "h264"
    log = run.log.read_text()
    assert log.count("publishing to rtmp://") >= 3  # start, exit warning, restart
    assert "restart #1 in 1 s" in log
    check_local_client(run)


@pytest.mark.multicast
@pytest.mark.clients
def test_missing_ffmpeg_is_one_clear_message_and_the_receiver_keeps_serving(
    start: Callable[..., Run], tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"  # an empty PATH: no ffmpeg (python is started by full path)
    bin_dir.mkdir()
    env = dict(os.environ, PATH=str(bin_dir))
    run = start("rtmp://127.0.0.1:9/live/cam", env=env)
    st = wait_until(lambda: (p := run.status()["publish"])["state"] == "missing" and p, 10.0,
                    "the publisher to find no ffmpeg")  # fmt: skip
    assert st["last_error"] == "ffmpeg not found on PATH" and st["restarts"] == 0
    run.keeps_streaming(1.0)
    assert run.snapshot_ok()
    assert run.log.read_text().count("ffmpeg not found on PATH") == 1
    check_local_client(run)


@pytest.mark.multicast
@pytest.mark.clients
@pytest.mark.slow
def test_rtmp_server_down_is_retried_with_back_off_and_the_local_stream_is_fine(
    start: Callable[..., Run],
) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    down = free_port()  # nothing listens there
    url = f"rtmp://user:secret@127.0.0.1:{down}/live/cam"
    run = start(url)
    t0 = time.monotonic()
    st = wait_until(lambda: (p := run.status()["publish"])["restarts"] >= 2 and p, 15.0,
                    "two failed attempts")  # fmt: skip
    took = time.monotonic() - t0
    assert took >= 1.0, "the second attempt came before the 1 s back-off"
    assert st["url"] == f"rtmp://127.0.0.1:{down}/live/cam"
    assert "Connection refused" in st["last_error"] and "secret" not in st["last_error"]
    assert st["retry_in"] == 2.0 or st["state"] != "backoff"
    run.keeps_streaming(1.0)
    assert run.snapshot_ok()
    log = run.log.read_text()
    assert "secret" not in log
    # one warning line (the next ones wait for the log interval), saying why
    warnings = [line for line in log.splitlines() if "publishing to rtmp://" in line
                and "ffmpeg exited" in line]  # fmt: skip
    assert len(warnings) == 1, warnings
    assert "Connection refused" in warnings[0] and "restart #1 in 1 s" in warnings[0]
    check_local_client(run)
