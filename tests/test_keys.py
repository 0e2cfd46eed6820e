import base64
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcastcam.errors import ConfigError
from mcastcam.keys import (
    MAX_KEY_FILE_BYTES,
    format_key_file,
    generate_key_file,
    load_key_file,
    main,
)
from mcastcam.protocol.auth import MasterKey


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0)  # the most permissive umask: the file must still be 0600
    yield
    os.umask(old)


def write(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    return path


B64_32 = base64.b64encode(bytes(range(32))).decode()


# ---------------------------------------------------------------- generate


def test_generate_writes_mode_0600_and_loads_back(tmp_path: Path, umask: None) -> None:
    path = tmp_path / "stream.key"
    key = generate_key_file(path, 3)
    assert mode_of(path) == 0o600
    loaded = load_key_file(path)
    assert loaded.keys == (key,)
    assert loaded.current == key and key.key_id == 3 and len(key.secret) == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.key"]  # no temporary left
    text = path.read_text()
    assert text.startswith("# mcastcam key file")
    assert base64.b64encode(key.secret).decode() in text


def test_keys_are_random(tmp_path: Path) -> None:
    a = generate_key_file(tmp_path / "a.key")
    b = generate_key_file(tmp_path / "b.key")
    assert a.secret != b.secret
    assert a.key_id == b.key_id == 1


def test_no_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = generate_key_file(path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        generate_key_file(path, 2)
    assert path.read_bytes() == before
    second = generate_key_file(path, 2, force=True)
    assert mode_of(path) == 0o600
    assert load_key_file(path).keys == (second,)
    assert second.secret != first.secret
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_force_replaces_a_file_that_was_world_readable(tmp_path: Path) -> None:
    path = write(tmp_path / "k", "old", 0o644)
    generate_key_file(path, force=True)
    assert mode_of(path) == 0o600


def test_no_overwrite_through_a_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(ConfigError, match="already exists"):
        generate_key_file(link)
    assert not (tmp_path / "elsewhere.key").exists()


def test_bad_key_id_and_missing_folder(tmp_path: Path) -> None:
    for key_id in (0, 256):
        with pytest.raises(ConfigError, match="key id"):
            generate_key_file(tmp_path / "k", key_id)
    with pytest.raises(FileNotFoundError):
        generate_key_file(tmp_path / "no" / "such" / "k")


# ---------------------------------------------------------------- load


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o666])
def test_load_refuses_a_file_others_may_read_or_write(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    generate_key_file(path)
    path.chmod(mode)
    with pytest.raises(ConfigError) as exc:
        load_key_file(path)
    message = str(exc.value)
    assert f"mode {mode:04o}" in message
    assert f"chmod 600 {path}" in message
    path.chmod(0o600)
    load_key_file(path)
    path.chmod(0o400)  # read-only for the owner is fine too
    load_key_file(path)


def test_two_keys_for_rotation(tmp_path: Path) -> None:
    current = tmp_path / "current.key"
    following = tmp_path / "next.key"
    k1 = generate_key_file(current, 1)
    k2 = generate_key_file(following, 2)
    with current.open("a") as f:  # the documented way: cat next.key >> current.key
        f.write(following.read_text())
    loaded = load_key_file(current)
    assert loaded.keys == (k1, k2)
    assert loaded.current == k1
    path = write(tmp_path / "f", format_key_file([k2, k1]))
    assert load_key_file(path).current == k2


def keyfile(key_id: object = 1, secret: object = B64_32, extra: str = "") -> str:
    kid = key_id if isinstance(key_id, str) else repr(key_id).lower()
    sec = f'"{secret}"' if isinstance(secret, str) else repr(secret)
    return f"[[key]]\nkey_id = {kid}\nsecret = {sec}\n{extra}"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "1 or 2"),
        ("key_id = 1\n", "unknown field"),
        ("this is not toml", "not a TOML"),
        (b"\xff\xfe", "not a TOML"),
        (keyfile(0), "key_id must be"),
        (keyfile(256), "key_id must be"),
        (keyfile(True), "key_id must be"),
        (keyfile('"1"'), "key_id must be"),
        (keyfile(1, base64.b64encode(bytes(31)).decode()), "31 bytes, must be 32"),
        (keyfile(1, base64.b64encode(bytes(33)).decode()), "33 bytes, must be 32"),
        (keyfile(1, "not base64 at all!"), "not valid base64"),
        (keyfile(1, B64_32.rstrip("=")), "not valid base64"),
        (keyfile(1, 12345), "base64 string"),
        ("[[key]]\nkey_id = 1\n", "base64 string"),
        (keyfile(extra="comment = 'x'\n"), "unknown field"),
        (keyfile() + keyfile(2) + keyfile(3), "1 or 2"),
        (keyfile(5) + keyfile(5), "appears twice"),
        ("key = 5\n", "1 or 2"),
        ("key = [1]\n", "not a table"),
    ],
)
def test_bad_contents(tmp_path: Path, text: str | bytes, match: str) -> None:
    path = write(tmp_path / "k", text)
    with pytest.raises(ConfigError, match=match) as exc:
        load_key_file(path)
    assert str(path) in str(exc.value)


def test_good_handwritten_file(tmp_path: Path) -> None:
    path = write(tmp_path / "k", "# comment\n" + keyfile(9))
    assert load_key_file(path).keys == (MasterKey(9, bytes(range(32))),)


def test_missing_folder_and_huge_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_key_file(tmp_path / "absent.key")
    with pytest.raises(ConfigError, match="not a regular file"):
        (tmp_path / "d").mkdir(mode=0o700)
        load_key_file(tmp_path / "d")
    big = write(tmp_path / "big", keyfile() + "#" * MAX_KEY_FILE_BYTES)
    with pytest.raises(ConfigError, match="more than"):
        load_key_file(big)


# ---------------------------------------------------------------- command line


def test_cli_writes_a_key_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "k"
    assert main([str(path), "--key-id", "4"]) == 0
    out = capsys.readouterr().out
    assert "wrote key id 4" in out and str(path) in out
    assert mode_of(path) == 0o600
    key = load_key_file(path).current
    assert key.key_id == 4
    assert base64.b64encode(key.secret).decode() not in out  # the secret is never printed
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mcastcam-keygen: error:") and "--force" in err
    assert err.count("\n") == 1
    assert load_key_file(path).current == key
    assert main([str(path), "--force"]) == 0
    assert load_key_file(path).current != key


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--key-id", "0", "k"],
        ["k", "--key-id", "256"],
        ["k", "--key-id", "x"],
        ["k", "--bogus"],
    ],
)
def test_cli_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    argv = [str(tmp_path / a) if a == "k" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mcastcam-keygen: error:") and err.count("\n") == 1
    assert not (tmp_path / "k").exists()


def test_cli_runtime_failure_and_help(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing" / "k")]) == 1
    assert "mcastcam-keygen: error:" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "mode 0600" in capsys.readouterr().out


def test_cli_as_a_process(tmp_path: Path) -> None:
    path = tmp_path / "k"
    done = subprocess.run(
        [sys.executable, "-m", "mcastcam.keys", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert mode_of(path) == 0o600
    assert load_key_file(path).current.key_id == 1
