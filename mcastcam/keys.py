"""Key files for protocol version 2 authentication (docs/security.md, docs/protocol-v2.md §8.1).

A key file is a small TOML file, mode 0600, holding one or two master keys::

    # mcastcam key file: keep it secret (mode 0600; readable by its owner only).
    [[key]]
    key_id = 1
    secret = "<standard base64 of 32 random bytes>"

* ``key_id``: 1 … 255, unique in the file; it travels in every authenticated datagram.
* ``secret``: exactly 32 bytes, standard base64 with padding (44 characters).
* A second ``[[key]]`` table is allowed (rotation: the current key and the next one). A sender
  signs with the **first** key of its file; a receiver accepts datagrams under any key of its
  file. Appending a generated file to another (``cat next.key >> current.key``) gives a valid
  two-key file.
* Nothing else is allowed (unknown fields are refused, so a typo is not silently ignored).

:func:`load_key_file` refuses a file that group or others may read or write (a
:class:`~mcastcam.errors.ConfigError` naming the mode and the ``chmod 600`` fix).
:func:`generate_key_file` writes a new key with mode 0600 atomically and never overwrites a
file unless asked to. :func:`main` is the ``keygen`` command.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import os
import secrets
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mcastcam.cli_util import Parser, run_main
from mcastcam.errors import ConfigError
from mcastcam.protocol.auth import MASTER_KEY_BYTES, MAX_KEY_ID, MasterKey

__all__ = [
    "MAX_KEYS",
    "MAX_KEY_FILE_BYTES",
    "KeyFile",
    "add_key_file_option",
    "format_key_file",
    "generate_key_file",
    "load_key_file",
    "load_master_keys",
    "main",
]

MAX_KEYS = 2
"""Keys in one file: the current one and, during a rotation, the next one."""
MAX_KEY_FILE_BYTES = 16 * 1024
"""A key file is a few hundred bytes; anything above this is refused unread."""

_HEADER = (
    "# mcastcam key file: keep it secret (mode 0600; readable by its owner only).\n"
    "# The same key on the sender and its receivers; see docs/security.md.\n"
)


@dataclass(frozen=True, slots=True)
class KeyFile:
    """The keys of one key file, in file order (1 or 2)."""

    path: Path
    keys: tuple[MasterKey, ...]

    @property
    def current(self) -> MasterKey:
        """The key a sender signs with: the first in the file."""
        return self.keys[0]


def format_key_file(keys: list[MasterKey] | tuple[MasterKey, ...]) -> str:
    """The text of a key file holding ``keys`` (in that order)."""
    blocks = [
        f'[[key]]\nkey_id = {k.key_id}\nsecret = "{base64.b64encode(k.secret).decode()}"\n'
        for k in keys
    ]
    return _HEADER + "\n".join(blocks)


def generate_key_file(path: str | Path, key_id: int = 1, *, force: bool = False) -> MasterKey:
    """Write a new random 32-byte key with ``key_id`` to ``path``, mode 0600; return it.

    The key is written to a temporary file (``O_CREAT | O_EXCL``, mode 0600) in the same
    folder, flushed to disk, then linked to ``path`` (which fails if ``path`` exists) or, with
    ``force``, renamed over it: ``path`` never holds a partial key or a wider mode.

    Raises:
        ConfigError: ``key_id`` not 1 … 255, or ``path`` exists and ``force`` is false.
        OSError: the folder is missing or not writable, the disk is full, ...
    """
    if not 1 <= key_id <= MAX_KEY_ID:
        raise ConfigError(f"bad key id {key_id}: must be 1 to {MAX_KEY_ID}")
    path = Path(path)
    key = MasterKey(key_id, secrets.token_bytes(MASTER_KEY_BYTES))
    if not force and (path.exists() or path.is_symlink()):
        raise ConfigError(f"{path} already exists; pass --force to replace it")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, format_key_file([key]).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic, and fails if path appeared meanwhile
            except FileExistsError:
                raise ConfigError(f"{path} already exists; pass --force to replace it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_folder(path.parent)
    return key


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_key_file(path: str | Path) -> KeyFile:
    """Read and check a key file (format in the module docstring).

    Raises:
        ConfigError: missing or unreadable file, not a regular file, group or others may
            read or write it (the message names the mode and ``chmod 600 PATH``), too large,
            not TOML, or any field missing, unknown, of the wrong type or out of range.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ConfigError(f"key file {path}: no such file (create one with keygen)") from None
    except OSError as exc:
        raise ConfigError(f"key file {path}: cannot open it: {exc.strerror}") from None
    try:
        st = os.fstat(fd)  # the file opened, not whatever the name points to later
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"key file {path}: not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"key file {path} has mode {mode:04o}: group or others may read or write it; "
                f"run chmod 600 {path}"
            )
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise ConfigError(
                f"key file {path}: {st.st_size} bytes, more than {MAX_KEY_FILE_BYTES}"
            )
        raw = b""
        while chunk := os.read(fd, MAX_KEY_FILE_BYTES + 1 - len(raw)):
            raw += chunk
    finally:
        os.close(fd)
    return KeyFile(path, _parse(raw, path))


def _parse(raw: bytes, path: Path) -> tuple[MasterKey, ...]:
    where = f"key file {path}"
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: not a TOML key file ({exc})") from None
    extra = set(doc) - {"key"}
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
    tables = doc.get("key")
    if not isinstance(tables, list) or not 1 <= len(tables) <= MAX_KEYS:
        raise ConfigError(f"{where}: expected 1 or {MAX_KEYS} [[key]] tables")
    keys: list[MasterKey] = []
    for n, table in enumerate(tables, 1):
        keys.append(_parse_key(table, f"{where}, key {n}"))
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: key id {ids[0]} appears twice")
    return tuple(keys)


def _parse_key(table: object, where: str) -> MasterKey:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: not a table")
    extra = set(table) - {"key_id", "secret"}
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
    key_id = table.get("key_id")
    if isinstance(key_id, bool) or not isinstance(key_id, int) or not 1 <= key_id <= MAX_KEY_ID:
        raise ConfigError(f"{where}: key_id must be an integer 1 to {MAX_KEY_ID}, not {key_id!r}")
    text = table.get("secret")
    if not isinstance(text, str):
        raise ConfigError(f"{where}: secret must be a base64 string")
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: secret is not valid base64") from None
    if len(secret) != MASTER_KEY_BYTES:
        raise ConfigError(
            f"{where}: secret is {len(secret)} bytes, must be {MASTER_KEY_BYTES} "
            "(generate one with keygen)"
        )
    return MasterKey(key_id, secret)


# ---------------------------------------------------------------------- command line


def _key_id(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_KEY_ID:
        raise argparse.ArgumentTypeError(f"bad key id {text!r}: expected 1 to {MAX_KEY_ID}")
    return int(text)


def _parse_args(argv: list[str]) -> tuple[Path, int, bool]:
    parser = Parser(
        prog="mcastcam keygen",
        description=(
            "Write a new random 32-byte key to FILE with mode 0600 (readable by its owner "
            "only). Copy the file to the sender and every receiver over a secure channel."
        ),
        epilog="example: mcastcam keygen /etc/mcastcam/stream.key --key-id 2",
    )
    parser.add_argument("file", metavar="FILE", type=Path, help="the key file to create")
    parser.add_argument(
        "--key-id",
        type=_key_id,
        default=1,
        help="1 to 255, sent with every datagram; give each new key a new id (default 1)",
    )
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    opts = parser.parse_args(argv)
    return opts.file, opts.key_id, opts.force


def add_key_file_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--key-file FILE`` (protocol v2 authentication) to a command's options."""
    parser.add_argument(
        "--key-file",
        metavar="FILE",
        help="shared key file (from `mcastcam keygen`, mode 0600): every datagram is "
        "authenticated; untagged or forged ones are dropped (docs/security.md)",
    )


def load_master_keys(path: str | Path | None) -> tuple[MasterKey, ...]:
    """The keys of ``--key-file`` (the first one signs), or ``()`` without one.

    Raises:
        ConfigError: see :func:`load_key_file` (a file readable by others included: exit 2).
    """
    if path is None:
        return ()
    return load_key_file(path).keys


async def _run(args: tuple[Path, int, bool]) -> int:
    path, key_id, force = args
    generate_key_file(path, key_id, force=force)
    print(f"wrote key id {key_id} to {path} (mode 0600)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``mcastcam-keygen FILE [--key-id N] [--force]``: write a new key file.

    Exit codes: 0 written, 1 I/O failure (one line), 2 usage (a bad option, or FILE exists
    without ``--force``).
    """
    return run_main("mcastcam-keygen", argv, _parse_args, _run, lambda _args: False)


if __name__ == "__main__":
    sys.exit(main())
