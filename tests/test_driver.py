"""The one asyncio driver, with a real loopback socket and a small sans-IO core."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from mcastcam.driver import Driver

Address = tuple[str, int]


class EchoCore:
    """Echoes every datagram back at its sender after ``delay`` s; one event per datagram."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.pending: list[tuple[float, bytes, Address]] = []
        self.events: list[bytes] = []
        self.timers = 0

    def receive_datagram(self, data: memoryview, addr: Address, now: float) -> int:
        self.pending.append((now + self.delay, bytes(data), addr))
        self.events.append(bytes(data))
        return len(data)

    def next_event(self) -> bytes | None:
        return self.events.pop(0) if self.events else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        due = [(d, a) for t, d, a in self.pending if t <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        return due

    def get_timer(self) -> float | None:
        return min((t for t, _, _ in self.pending), default=None)

    def handle_timer(self, now: float) -> None:
        self.timers += 1


def test_driver_reads_drains_sends_on_its_timer() -> None:
    async def main() -> tuple[list[bytes], list[bytes], list[int], EchoCore, Driver, float]:
        loop = asyncio.get_running_loop()
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with srv, cli:
            srv.bind(("127.0.0.1", 0))
            srv.setblocking(False)
            cli.bind(("127.0.0.1", 0))
            cli.settimeout(2.0)
            core = EchoCore(delay=0.05)
            events: list[bytes] = []
            results: list[int] = []

            def send(out: Sequence[tuple[bytes, Address]]) -> None:
                for data, addr in out:
                    srv.sendto(data, addr)

            driver = Driver(
                core, send, sock=srv, on_event=events.append, on_result=results.append, batch=4
            )
            driver.start()
            sent_at = loop.time()
            for i in range(10):  # more than one batch: the reader comes back for the rest
                cli.sendto(b"ping%d" % i, srv.getsockname())
            echoes: list[bytes] = []
            deadline = loop.time() + 5
            while len(echoes) < 10 and loop.time() < deadline:
                try:
                    echoes.append(await loop.run_in_executor(None, cli.recv, 100))
                except TimeoutError:
                    break
            elapsed = loop.time() - sent_at
            driver.close()
            driver.close()
            return echoes, events, results, core, driver, elapsed

    echoes, events, results, core, driver, elapsed = asyncio.run(main())
    expected = [b"ping%d" % i for i in range(10)]
    assert sorted(echoes) == expected
    assert events == expected  # every event drained, in order
    assert results == [5] * 10  # receive_datagram's results handed over
    assert core.timers >= 1 and core.pending == []  # the echoes left on the timer
    assert elapsed >= 0.05
    assert driver.socket_errors == 0


def test_paused_driver_holds_datagrams_until_resumed() -> None:
    async def main() -> tuple[list[int], list[int]]:
        core = EchoCore(delay=0.0)
        core.pending = [(0.0, b"x", ("127.0.0.1", 9))]
        sent: list[int] = []
        driver = Driver(core, lambda out: sent.append(len(out)))
        driver.paused = True
        driver.start()
        held = list(sent)
        driver.paused = False
        driver.transmit()
        driver.close()
        return held, sent

    held, sent = asyncio.run(main())
    assert held == [] and sent == [1]
