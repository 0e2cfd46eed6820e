#!/usr/bin/env python3
"""Bounded user-space UDP relay that drops datagrams in bursts, for the namespace lab.

nftables only drops datagrams independently (``numgen random mod 10000 < N drop``); real links
(Wi-Fi above all) lose them in bursts. This relay sits between a sender and a receiver:
it receives every datagram on ``--listen`` (a unicast address, or a multicast group it joins
on ``--listen-interface``), asks a seeded loss model (``tools/lossmodel.py``) whether to drop
it, and forwards the rest, one by one and in order, to ``--to`` (unicast, or a multicast group
sent out of ``--interface`` with ``IP_MULTICAST_IF`` and ``--ttl``). It can also duplicate
(``--dup``) and reorder (``--reorder``: hold a datagram back until the next one is sent, or
for at most 20 ms) what it forwards. Only the forward direction is relayed: datagrams the
receiver sends back (reports, NACKs) go to the relay's address and are not carried.

Loss model: ``--loss 0.05 --burst 4`` is the simple Gilbert–Elliott model with 5 % average
loss and a mean burst of 4 datagrams; ``--bernoulli`` makes drops independent (``--burst`` is
then ignored); ``--loss 0`` drops nothing. ``--seed`` makes the loss pattern reproducible.

Bounds: the relay always stops, after ``--max-datagrams`` received datagrams, after
``--duration`` seconds, after ``--idle`` seconds without a datagram (once one arrived), or on
SIGTERM/SIGINT. Once its sockets are open it writes ``lossy_relay: listening on
A.B.C.D:PORT, forwarding to ...`` on stderr (with ``--listen 127.0.0.1:0`` the OS picks the
port; read it there). Forwarding goes through a queue of at most ``--queue`` datagrams (when the
destination socket cannot keep up, new datagrams beyond it are dropped and counted as
``overflow``). At exit it prints one JSON object on stdout::

    {"received": 2000, "forwarded": 1903, "dropped": 97, "duplicated": 0, "reordered": 0,
     "overflow": 0, "send_errors": 0, "bursts": 24, "mean_burst": 4.04, "max_burst": 11,
     "loss_rate": 0.0485, "seconds": 1.9, "exit": "max-datagrams", "model": {...}}

(``mean_burst``: mean length in datagrams of the runs of consecutive datagrams the relay
dropped; ``loss_rate``: ``dropped / received``.)

Network safety: without ``--netns-ok`` every address must stay on this host: ``--listen`` and
``--to`` unicast addresses in 127.0.0.0/8, multicast only on interface ``lo`` (both for the
join and the output) and with ``--ttl 0``. ``--netns-ok`` lifts that only when this process
runs in a namespace made by ``ip netns add`` (its ``/proc/self/ns/net`` is one of
``/run/netns/*``; the lab runs the relay with ``ip netns exec`` in a namespace it created) and
not in PID 1's; anywhere else ``--netns-ok`` itself is refused. A refusal is one line on
stderr and exit status 2 (as are usage errors); socket setup errors exit with status 1.

Usage::

    # on this host: 127.0.0.1:5000 -> relay -> 127.0.0.1:5001, 5 % loss in bursts of 4
    python tools/lossy_relay.py --listen 127.0.0.1:5000 --to 127.0.0.1:5001 \\
        --loss 0.05 --burst 4 --seed 1 --max-datagrams 2000 --duration 30

    # multicast on lo: group 239.255.0.1:8989 -> 239.255.0.2:8989, TTL 0
    python tools/lossy_relay.py --listen 239.255.0.1:8989 --to 239.255.0.2:8989 \\
        --loss 0.02 --burst 4 --duration 60

    # in a lab namespace: join on eth0, re-send on lo for a receiver in the same namespace
    ip netns exec LAB-h1 python tools/lossy_relay.py --netns-ok \\
        --listen 239.255.0.1:8989 --listen-interface eth0 \\
        --to 239.255.0.2:8989 --interface lo --ttl 0 --loss 0.02 --burst 4 --duration 60
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import ipaddress
import json
import os
import random
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

TOOLS = Path(__file__).resolve().parent
for _path in (str(TOOLS.parent), str(TOOLS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from lossmodel import Bernoulli, BurstCounter, GilbertElliott, LossModel  # noqa: E402

from mcastcam.errors import ConfigError, NetworkSetupError  # noqa: E402
from mcastcam.net import (  # noqa: E402
    open_multicast_receiver,
    open_multicast_sender,
    open_unicast_receiver,
    open_unicast_sender,
    resolve_interface,
)

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")
HOLD_INTERVAL = 0.02  # seconds a reordered datagram waits at most for the next one
FLUSH_TIMEOUT = 1.0  # seconds to drain the queue at exit
RECV_BATCH = 64  # datagrams read per readiness event
MAX_DATAGRAM = 65535  # bytes


class Refused(Exception):
    """A network-safety refusal; its message is the one line printed on stderr."""


@dataclass(frozen=True)
class Endpoint:
    """An IPv4 ``address`` (literal) and UDP ``port``."""

    address: ipaddress.IPv4Address
    port: int

    @property
    def multicast(self) -> bool:
        return self.address in MULTICAST

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """``"A.B.C.D:PORT"`` (IPv4 literal only: names are not resolved) -> :class:`Endpoint`.

    ``PORT`` is 0..65535 (0 is only meaningful for ``--listen``: the OS picks a port).
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"bad address {text!r}: expected A.B.C.D:PORT")
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"bad address {text!r}: expected an IPv4 literal A.B.C.D:PORT"
        ) from err
    return Endpoint(address, int(port_text))


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"bad fraction {text!r}: expected 0..1") from err
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"bad fraction {text!r}: expected 0..1 (0.05 = 5 %)")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"bad count {text!r}: expected a positive integer")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"bad value {text!r}: expected a number") from err
    if not value > 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"bad value {text!r}: must be positive and finite")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lossy_relay",
        description="Bounded UDP relay dropping datagrams in bursts (Gilbert-Elliott).",
    )
    parser.add_argument(
        "--listen",
        type=parse_endpoint,
        required=True,
        help="A.B.C.D:PORT to receive on (unicast, or a multicast group); "
        "port 0: the OS picks one, named on stderr",
    )
    parser.add_argument(
        "--listen-interface",
        default="lo",
        help="interface to join a --listen group on (default lo)",
    )
    parser.add_argument(
        "--to",
        type=parse_endpoint,
        required=True,
        help="A.B.C.D:PORT to forward to (unicast, or a multicast group)",
    )
    parser.add_argument(
        "--interface",
        default="lo",
        help="interface for multicast output, IP_MULTICAST_IF (default lo)",
    )
    parser.add_argument(
        "--ttl",
        type=int,
        default=0,
        choices=range(256),
        metavar="0..255",
        help="multicast TTL (default 0: this host only)",
    )
    parser.add_argument(
        "--loss", type=fraction, default=0.0, help="average loss, a fraction 0..1 (default 0)"
    )
    parser.add_argument(
        "--burst",
        type=positive_float,
        default=4.0,
        help="mean burst length in datagrams (default 4; Gilbert-Elliott)",
    )
    parser.add_argument(
        "--bernoulli",
        action="store_true",
        help="independent drops instead of bursts (--burst ignored)",
    )
    parser.add_argument(
        "--dup", type=fraction, default=0.0, help="probability to send a forwarded datagram twice"
    )
    parser.add_argument(
        "--reorder",
        type=fraction,
        default=0.0,
        help="probability to hold a datagram back behind the next one",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of every random draw")
    parser.add_argument(
        "--queue",
        type=positive_int,
        default=1024,
        help="forwarding queue bound in datagrams (default 1024)",
    )
    parser.add_argument(
        "--max-datagrams",
        type=positive_int,
        default=1_000_000,
        help="stop after this many received datagrams (default 1000000)",
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        default=60.0,
        help="stop after this many seconds (default 60)",
    )
    parser.add_argument(
        "--idle",
        type=positive_float,
        default=None,
        help="stop after this many seconds without a datagram, once one came",
    )
    parser.add_argument(
        "--netns-ok",
        action="store_true",
        help="allow non-loopback addresses; only inside a lab network namespace",
    )
    args = parser.parse_args(argv)
    if args.to.port == 0:
        parser.error(f"bad --to {args.to}: the port must be 1..65535")
    return args


# ---------------------------------------------------------------------------- safety


def lab_namespace() -> str:
    """The name of the ``ip netns add`` namespace this process runs in.

    The process's network namespace (``/proc/self/ns/net``) must be one of the named ones
    (``/run/netns/NAME``, the bind mounts ``ip netns add`` makes), and, when ``/proc/1/ns/net``
    is readable (containers often hide it), not PID 1's.

    Raises:
        Refused: not in a named namespace, or in PID 1's.

    """
    try:
        mine = os.stat("/proc/self/ns/net")
    except OSError as err:
        raise Refused(
            f"--netns-ok refused: cannot read /proc/self/ns/net ({err.strerror})"
        ) from err
    me = (mine.st_dev, mine.st_ino)
    with contextlib.suppress(OSError):
        init = os.stat("/proc/1/ns/net")
        if (init.st_dev, init.st_ino) == me:
            raise Refused(
                "--netns-ok refused: this process is in the root network namespace (PID 1's); "
                "run it with `ip netns exec NAMESPACE` inside a lab namespace"
            )
    named = Path("/run/netns")
    with contextlib.suppress(OSError):
        for entry in sorted(named.iterdir()):
            with contextlib.suppress(OSError):
                st = entry.stat()
                if (st.st_dev, st.st_ino) == me:
                    return entry.name
    raise Refused(
        "--netns-ok refused: this process is not in a namespace made by `ip netns add` "
        "(none of /run/netns/* is its network namespace); "
        "run it with `ip netns exec NAMESPACE` inside a lab namespace"
    )


def check_safety(args: argparse.Namespace) -> None:
    """Refuse anything that could leave this host unless inside a lab namespace.

    Raises:
        Refused: with the one line to print.

    """
    listen: Endpoint = args.listen
    dest: Endpoint = args.to
    if listen == dest:
        raise Refused(f"refused: --to {dest} is the --listen address (the relay would loop)")
    if args.netns_ok:
        lab_namespace()
        return
    hint = " (outside a lab namespace only loopback is allowed; see --netns-ok)"
    for flag, ep, iface in (
        ("--listen", listen, args.listen_interface),
        ("--to", dest, args.interface),
    ):
        if ep.multicast:
            if iface != "lo":
                which = "--listen-interface" if flag == "--listen" else "--interface"
                raise Refused(f"refused: {flag} {ep} is multicast on {which} {iface}, not lo{hint}")
        elif ep.address not in LOOPBACK:
            raise Refused(f"refused: {flag} {ep} is not a loopback address (127.0.0.0/8){hint}")
    if dest.multicast and args.ttl != 0:
        raise Refused(f"refused: --to {dest} is multicast with --ttl {args.ttl}, not 0{hint}")


# ---------------------------------------------------------------------------- relay


@dataclass
class Counters:
    """What the relay did; printed as JSON at exit."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    overflow: int = 0
    send_errors: int = 0
    drops: BurstCounter = field(default_factory=BurstCounter)

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "forwarded": self.forwarded,
            "dropped": self.dropped,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "overflow": self.overflow,
            "send_errors": self.send_errors,
            "bursts": self.drops.bursts,
            "mean_burst": round(self.drops.mean_burst, 4),
            "max_burst": self.drops.max_burst,
            "loss_rate": round(self.drops.loss_rate, 6),
        }


def make_model(args: argparse.Namespace, rng: random.Random) -> LossModel:
    """Bernoulli for ``--bernoulli`` or ``--loss 0``, else ``GilbertElliott.from_loss``.

    Raises:
        ConfigError: ``--burst`` too short for ``--loss`` (see ``GilbertElliott.from_loss``).

    """
    if args.bernoulli or args.loss == 0.0:
        return Bernoulli(args.loss, rng=rng)
    try:
        return GilbertElliott.from_loss(args.loss, args.burst, rng=rng)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def open_sockets(args: argparse.Namespace) -> tuple[socket.socket, socket.socket]:
    """The receiving and the sending socket (both non-blocking); the caller closes them."""
    listen: Endpoint = args.listen
    dest: Endpoint = args.to
    if listen.multicast:
        rx = open_multicast_receiver(
            str(listen.address), listen.port, resolve_interface(args.listen_interface)
        )
    else:
        rx = open_unicast_receiver(str(listen.address), listen.port)
    try:
        if dest.multicast:
            tx = open_multicast_sender(resolve_interface(args.interface), args.ttl, loop=True)
        else:
            tx = open_unicast_sender()
    except BaseException:
        rx.close()
        raise
    return rx, tx


class Relay:
    """The relay loop: receive, decide, queue, send; bounded in datagrams and time."""

    def __init__(
        self, args: argparse.Namespace, model: LossModel, rx: socket.socket, tx: socket.socket
    ) -> None:
        self.args = args
        self.rx = rx
        self.tx = tx
        self.dest = (str(args.to.address), args.to.port)
        self.model = model
        # --dup and --reorder draw from a generator of their own, so the loss pattern for a
        # seed is the one lossmodel gives for that seed whatever they do.
        self.rng = random.Random(None if args.seed is None else args.seed ^ 0x5EED)
        self.counters = Counters()
        self.queue: collections.deque[bytes] = collections.deque()
        self.held: bytes | None = None
        self.held_since = 0.0
        self.stop_reason: str | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_reason = f"signal {signal.Signals(signum).name}"

    def enqueue(self, data: bytes) -> None:
        if len(self.queue) >= self.args.queue:
            self.counters.overflow += 1
        else:
            self.queue.append(data)

    def accept(self, data: bytes, now: float) -> None:
        """One received datagram: drop it, or queue it (maybe twice, maybe held back)."""
        self.counters.received += 1
        lost = self.model.drop()
        self.counters.drops.record(lost)
        if lost:
            self.counters.dropped += 1
            return
        copies = 1
        if self.args.dup and self.rng.random() < self.args.dup:
            copies = 2
            self.counters.duplicated += 1
        if self.held is None and self.args.reorder and self.rng.random() < self.args.reorder:
            self.held, self.held_since = data, now
            self.counters.reordered += 1
            for _ in range(copies - 1):
                self.enqueue(data)
            return
        for _ in range(copies):
            self.enqueue(data)
        self.release_held()

    def release_held(self) -> None:
        if self.held is not None:
            self.enqueue(self.held)
            self.held = None

    def flush(self) -> bool:
        """Send queued datagrams until the queue is empty (``True``) or the socket is full."""
        while self.queue:
            try:
                self.tx.sendto(self.queue[0], self.dest)
            except BlockingIOError:
                return False
            except OSError as err:
                if err.errno not in (
                    errno.ENOBUFS,
                    errno.ECONNREFUSED,
                    errno.EHOSTUNREACH,
                    errno.ENETUNREACH,
                    errno.EPERM,
                    errno.EMSGSIZE,
                ):
                    raise
                self.counters.send_errors += 1
            else:
                self.counters.forwarded += 1
            self.queue.popleft()
        return True

    def read(self, now: float) -> None:
        for _ in range(RECV_BATCH):
            if self.counters.received >= self.args.max_datagrams:
                return
            try:
                data = self.rx.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            self.accept(data, now)

    def run(self) -> dict[str, object]:
        args = self.args
        start = time.monotonic()
        deadline = start + args.duration
        last_input: float | None = None
        sel = selectors.DefaultSelector()
        sel.register(self.rx, selectors.EVENT_READ, "rx")
        # A signal writes a byte here, so select() returns and the loop sees stop_reason.
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        sel.register(wake_r, selectors.EVENT_READ, "wake")
        previous_fd = signal.set_wakeup_fd(wake_w.fileno())
        writing = False
        try:
            while self.stop_reason is None:
                now = time.monotonic()
                if self.counters.received >= args.max_datagrams:
                    self.stop_reason = "max-datagrams"
                    break
                if now >= deadline:
                    self.stop_reason = "duration"
                    break
                if (
                    args.idle is not None
                    and last_input is not None
                    and now - last_input >= args.idle
                ):
                    self.stop_reason = "idle"
                    break
                if self.held is not None and now - self.held_since >= HOLD_INTERVAL:
                    self.release_held()
                wake = [deadline]
                if args.idle is not None and last_input is not None:
                    wake.append(last_input + args.idle)
                if self.held is not None:
                    wake.append(self.held_since + HOLD_INTERVAL)
                for key, _events in sel.select(max(0.0, min(wake) - now)):
                    if key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            wake_r.recv(64)
                    elif key.data == "rx":
                        now = time.monotonic()
                        before = self.counters.received
                        self.read(now)
                        if self.counters.received != before:
                            last_input = now
                done = self.flush()
                if done and writing:
                    sel.unregister(self.tx)
                    writing = False
                elif not done and not writing:
                    sel.register(self.tx, selectors.EVENT_WRITE, "tx")
                    writing = True
            self.release_held()
            self.drain()
        finally:
            signal.set_wakeup_fd(previous_fd)
            sel.close()
            wake_r.close()
            wake_w.close()
        return {
            **self.counters.as_dict(),
            "seconds": round(time.monotonic() - start, 3),
            "exit": self.stop_reason,
            "model": self.model.describe(),
        }

    def drain(self) -> None:
        """Send what is still queued, for at most ``FLUSH_TIMEOUT`` seconds; count the rest."""
        end = time.monotonic() + FLUSH_TIMEOUT
        while not self.flush() and time.monotonic() < end:
            with selectors.DefaultSelector() as wait:
                wait.register(self.tx, selectors.EVENT_WRITE)
                wait.select(max(0.0, end - time.monotonic()))
        self.counters.overflow += len(self.queue)
        self.queue.clear()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_safety(args)
    except Refused as err:
        print(f"lossy_relay: {err}", file=sys.stderr)
        return 2
    try:
        model = make_model(args, random.Random(args.seed))
        rx, tx = open_sockets(args)
    except ConfigError as err:
        print(f"lossy_relay: {err}", file=sys.stderr)
        return 2
    except NetworkSetupError as err:
        print(f"lossy_relay: {err}", file=sys.stderr)
        return 1
    relay = Relay(args, model, rx, tx)
    previous = {sig: signal.signal(sig, relay.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        host, port = rx.getsockname()[:2]  # ready: sockets open, signals handled
        print(
            f"lossy_relay: listening on {host}:{port}, forwarding to {args.to}",
            file=sys.stderr,
            flush=True,
        )
        result = relay.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        rx.close()
        tx.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
