"""Headless Chromium in a network namespace of its own, reaching one loopback port.

Chromium probes the network on its own (an IPv6 reachability check towards a public
address, DNS look-ups), which makes the kernel send neighbour solicitations out of the
uplink. So the browser runs in a fresh network namespace (``unshare --net``) whose only
interface is its own ``lo``: nothing it does can leave the machine. Two ``socat`` relays
carry its connections to the server under test through a Unix socket (a file path crosses
network namespaces): browser -> 127.0.0.1:PORT in its namespace -> Unix socket ->
127.0.0.1:PORT in ours.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def need_isolated_browser() -> None:
    """Skip the test unless chromium, socat and ``unshare --net`` (root) are available."""
    for tool, package in (("chromium", "chromium"), ("socat", "socat"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing (Debian package {package})")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(
            f"cannot make a network namespace for the browser: {probe.stderr.decode().strip()}"
        )


async def chromium_screenshot(
    port: int,
    path: str,
    png: Path,
    workdir: Path,
    *,
    size: tuple[int, int] = (800, 600),
    budget_ms: int = 3000,
    limit: float = 90,
) -> tuple[int, bytes]:
    """Load ``http://127.0.0.1:PORT{path}`` in isolated headless Chromium; screenshot to ``png``.

    Returns Chromium's exit code and its stderr.
    """
    code, _, err = await chromium_run(
        port, path, workdir, [f"--screenshot={png}"], size=size, budget_ms=budget_ms, limit=limit
    )
    return code, err


async def chromium_dump_dom(
    port: int,
    path: str,
    workdir: Path,
    *,
    size: tuple[int, int] = (800, 600),
    budget_ms: int = 3000,
    limit: float = 90,
) -> tuple[int, str, bytes]:
    """Load the page like :func:`chromium_screenshot`; return exit code, the DOM, stderr."""
    code, out, err = await chromium_run(
        port, path, workdir, ["--dump-dom"], size=size, budget_ms=budget_ms, limit=limit
    )
    return code, out.decode("utf-8", "replace"), err


async def chromium_run(
    port: int,
    path: str,
    workdir: Path,
    args: list[str],
    *,
    size: tuple[int, int] = (800, 600),
    budget_ms: int = 3000,
    limit: float = 90,
) -> tuple[int, bytes, bytes]:
    """Run isolated headless Chromium with ``args`` on the page; exit code, stdout, stderr."""
    sock = workdir / "browser-relay.sock"
    outer = await asyncio.create_subprocess_exec(
        "socat", f"UNIX-LISTEN:{sock},fork", f"TCP:127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        browser = [
            "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={workdir / 'profile'}",
            *args, f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={budget_ms}", f"http://127.0.0.1:{port}{path}",
        ]  # fmt: skip
        inner = (
            "ip link set lo up || exit 97\n"
            f"socat TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:{sock} &\n"
            "relay=$!\n"
            "for i in $(seq 50); do\n"
            f"  socat -u OPEN:/dev/null TCP:127.0.0.1:{port} 2>/dev/null && break; sleep 0.05\n"
            "done\n"
            f"{shlex.join(browser)}\n"
            "rc=$?\nkill $relay\nwait $relay 2>/dev/null\nexit $rc\n"
        )
        proc = await asyncio.create_subprocess_exec(
            "unshare", "--net", "--", "sh", "-c", inner,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return proc.returncode, out, err
    finally:
        outer.kill()
        await outer.wait()
