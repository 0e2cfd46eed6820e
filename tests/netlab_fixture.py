"""Pytest plugin: the ``netlab`` fixture, a bridged LAN of network namespaces (tools/netlab.py).

Register it once in tests/conftest.py (``pytest_plugins = ["tests.netlab_fixture"]`` with
``pythonpath = ["."]`` in the pytest settings). Use::

    @pytest.mark.netns
    def test_x(netlab):
        lab = netlab(hosts=3)            # built now, torn down after the test
        lab.host(1).python("print(1)")   # runs inside namespace h1

The fixture skips the test, with the reason, when the process is not root, ``ip``/``nft`` are
missing, or ``ip netns add`` fails. Traffic stays inside the namespaces: the bridge has no
uplink.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

NETLAB_PATH = Path(__file__).resolve().parents[1] / "tools" / "netlab.py"
_MODULE_NAME = "mcastcam_tools_netlab"


def load_netlab() -> ModuleType:
    """Import tools/netlab.py (``tools`` is not a package) once, by path."""
    module = sys.modules.get(_MODULE_NAME)
    if module is None:
        spec = importlib.util.spec_from_file_location(_MODULE_NAME, NETLAB_PATH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE_NAME] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def netlab_module() -> ModuleType:
    """The tools/netlab.py module (``Lab``, ``LabError``, ``sweep_stale``, ...)."""
    return load_netlab()


@pytest.fixture(scope="session")
def netlab_available(netlab_module: ModuleType) -> None:
    """Skip when namespaces cannot be built here; sweep labs left by dead test runs."""
    reason = netlab_module.available()
    if reason:
        pytest.skip(f"netns lab unavailable: {reason}")
    netlab_module.sweep_stale()


def _factory(new_lab: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Yield ``make(**kw)``: builds ``new_lab(**kw)``, starts it, closes them all after."""
    labs: list[Any] = []

    def make(**kwargs: Any) -> Any:
        lab = new_lab(**kwargs)
        labs.append(lab)
        lab.start()
        return lab

    try:
        yield make
    finally:
        for lab in reversed(labs):
            lab.close()


@pytest.fixture
def netlab(netlab_available: None, netlab_module: ModuleType) -> Iterator[Callable[..., Any]]:
    """Factory ``netlab(hosts=3, mtu=1500, igmp_snooping=False, nic_gso=False) -> Lab``; all
    torn down after."""
    yield from _factory(netlab_module.Lab)


@pytest.fixture
def routed_netlab(
    netlab_available: None, netlab_module: ModuleType
) -> Iterator[Callable[..., Any]]:
    """Factory ``routed_netlab(hosts_a=1, hosts_b=2, mtu=1500, mroutes=...) -> RoutedLab``:
    two LANs and a multicast router (``smcrouted``); skips when smcroute is not installed."""
    if shutil.which("smcrouted") is None:
        pytest.skip("smcroute is not installed (tools/test installs it)")
    yield from _factory(netlab_module.RoutedLab)
