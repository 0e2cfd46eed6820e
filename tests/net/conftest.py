"""tests/net: make the netlab fixtures available until tests/conftest.py registers the plugin."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PLUGIN = Path(__file__).resolve().parents[1] / "netlab_fixture.py"

_module = sys.modules.get("tests.netlab_fixture")
if _module is None:
    _spec = importlib.util.spec_from_file_location("tests.netlab_fixture", _PLUGIN)
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["tests.netlab_fixture"] = _module
    _spec.loader.exec_module(_module)

netlab = _module.netlab
netlab_available = _module.netlab_available
netlab_module = _module.netlab_module
