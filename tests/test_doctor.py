"""``mcastcam doctor`` and the ``mcastcam`` command on ``lo`` (real sockets, root namespace).

Network safety: every run names ``--interface lo``; the self-test sends with TTL 0 and
``IP_MULTICAST_IF`` 127.0.0.1, and discovery is skipped on ``lo`` (no broadcast address), so
nothing is sent to any other interface. The lab tests (tests/lab/test_doctor.py) cover a real
LAN interface with injected faults.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mcastcam import __main__ as cli
from mcastcam import doctor, net
from mcastcam.errors import NetworkSetupError

pytestmark = pytest.mark.multicast

REPO = Path(__file__).resolve().parents[1]
# Distinct per test process, so parallel runs do not hear each other.
GROUP = socket.inet_ntoa(struct.pack("!I", 239 << 24 | 255 << 16 | (os.getpid() % 200 + 20) << 8
                                     | 77))
LO = ["--interface", "lo", "--group", f"{GROUP}:8989"]


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """``doctor.main([... --json])`` in-process; ``(exit code, parsed stdout)``."""
    code = doctor.main([*argv, "--json"])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return code, report


def test_self_test_loops_datagrams_back_on_lo() -> None:
    lo = net.resolve_interface("lo")
    port, sent, received, elapsed = asyncio.run(doctor.self_test(lo, GROUP))
    assert sent == doctor.SELF_TEST_DATAGRAMS
    assert received == sent
    assert 0 < port < 65536
    assert elapsed < doctor.SELF_TEST_TIMEOUT


def test_self_test_on_an_interface_without_ipv4_raises() -> None:
    fake = net.Interface("nosuch0", 999_999, "127.0.0.1", "255.0.0.0", None, 1500)
    with pytest.raises(NetworkSetupError):
        asyncio.run(doctor.self_test(fake, GROUP, count=1, timeout=0.2))


def test_json_report_on_lo(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, *LO)
    assert set(report) == {"interface", "group", "status", "exit", "checks"}
    assert report["interface"] == "lo" and report["group"] == f"{GROUP}:8989"
    names = [c["name"] for c in report["checks"]]
    assert names == ["interface", "multicast_flag", "address", "route", "rp_filter", "igmp",
                     "rmem_max", "wmem_max", "firewall", "self_test", "discovery"]
    for c in report["checks"]:
        assert set(c) == {"name", "status", "finding", "fix", "data"}
        assert c["status"] in ("ok", "warn", "fail") and c["finding"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["interface"]["status"] == "ok"
    assert checks["self_test"]["status"] == "ok"
    assert checks["self_test"]["data"]["received"] == doctor.SELF_TEST_DATAGRAMS
    assert checks["discovery"]["finding"].startswith("skipped")
    assert checks["igmp"]["finding"] == "lo is loopback: no IGMP on it"
    rmem = int(Path("/proc/sys/net/core/rmem_max").read_text())
    assert checks["rmem_max"]["data"]["max"] == rmem
    assert checks["rmem_max"]["status"] == ("ok" if rmem >= 4 << 20 else "warn")
    statuses = {c["status"] for c in report["checks"]}
    assert code == report["exit"] == (1 if "fail" in statuses else 0)
    assert report["status"] == max(statuses, key=["ok", "warn", "fail"].index)


def test_strict_counts_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, *LO, "--strict", "--rcvbuf", str(1 << 30))
    rmem = {c["name"]: c for c in report["checks"]}["rmem_max"]
    assert rmem["status"] == "warn"  # nobody's rmem_max is 1 GiB
    assert code == 1
    failed = any(c["status"] == "fail" for c in report["checks"])
    assert doctor.main([*LO, "--rcvbuf", str(1 << 30)]) == int(failed)  # warnings allowed
    text = capsys.readouterr().out
    assert "[warn] rmem_max:" in text and "fix: sysctl -w net.core.rmem_max=" in text


def test_key_file_permissions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "stream.key"
    key.write_bytes(os.urandom(33))
    key.chmod(0o644)
    code, report = run_json(capsys, *LO, "--key-file", str(key))
    check = {c["name"]: c for c in report["checks"]}["key_file"]
    assert check["status"] == "fail" and "0644" in check["finding"]
    assert code == 1
    key.chmod(0o600)
    _, report = run_json(capsys, *LO, "--key-file", str(key))
    assert {c["name"]: c for c in report["checks"]}["key_file"]["status"] == "ok"
    _, report = run_json(capsys, *LO, "--key-file", str(tmp_path / "missing"))
    assert {c["name"]: c for c in report["checks"]}["key_file"]["status"] == "fail"


def test_unknown_interface_fails_and_names_the_real_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = run_json(capsys, "--interface", "nosuch0", "--group", f"{GROUP}:8989")
    first = report["checks"][0]
    assert code == 1
    assert first["name"] == "interface" and first["status"] == "fail"
    assert "no interface nosuch0" in first["finding"] and "lo" in first["finding"]
    assert "self_test" not in {c["name"] for c in report["checks"]}


@pytest.mark.parametrize("argv", [
    ["--interface", "lo", "--group", "10.1.2.3:5000"],
    ["--interface", "lo", "--group", "239.255.0.1:99999"],
    ["--interface", "lo", "--rcvbuf", "-5"],
    ["--interface", "lo", "--rcvbuf", str(1 << 40)],
    ["--interface", "lo", "--igmp-wait", "soon"],
    ["--frobnicate"],
])  # fmt: skip
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert doctor.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mcastcam doctor: error: ") and err.count("\n") == 1


def test_one_command_dispatches(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("send", "recv", "discover", "doctor"):
        assert any(line.split()[:1] == [name] and len(line.split()) > 2
                   for line in out.splitlines()), name
    assert cli.main(["frob"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'frob'" in err
    assert cli.main([]) == 2
    assert cli.main(["discover", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: mcastcam-discover")
    assert cli.main(["doctor", *LO, "--json"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["interface"] == "lo"


def test_python_dash_m_mcastcam_doctor() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcastcam", "doctor", *LO, "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == report["exit"]
    assert {c["name"]: c for c in report["checks"]}["self_test"]["status"] == "ok"
    bad = subprocess.run([sys.executable, "-m", "mcastcam", "nope"], cwd=REPO,
                         capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stdout == ""
