"""``mcastcam``: one command with subcommands (``python -m mcastcam`` works too).

``mcastcam send|recv|discover|doctor|keygen ARGS...`` runs the subcommand's ``main(ARGS)``; the
``mcastcam-send``, ``mcastcam-recv``, ``mcastcam-discover`` and ``mcastcam-keygen`` scripts
stay as aliases.
Exit codes are the subcommand's; an unknown subcommand is one line and exit 2.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import cast

from mcastcam import __version__
from mcastcam.cli_util import EXIT_OK, EXIT_USAGE

#: subcommand -> (module whose ``main(argv) -> int`` runs it, or ``module:function``, one
#: line of help).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "send": ("mcastcam.sender.cli", "capture or play MJPEG and send it to a multicast group"),
    "recv": ("mcastcam.receiver.cli", "join a group, reassemble frames, serve HTTP/TCP"),
    "discover": ("mcastcam.discovery.cli", "list the senders on a LAN (broadcast discovery)"),
    "doctor": ("mcastcam.doctor", "check why multicast does not arrive, and say the fix"),
    "view": ("mcastcam.client_cli:view_main", "read a receiver's stream, print fps and latency"),
    "dump": ("mcastcam.client_cli:dump_main", "save N frames of a receiver's stream as JPEGs"),
    "relay": ("mcastcam.relay.cli", "carry a stream over unicast UDP to a LAN without multicast"),
    "keygen": ("mcastcam.keys", "write a new shared key file (mode 0600) for --key-file"),
}


def usage() -> str:
    """The top-level help text: synopsis and one line per subcommand."""
    width = max(map(len, SUBCOMMANDS))
    lines = [
        "usage: mcastcam COMMAND [ARGS...]",
        "",
        "MJPEG camera frames over UDP multicast on a LAN.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()),
        "",
        "`mcastcam COMMAND --help` explains a command's options.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its subcommand with the rest; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(usage(), file=sys.stderr)
        return EXIT_USAGE
    if args[0] in ("-h", "--help", "help"):
        print(usage())
        return EXIT_OK
    if args[0] == "--version":
        print(f"mcastcam {__version__}")
        return EXIT_OK
    entry = SUBCOMMANDS.get(args[0])
    if entry is None:
        print(f"mcastcam: error: unknown command {args[0]!r} (choose from "
              f"{', '.join(SUBCOMMANDS)}; see mcastcam --help)", file=sys.stderr)
        return EXIT_USAGE
    module_name, _, function = entry[0].partition(":")
    module = importlib.import_module(module_name)
    run = cast(Callable[[list[str]], int], getattr(module, function or "main"))
    return run(args[1:])


if __name__ == "__main__":
    sys.exit(main())
