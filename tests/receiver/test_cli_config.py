"""mcastcam-recv builds a ReceiverConfig from its options and passes it on."""

from __future__ import annotations

import pytest

from mcastcam.errors import ConfigError
from mcastcam.protocol.config import DEFAULT_HTTP_PORT, DEFAULT_MAX_CLIENTS, ReceiverConfig
from mcastcam.receiver import cli


def test_parse_gives_a_receiver_config_with_the_defaults_once() -> None:
    cfg = cli.parse(["--interface", "lo", "--auth", "viewer:secret", "--no-reports"])
    assert isinstance(cfg, ReceiverConfig)
    assert cfg.http == ("0.0.0.0", DEFAULT_HTTP_PORT) and cfg.tcp is None
    assert cfg.max_clients == DEFAULT_MAX_CLIENTS and not cfg.reports
    assert cfg.auth == ("viewer", "secret") and "secret" not in repr(cfg)
    only_tcp = cli.parse(["--tcp", "127.0.0.1:9000", "--group", "239.255.7.7:5004"])
    assert only_tcp.http is None and only_tcp.tcp == ("127.0.0.1", 9000)
    assert only_tcp.group == ("239.255.7.7", 5004)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--broadcast", "--unicast-port", "9"], "exclude each other"),
        (["--port", "9"], "--port goes with --broadcast"),
        (["--max-clients", "0"], "--max-clients 0: must be at least 1"),
        (["--stream", "a", "--name", "b"], "--stream and --name both pick a stream"),
    ],
)
def test_bad_values_are_config_errors_naming_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cli.parse(argv)
    assert cli.main(argv) == 2


def test_receiver_config_checks_values_built_in_code_too() -> None:
    with pytest.raises(ConfigError, match=r"--liveness-timeout 0: must be above 0 seconds"):
        ReceiverConfig(liveness_timeout=0.0)
    with pytest.raises(ConfigError, match="--receiver-name"):
        ReceiverConfig(receiver_name="")
