"""Discovery shell and CLI in this namespace: only ``lo`` is used, so nothing is ever sent.

``lo`` has no broadcast address: the sender's service must switch itself off (the sender
keeps working on lo) and the querier must refuse with a clear ConfigError. Bad CLI values exit
2 with one line. Cross-host behaviour is in test_lab.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from mcastcam import net
from mcastcam.discovery import cli
from mcastcam.discovery.query import discover
from mcastcam.discovery.service import DiscoveryService
from mcastcam.errors import ConfigError
from mcastcam.protocol.codec import DiscoveryAnnounce
from mcastcam.protocol.config import DiscoveryConfig


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI installs a root handler on the captured stderr; take it away afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def announce() -> DiscoveryAnnounce:
    return DiscoveryAnnounce(stream_id=1, seq=0, name="cam0", host="0.0.0.0", transport=0,
                             group="239.255.9.9", port=9000, width=320, height=240,
                             fps_milli=30000)


def test_service_on_lo_is_disabled_with_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> DiscoveryService:
        svc = await DiscoveryService.start(
            net.resolve_interface("lo"), announce(), DiscoveryConfig(8990, 5.0)
        )
        svc.update(width=640)  # no-ops when disabled
        svc.close()
        svc.close()
        return svc

    with caplog.at_level(logging.INFO, logger="mcastcam.discovery.service"):
        svc = asyncio.run(run())
    assert not svc.enabled
    assert svc.responder is None
    assert svc.status_text() == "discovery off"
    assert [r.getMessage() for r in caplog.records] == [
        "discovery off: lo has no broadcast address"
    ]


def test_discover_on_lo_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="lo has no broadcast address"):
        asyncio.run(discover("lo"))


@pytest.mark.parametrize("kwargs,match", [
    ({"timeout": 0.0}, "timeout"),
    ({"timeout": float("nan")}, "timeout"),
    ({"port": 0}, "port"),
    ({"max_found": 0}, "max_found"),
    ({"name": "x" * 65}, "longer than 64"),
])
def test_discover_bad_values(kwargs: dict[str, object], match: str) -> None:
    iface = net.Interface("fake0", 1, "198.18.0.1", "255.255.255.0", "198.18.0.255", 1500)
    with pytest.raises(ConfigError, match=match):
        asyncio.run(discover(iface, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("argv,message", [
    (["--interface", "lo"], "interface lo has no broadcast address"),
    (["--interface", "nosuch0"], "no such interface nosuch0"),
    (["--timeout", "0"], "argument --timeout: bad value '0'"),
    (["--timeout", "soon"], "argument --timeout: bad value 'soon'"),
    (["--port", "0"], "argument --port: bad port '0'"),
    (["--port", "65536"], "argument --port: bad port '65536'"),
    (["--name", "n" * 65], "is longer than 64 bytes"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_cli_bad_values_exit_2_with_one_line(argv: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mcastcam-discover: error: ")
    assert message in lines[0]


def test_cli_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out, _ = capsys.readouterr()
    assert "--interface" in out and "--json" in out and "--timeout" in out
