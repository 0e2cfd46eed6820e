"""The sans-IO core of mcastcam: everything that decides, nothing that does I/O.

Wire schemas (:mod:`.wire`), codec (:mod:`.codec`), serial numbers, configuration, events,
the sender's fragmenter, pacer and session, the receiver's reassembler, liveness, reports and
session, discovery, the fan-out policy, the TCP and multipart framings, and the protocol
version 2 building blocks (FEC, repair policy, integrity, authentication). Every module here
takes bytes and ``now`` and gives back bytes, events and deadlines; ``ruff.toml`` in this
folder bans every I/O module (see ``docs/architecture.md``).
"""
