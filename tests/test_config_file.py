"""--config FILE (TOML, the long options as keys) for send, recv and discover (issue #14 item 6)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mcastcam.discovery import cli as discover_cli
from mcastcam.errors import ConfigError
from mcastcam.receiver import cli as recv_cli
from mcastcam.sender import cli as send_cli

SYSTEMD = Path(__file__).resolve().parents[1] / "tools" / "systemd"

SEND_TOML = """\
source = "testpattern"
size = "1280x720"
fps = 25
group = "239.255.0.1:8989"
interface = "lo"
ttl = 0
fec = "auto"
max-rate = "20M"
spread = 0.25
name = "kitchen"
control = ["brightness=140", "contrast=20"]
no_gso = true
no_multicast_loop = true
heartbeat_interval = 0.5
loop = false
"""
SEND_FLAGS = [
    "--source", "testpattern", "--size", "1280x720", "--fps", "25",
    "--group", "239.255.0.1:8989", "--interface", "lo", "--ttl", "0", "--fec", "auto",
    "--max-rate", "20M", "--spread", "0.25", "--name", "kitchen",
    "--control", "brightness=140", "--control", "contrast=20", "--no-gso",
    "--no-multicast-loop", "--heartbeat-interval", "0.5",
]  # fmt: skip

RECV_TOML = """\
group = "239.255.10.1:5004"
interface = "lo"
http = "127.0.0.1:8080"
tcp = "9000"
stream = "kitchen"
rcvbuf = 8388608
max_clients = 50
auth = "viewer:secret"
record = "/srv/cam"
record_segment = "10m"
record_keep = "50G"
no_nack = true
frame_timeout = 0.5
"""
RECV_FLAGS = [
    "--group", "239.255.10.1:5004", "--interface", "lo", "--http", "127.0.0.1:8080",
    "--tcp", "9000", "--stream", "kitchen", "--rcvbuf", "8388608", "--max-clients", "50",
    "--auth", "viewer:secret", "--record", "/srv/cam", "--record-segment", "10m",
    "--record-keep", "50G", "--no-nack", "--frame-timeout", "0.5",
]  # fmt: skip


def write(tmp_path: Path, text: str, name: str = "c.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_send_toml_and_flags_give_the_same_config(tmp_path: Path) -> None:
    from_file = send_cli.parse(["--config", write(tmp_path, SEND_TOML)])
    from_flags = send_cli.parse(SEND_FLAGS)
    assert from_file == from_flags
    assert from_file.name == "kitchen" and not from_file.multicast_loop and not from_file.gso
    assert dict(from_file.source.controls) == {"brightness": "140", "contrast": "20"}
    assert from_file != send_cli.parse(SEND_FLAGS[:-2])  # the comparison can tell them apart


def test_recv_toml_and_flags_give_the_same_config(tmp_path: Path) -> None:
    from_file = recv_cli.parse(["--config", write(tmp_path, RECV_TOML)])
    assert from_file == recv_cli.parse(RECV_FLAGS)
    assert from_file.group == ("239.255.10.1", 5004) and from_file.tcp == ("0.0.0.0", 9000)
    assert from_file.record_limits.segment_seconds == 600 and not from_file.nack


def test_discover_toml(tmp_path: Path) -> None:
    path = write(tmp_path, 'interface = "lo"\ntimeout = 0.3\nname = "kitchen"\njson = true\n')
    assert discover_cli._parse(["--config", path]) == discover_cli._parse(
        ["--interface", "lo", "--timeout", "0.3", "--name", "kitchen", "--json"]
    )


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, SEND_TOML)
    cfg = send_cli.parse(["--config", path, "--name", "garage", "--control", "hue=3"])
    assert cfg.name == "garage"
    assert dict(cfg.source.controls) == {"hue": "3"}  # a repeatable option: the flags replace
    cfg = send_cli.parse(["--fps", "10", f"--config={path}"])  # order does not matter
    assert cfg.source.fps == 10
    recv = recv_cli.parse(["--config", write(tmp_path, RECV_TOML), "--max-clients", "7"])
    assert recv.max_clients == 7 and recv.stream == "kitchen"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('grup = "x"\nttll = 3\n', r"unknown key\(s\) 'grup', 'ttll': the keys are the long "
         r"options of mcastcam-send --help without '--'"),
        ('config = "other.toml"\n', r"unknown key\(s\) 'config'"),
        ("no_gso = 1\n", "no_gso is a flag: write no_gso = true or false"),
        ('name = ["a", "b"]\n', "name takes one value, not a list"),
        ("fps = true\n", "expected a string or a number"),
        ("group = \n", "not valid TOML"),
        ('fec = "lots"\n', "fec"),
    ],
)  # fmt: skip
def test_bad_files_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, message: str
) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError, match=message):
        send_cli.parse(["--config", path])
    assert send_cli.main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mcastcam-send: error: "), err


def test_missing_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert recv_cli.main(["--config", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert err == f"mcastcam-recv: error: --config {tmp_path / 'nope.toml'}: No such file or " \
        "directory\n"  # fmt: skip


def test_no_loop_is_deprecated_but_still_works(capsys: pytest.CaptureFixture[str]) -> None:
    assert send_cli.parse(["--no-multicast-loop"]).multicast_loop is False
    assert capsys.readouterr().err == ""
    assert send_cli.parse(["--no-loop"]).multicast_loop is False
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--no-loop is deprecated" in err
    assert "--no-multicast-loop" in err
    assert send_cli.parse([]).multicast_loop is True
    assert send_cli.parse(["--loop"]).source.loop and send_cli.parse(["--loop"]).multicast_loop


@pytest.mark.parametrize(("unit", "toml", "parse"), [
    ("mcastcam-send.service", "send.toml", send_cli.parse),
    ("mcastcam-recv.service", "recv.toml", recv_cli.parse),
])  # fmt: skip
def test_systemd_units_use_their_example_config(unit: str, toml: str, parse: object) -> None:
    text = (SYSTEMD / unit).read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", text, re.M)
    assert exec_start is not None
    assert exec_start.group(1).split()[1:] == ["--config", f"/etc/mcastcam/{toml}"]
    assert (SYSTEMD / toml).is_file()
    cfg = parse(["--config", str(SYSTEMD / toml)])  # type: ignore[operator]
    assert cfg.interface == "eth0"
