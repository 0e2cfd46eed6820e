"""Config objects: defaults once, every bad value a ConfigError that names it."""

from __future__ import annotations

import dataclasses

import pytest

from mcastcam.errors import ConfigError
from mcastcam.protocol import config, discovery
from mcastcam.protocol.config import DiscoveryConfig, SenderConfig, SenderRunConfig, SourceConfig
from mcastcam.protocol.fragmenter import symbol_size_for_mtu
from mcastcam.protocol.repair import FecMode


def test_defaults_are_the_documented_ones() -> None:
    assert config.DEFAULT_GROUP == "239.255.0.1:8989"
    assert config.DEFAULT_SYMBOL_SIZE == symbol_size_for_mtu(1500) == 1424
    assert discovery.DEFAULT_PORT == config.DEFAULT_DISCOVERY_PORT == 8990
    assert discovery.DEFAULT_EXPIRY == 3 * config.DEFAULT_ANNOUNCE_INTERVAL
    run = SenderRunConfig()
    assert (run.ttl, run.spread, run.heartbeat_interval) == (1, 0.5, 1.0)
    assert run.discovery == DiscoveryConfig(8990, 5.0, 5.0, 5)
    cfg = SenderConfig(stream_id=1, name="cam")
    assert (cfg.symbol_size, cfg.fps, cfg.spread) == (1424, 30.0, 0.5)
    assert (cfg.fec, run.fec) == (FecMode("auto"), FecMode("auto"))


def test_config_is_frozen() -> None:
    cfg = SenderConfig(stream_id=1, name="cam")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: SenderConfig(stream_id=-1, name="c"), "--stream-id -1"),
        (lambda: SenderConfig(stream_id=1 << 32, name="c"), "must be a u32"),
        (lambda: SenderConfig(stream_id=1, name=""), "--name ''"),
        (lambda: SenderConfig(stream_id=1, name="x" * 65), "64 UTF-8 bytes"),
        (lambda: SenderConfig(stream_id=1, name="c", host="nope"), "--host 'nope'"),
        (lambda: SenderConfig(stream_id=1, name="c", symbol_size=100), "--symbol-size 100"),
        (lambda: SenderConfig(stream_id=1, name="c", run_nonce=0), "--run-nonce 0"),
        (lambda: SenderConfig(stream_id=1, name="c", nack_rate=11.0), "--nack-rate 11"),
        (lambda: SenderConfig(stream_id=1, name="c", nack_delay=0.0), "--nack-delay 0"),
        (lambda: SenderConfig(stream_id=1, name="c", repair_window=6.0), "--repair-window 6"),
        (lambda: SenderConfig(stream_id=1, name="c", repair_frames=0), "--repair-frames 0"),
        (
            lambda: SenderConfig(stream_id=1, name="c", heartbeat_interval=0.05),
            "--heartbeat-interval 0.05: must be 0 (none) or 0.1..60 s",
        ),
        (lambda: SenderConfig(stream_id=1, name="c", max_rate=0.0), "--max-rate 0"),
        (lambda: SenderConfig(stream_id=1, name="c", spread=1.5), "--spread 1.5"),
        (lambda: SenderConfig(stream_id=1, name="c", fps=float("nan")), "--fps nan"),
        (lambda: SenderConfig(stream_id=1, name="c", width=-2), "--size '-2x0'"),
        (
            lambda: SenderConfig(stream_id=1, name="c", heartbeat_interval=-1.0),
            "--heartbeat-interval -1",
        ),
        (lambda: DiscoveryConfig(port=0), "--discovery-port 0"),
        (lambda: DiscoveryConfig(announce_interval=float("inf")), "--announce-interval inf"),
        (lambda: DiscoveryConfig(answer_rate=0.0), "--answer-rate 0"),
        (lambda: DiscoveryConfig(answer_burst=0), "--answer-burst 0"),
        (lambda: SourceConfig(count=0), "--count 0"),
        (lambda: SenderRunConfig(ttl=256), "--ttl 256"),
        (lambda: SenderRunConfig(mtu=100), "--mtu 100"),
        (lambda: SenderRunConfig(spread=2.0), "--spread 2"),
        (lambda: SenderRunConfig(broadcast_port=70000), "--port 70000"),
        (lambda: SenderRunConfig(unicast=(("", 5000),)), "--unicast needs a host"),
        (
            lambda: SenderRunConfig(group=("239.255.0.1", 8989), broadcast_port=8989),
            "exclude each other",
        ),
    ],
)
def test_bad_values_name_themselves(build: object, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()  # type: ignore[operator]
    assert words in str(info.value)


def test_good_values_pass() -> None:
    run = SenderRunConfig(
        source=SourceConfig(spec="sample", count=3),
        name="kitchen",
        unicast=(("10.8.0.2", 8989), ("10.8.0.3", 8989)),
        ttl=0,
        mtu=1280,
        spread=0.0,
        heartbeat_interval=0.0,
        discovery=DiscoveryConfig(announce_interval=0.0),
    )
    assert run.unicast[1] == ("10.8.0.3", 8989) and run.source.count == 3


def test_query_config_checks_its_values() -> None:
    from mcastcam.protocol.config import QueryConfig

    assert QueryConfig().port == 8990
    for bad in ({"port": 0}, {"timeout": 0.0}, {"timeout": float("inf")}, {"name": "x" * 65}):
        with pytest.raises(ConfigError):
            QueryConfig(**bad)  # type: ignore[arg-type]
