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


@pytest.fixture
def netlab(netlab_available: None, netlab_module: ModuleType) -> Iterator[Callable[..., Any]]:
    """Factory ``netlab(hosts=3, mtu=1500, igmp_snooping=False) -> Lab``; all torn down after."""
    labs: list[Any] = []

    def make(hosts: int = 3, mtu: int = 1500, igmp_snooping: bool = False) -> Any:
        lab = netlab_module.Lab(hosts=hosts, mtu=mtu, igmp_snooping=igmp_snooping)
        labs.append(lab)
        lab.start()
        return lab

    try:
        yield make
    finally:
        for lab in reversed(labs):
            lab.close()
