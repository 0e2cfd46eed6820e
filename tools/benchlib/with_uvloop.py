"""Run ``python -m MODULE ARGS...`` on uvloop: ``with_uvloop.py MODULE ARGS...``.

``uvloop.install()`` sets the event loop policy, so the program's ``asyncio.run`` gets a
uvloop loop; the rest is ``runpy`` as ``python -m`` does it. For ``tools/bench`` with
``MCASTCAM_BENCH_UVLOOP=1`` (issue #13).
"""

from __future__ import annotations

import runpy
import sys

import uvloop

if __name__ == "__main__":
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    uvloop.install()
    runpy.run_module(module, run_name="__main__", alter_sys=True)
