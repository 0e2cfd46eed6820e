r"""An incremental parser of ``multipart/x-mixed-replace`` (MJPEG over HTTP), sans-IO.

The HTTP re-serve (:mod:`mcastcam.receiver.http`, mjpg-streamer/µStreamer compatible) sends
a body of parts, each one JPEG::

    --boundarydonotcross\r\n
    Content-Type: image/jpeg\r\n
    Content-Length: 81234\r\n
    X-Timestamp: 1712345678.123456\r\n
    X-Frame-Id: 42\r\n
    \r\n
    <81234 bytes of JPEG>\r\n
    --boundarydonotcross\r\n
    ...

:class:`MultipartParser` takes the body's bytes as they arrive (any chunking) and gives
back whole :class:`Part`\ s. A part with ``Content-Length`` is read by count; one without
is read up to the next delimiter line (``\r\n--boundary``, RFC 2046 §5.1.1). Blank lines
between parts are skipped; a closing delimiter (``--boundary--``) ends the stream. Lines
may end in CRLF or a bare LF. Everything is bounded: one part's header block
(``max_header_bytes``), its number of header lines, and its body (``max_part_bytes``);
anything else raises :class:`MultipartError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from mcastcam.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_PART_BYTES",
    "MultipartError",
    "MultipartParser",
    "Part",
    "boundary_from_content_type",
    "parse_timestamp",
]

#: Largest part body accepted by default, bytes (a 4K JPEG is well under this).
MAX_PART_BYTES = 64 * 1024 * 1024
#: Largest header block of one part by default (delimiter line, header lines and their
#: line ends), bytes.
MAX_HEADER_BYTES = 16 * 1024
#: Most header lines one part may have.
MAX_HEADERS = 64
#: Longest boundary accepted, bytes (RFC 2046 allows 70; some servers use more).
MAX_BOUNDARY_BYTES = 200
#: The media types whose parts this parser reads.
MULTIPART_TYPES = ("multipart/x-mixed-replace", "multipart/mixed")


class MultipartError(RemoteProtocolError):
    """The bytes are not the expected multipart stream (no boundary, bad header, too big...)."""


def boundary_from_content_type(content_type: str) -> bytes:
    """The boundary (without the leading ``--``) from a ``Content-Type`` header value.

    Accepts ``multipart/x-mixed-replace`` and ``multipart/mixed``, a quoted or bare
    ``boundary`` parameter, and the ``--`` that mjpg-streamer clones put in the parameter.

    Raises:
        MultipartError: another media type, or no usable boundary parameter.
    """
    mime, _, params = content_type.partition(";")
    if mime.strip().lower() not in MULTIPART_TYPES:
        raise MultipartError(f"not an MJPEG stream: Content-Type {content_type!r}")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value:
            boundary = value.strip().strip('"').encode("latin-1", "replace")
            boundary = boundary.removeprefix(b"--")
            if not 0 < len(boundary) <= MAX_BOUNDARY_BYTES or b"\r" in boundary:
                break
            return boundary
    raise MultipartError(f"no usable boundary in Content-Type {content_type!r}")


def parse_timestamp(value: str) -> int:
    """Turn an ``X-Timestamp`` value (``seconds.fraction``) into integer nanoseconds.

    Raises:
        MultipartError: not a non-negative decimal number of seconds.
    """
    try:
        seconds = Decimal(value.strip())
    except InvalidOperation:
        raise MultipartError(f"bad X-Timestamp {value!r}: not a number") from None
    if not seconds.is_finite() or not 0 <= seconds < 2**64:
        raise MultipartError(f"bad X-Timestamp {value!r}: not a time")
    return int(seconds * 1_000_000_000)


def _parse_int(value: str, name: str, limit: int) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise MultipartError(f"bad {name} {value!r}: not an integer")
    if len(text) > 20 or int(text) > limit:
        raise MultipartError(f"bad {name} {text}: outside 0..{limit}")
    return int(text)


@dataclass(frozen=True, slots=True)
class Part:
    """One part of the stream.

    Attributes:
        body: the part's bytes (a JPEG on the re-serve).
        headers: the part's headers, names lower-cased (the last one wins on repeats).
        capture_ts_ns: ``X-Timestamp`` in wall clock ns (microsecond precision on the
            re-serve); 0 when the part has none.
        frame_id: ``X-Frame-Id`` (u32), or ``None`` when the part has none.
    """

    body: bytes
    headers: dict[str, str]
    capture_ts_ns: int
    frame_id: int | None


class _State(enum.Enum):
    DELIMITER = "delimiter"  # blank lines, then a delimiter line
    HEADERS = "headers"  # header lines up to a blank line
    BODY = "body"  # Content-Length bytes, or up to the next delimiter
    CLOSED = "closed"  # after the closing delimiter; the rest is ignored


class MultipartParser:
    """Incremental parser of a ``multipart/x-mixed-replace`` body.

    Args:
        boundary: the boundary without the leading ``--`` (see
            :func:`boundary_from_content_type`).
        max_header_bytes: largest header block of one part, bytes.
        max_part_bytes: largest part body, bytes.

    Raises:
        LocalProtocolError: an empty boundary or a limit below 1.
    """

    def __init__(
        self,
        boundary: bytes,
        *,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_part_bytes: int = MAX_PART_BYTES,
    ) -> None:
        if not boundary or b"\n" in boundary:
            raise LocalProtocolError(f"bad multipart boundary {boundary!r}")
        if max_header_bytes < 1 or max_part_bytes < 1:
            raise LocalProtocolError(
                f"limits must be >= 1: max_header_bytes={max_header_bytes}, "
                f"max_part_bytes={max_part_bytes}"
            )
        self.delimiter = b"--" + boundary
        self.max_header_bytes = max_header_bytes
        self.max_part_bytes = max_part_bytes
        self._marker = b"\n" + self.delimiter  # ends a body of unknown length
        self._buf = bytearray()
        self._scan = 0  # where the next search in _buf starts (bytes before it were searched)
        self._state = _State.DELIMITER
        self._header_bytes = 0
        self._headers: dict[str, str] = {}
        self._length: int | None = None  # Content-Length of the part in progress
        self._fields: tuple[int, int | None] = (0, None)  # its capture_ts_ns, frame_id
        self._failed: str | None = None

    @classmethod
    def from_content_type(cls, content_type: str, **limits: int) -> MultipartParser:
        """A parser for the body of a response with this ``Content-Type``.

        Raises:
            MultipartError: see :func:`boundary_from_content_type`.
        """
        return cls(boundary_from_content_type(content_type), **limits)

    @property
    def closed(self) -> bool:
        """True once the closing delimiter (``--boundary--``) was read: no more parts."""
        return self._state is _State.CLOSED

    @property
    def buffered(self) -> int:
        """Bytes held for the part (or line) in progress."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Part]:
        """Take the next bytes of the body; return the parts they complete, in order.

        Raises:
            MultipartError: the bytes break the format or a limit. The parser is then
                broken: every later call raises the same error.
        """
        if self._failed is not None:
            raise MultipartError(self._failed)
        if self._state is _State.CLOSED:
            return []  # the epilogue
        self._buf += data
        try:
            return self._parse()
        except MultipartError as exc:
            self._failed = str(exc)
            self._buf.clear()
            raise

    def _parse(self) -> list[Part]:
        parts: list[Part] = []
        while True:
            if self._state is _State.BODY:
                part = self._body()
                if part is None:
                    return parts
                parts.append(part)
                continue
            limit = self.max_header_bytes - self._header_bytes
            line = self._line(limit)
            if line is None:
                return parts
            if self._state is _State.DELIMITER:
                if self._delimiter(line):
                    self._buf.clear()
                    return parts
            else:
                self._header(line)

    def _line(self, limit: int) -> bytes | None:
        """The next line without its line end, if complete; counts it in the header bytes."""
        end = self._buf.find(b"\n", self._scan, limit)
        if end < 0:
            if len(self._buf) >= limit:
                raise MultipartError(f"part header block longer than {self.max_header_bytes} bytes")
            self._scan = len(self._buf)
            return None
        line = bytes(self._buf[:end]).removesuffix(b"\r")
        del self._buf[: end + 1]
        self._scan = 0
        self._header_bytes += end + 1
        return line

    def _delimiter(self, line: bytes) -> bool:
        """Skip a blank line or take a delimiter line; True for the closing delimiter."""
        stripped = line.rstrip(b" \t")  # RFC 2046 allows transport padding after it
        if not stripped:
            self._header_bytes = 0  # blank lines between parts do not count
        elif stripped == self.delimiter:
            self._state = _State.HEADERS
        elif stripped == self.delimiter + b"--":
            self._state = _State.CLOSED
            return True
        else:
            raise MultipartError(f"expected boundary {self.delimiter!r}, got {line[:80]!r}")
        return False

    def _header(self, line: bytes) -> None:
        if not line:
            self._end_of_headers()
            return
        name, sep, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if not sep or not name:
            raise MultipartError(f"bad part header line {line[:80]!r}")
        self._headers[name] = value.strip()
        if len(self._headers) > MAX_HEADERS:
            raise MultipartError(f"more than {MAX_HEADERS} part headers")

    def _end_of_headers(self) -> None:
        length = self._headers.get("content-length")
        self._length = (
            None if length is None else _parse_int(length, "Content-Length", self.max_part_bytes)
        )
        self._fields = self._part_fields(self._headers)  # checked before the body arrives
        self._state = _State.BODY

    @staticmethod
    def _part_fields(headers: dict[str, str]) -> tuple[int, int | None]:
        ts = headers.get("x-timestamp")
        fid = headers.get("x-frame-id")
        return (
            parse_timestamp(ts) if ts is not None else 0,
            _parse_int(fid, "X-Frame-Id", 0xFFFFFFFF) if fid is not None else None,
        )

    def _body(self) -> Part | None:
        buf = self._buf
        if self._length is not None:
            if len(buf) < self._length:
                return None
            body = bytes(buf[: self._length])
            del buf[: self._length]
        else:
            end = buf.find(self._marker, self._scan)
            if end < 0:
                if len(buf) > self.max_part_bytes + len(self._marker):
                    raise MultipartError(
                        f"part without Content-Length longer than {self.max_part_bytes} bytes"
                    )
                self._scan = max(0, len(buf) - len(self._marker) + 1)
                return None
            body = bytes(buf[:end]).removesuffix(b"\r")  # the CRLF belongs to the delimiter
            if len(body) > self.max_part_bytes:
                raise MultipartError(
                    f"part without Content-Length longer than {self.max_part_bytes} bytes"
                )
            del buf[: end + 1]  # the delimiter line stays for the DELIMITER state
            self._scan = 0
        part = Part(body, self._headers, *self._fields)
        self._headers = {}
        self._header_bytes = 0
        self._length = None
        self._state = _State.DELIMITER
        return part
