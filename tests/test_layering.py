"""The fence of DESIGN.md §1: protocol stands alone; sender and receiver do not meet."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mcastcam"


def imports_of(folder: str) -> set[str]:
    names: set[str] = set()
    for path in (PACKAGE / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
    return names


def test_protocol_imports_neither_sender_nor_receiver() -> None:
    bad = {
        n for n in imports_of("protocol") if n.startswith(("mcastcam.sender", "mcastcam.receiver"))
    }
    assert not bad


def test_sender_and_receiver_do_not_import_each_other() -> None:
    assert not {n for n in imports_of("sender") if n.startswith("mcastcam.receiver")}
    assert not {n for n in imports_of("receiver") if n.startswith("mcastcam.sender")}
