"""Reading one Binance archive: zip member bytes to a typed Arrow table.

The fast path hands the member bytes straight to pyarrow's CSV reader with explicit column
types. Only when that fails does ``locate_csv_defect`` re-read the bytes as plain lines to
name the first bad line (1-based, as a text editor counts), so that the message points a
person at the exact row whatever pyarrow version produced the error.
"""

from __future__ import annotations

import contextlib
import functools
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from crypto_lakehouse import storage


class ArchiveDefect(Exception):
    """A permanent defect of one archive file: the file is quarantined, the job goes on.

    ``line`` is the 1-based CSV line the message points at, when there is one.
    """

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


def first_defect(*checks) -> list:
    """Run every check; raise the defect with the lowest line number, if any.

    Returns the checks' results, in order, when none fails.
    """
    found, results = [], []
    for check in checks:
        try:
            results.append(check())
        except ArchiveDefect as exc:
            found.append(exc)
    if found:
        raise min(found, key=lambda e: e.line if e.line is not None else 0)
    return results


# A decimal as Binance prints it ("0.00004123", "-0.0001", "19431", "1e-05").
_FLOAT_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_INT_RE = r"^[+-]?\d+$"


@dataclass(frozen=True, eq=False)  # hashed by identity: one spec per kind of file
class CsvSpec:
    """How to read one kind of archive CSV."""

    names: tuple[str, ...]  # every column of a row, in source order
    types: dict[str, pa.DataType]  # the columns kept, with their types
    header_prefix: bytes  # a first line starting with this is a header

    @property
    def kept(self) -> list[str]:
        return list(self.types)


# Below this many inflated bytes a member is harmless whatever its ratio: a small zip of a
# quiet symbol (same price all day) compresses far better than a busy one.
INFLATE_FLOOR_BYTES = 8 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class InflateLimit:
    """How far one archive member may inflate (config ``parse.*``).

    The cap of a member is ``ratio`` × the zip's size, at least ``INFLATE_FLOOR_BYTES`` and
    at most ``ceiling``. Real Binance CSVs inflate 2-4× their zip; a zip bomb of repeated
    lines inflates ~1000×.
    """

    ratio: float = 20.0
    ceiling: int = 1 << 30

    def cap(self, zip_size: int) -> int:
        return min(self.ceiling, max(int(self.ratio * zip_size), INFLATE_FLOOR_BYTES))

    def describe(self) -> str:
        return (
            f"parse.max_inflate_ratio={self.ratio:g} x zip size, at least "
            f"{INFLATE_FLOOR_BYTES} bytes, at most parse.max_inflated_bytes={self.ceiling}"
        )


DEFAULT_INFLATE_LIMIT = InflateLimit()


def _over_cap(label: str, name: str, what: str, zip_size: int, cap: int, limit) -> ArchiveDefect:
    return ArchiveDefect(
        f"{label}: zip member {name!r} {what}, from a zip of {zip_size} bytes: over the "
        f"inflated-size cap of {cap} bytes ({limit.describe()}); not parsed"
    )


@contextlib.contextmanager
def open_zip_member(
    path: str | Path, label: str, limit: InflateLimit = DEFAULT_INFLATE_LIMIT
) -> Iterator[ZipMember]:
    """The single CSV member of a Binance zip, open for reading (``ZipMember``).

    ``label`` names the file in error messages (the bucket key). A zip with no member or
    several, or whose member declares more inflated bytes than ``limit.cap(zip size)``, is
    an ArchiveDefect before anything is inflated; so is a zip that cannot be read or
    inflated while the block reads it.
    """
    # Read errors of the store (a missing file, S3 down) are not defects of the archive:
    # they propagate, only what the zip itself holds is checked below.
    source = storage.open_input(path)
    zip_size = storage.size_of_open(source)
    try:
        cap = limit.cap(zip_size)
        with source, zipfile.ZipFile(source) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            if not members:
                raise ArchiveDefect(f"{label}: zip has no member (empty archive)")
            if len(members) > 1:
                names = ", ".join(i.filename for i in members)
                raise ArchiveDefect(
                    f"{label}: zip has {len(members)} members ({names}), expected 1"
                )
            member = members[0]
            if member.file_size > cap:
                what = f"declares {member.file_size} inflated bytes"
                raise _over_cap(label, member.filename, what, zip_size, cap, limit)
            with zf.open(member) as stream:
                yield ZipMember(label, member, stream, zip_size, cap, limit)
    except zipfile.BadZipFile as exc:
        raise ArchiveDefect(f"{label}: not a readable zip ({exc})") from exc
    except (zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, zlib.error) as exc:
        # OSError covers a truncated member, zlib.error a corrupt deflate stream; a missing file is checked before we get here.
        raise ArchiveDefect(f"{label}: cannot inflate zip member ({exc})") from exc


@dataclass
class ZipMember:
    """An open zip member (``open_zip_member``): its declared size, its stream, its cap."""

    label: str
    info: zipfile.ZipInfo
    stream: IO[bytes]
    zip_size: int
    cap: int
    limit: InflateLimit

    @property
    def declared_size(self) -> int:
        return self.info.file_size

    def over_cap(self, total: int) -> ArchiveDefect:
        what = f"inflates past {total} bytes (declared {self.info.file_size})"
        return _over_cap(self.label, self.info.filename, what, self.zip_size, self.cap, self.limit)

    def read_all(self) -> bytearray:
        """The whole member inflated in bounded chunks into one buffer (a bytearray: no
        second copy), counted against the cap (the declared size can lie)."""
        # Inflated into one buffer of the declared size (≤ the cap): chunks joined at the
        # end held the member twice (800 MB at the peak for a monthly 1s kline zip).
        data = bytearray(self.info.file_size)
        total = 0
        stream = self.stream
        with memoryview(data) as view:
            while total < len(data) and (n := stream.readinto(view[total:][:_CHUNK])):
                total += n
        del data[total:]  # fewer bytes than declared
        while chunk := stream.read(_CHUNK):  # more than declared: counted too
            total += len(chunk)
            if total > self.cap:
                raise self.over_cap(total)
            data += chunk
        return data


def read_zip_member(
    path: str | Path, label: str, limit: InflateLimit = DEFAULT_INFLATE_LIMIT
) -> bytearray:
    """The bytes of the single CSV member of a Binance zip, inflated in bounded chunks into
    one buffer (a bytearray: no second copy).

    ``label`` names the file in error messages (the bucket key). A member whose declared
    or actual inflated size passes ``limit.cap(zip size)`` is an ArchiveDefect, raised
    before more than the cap is held in memory (the declared size can lie, so the stream
    is counted too).
    """
    with open_zip_member(path, label, limit) as member:
        return member.read_all()


def has_header(data: bytes, spec: CsvSpec) -> bool:
    return data.startswith(spec.header_prefix)


def normalise_csv_bytes(data: bytes) -> bytes:
    """Trailing blank lines trimmed and a final newline ensured (copies only when needed).

    Only extra blank lines at the end are harmless; blank lines inside the data are a
    defect, which is why the reader does not ignore empty lines.
    """
    if data.endswith(b"\n") and not data.endswith((b"\n\n", b"\r\n\r\n", b"\r\n\n")):
        return data
    stripped = data.rstrip()
    return stripped + b"\n" if stripped else b""


@functools.cache
def _options(spec: CsvSpec, header_lines: int):
    """pyarrow reader options, built once per kind of file (small files: it shows)."""
    return (
        pacsv.ReadOptions(column_names=list(spec.names), skip_rows=header_lines, use_threads=False),
        # Blank lines are not skipped: inside the data they are a defect to report.
        pacsv.ParseOptions(ignore_empty_lines=False),
        pacsv.ConvertOptions(
            column_types=spec.types,
            include_columns=spec.kept,
            null_values=[],  # an empty field is an error, not a null
            quoted_strings_can_be_null=False,
        ),
    )


def read_csv_bytes(data: bytes, spec: CsvSpec, label: str) -> tuple[pa.Table, int]:
    """Parse CSV bytes; returns the table of the kept columns and the number of header lines.

    Raises ArchiveDefect naming ``label`` and the first bad line.
    """
    data = normalise_csv_bytes(data)
    header_lines = 1 if has_header(data, spec) else 0
    read_options, parse_options, convert_options = _options(spec, header_lines)
    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )
    except pa.ArrowInvalid as exc:
        problem = locate_csv_defect(data, spec, header_lines)
        raise ArchiveDefect(f"{label}: {problem or exc}") from exc
    if table.num_rows == 0:
        raise ArchiveDefect(f"{label}: CSV has no data rows")
    return table, header_lines


class _NotStreamable(Exception):
    """A member the streamed read leaves to the whole read (which gives the exact verdict)."""


# Whitespace a member may end with that the streamed read holds back (normalise_csv_bytes
# trims it); a member ending in more than this is read whole instead.
_MAX_HELD_WHITESPACE = 1 << 20


class _NormalisedStream:
    """A member's bytes exactly as ``normalise_csv_bytes`` gives them, read piece by piece.

    The run of whitespace at the end of what was read so far is held back until data follows
    it; at the end it is given on unchanged or replaced by one newline, as the whole-bytes
    function decides. Counts the inflated bytes against the member's cap.
    """

    def __init__(self, member: ZipMember, first: bytes):
        self.member = member
        self.first: bytes | None = first
        self.inflated = 0
        self.given = 0  # CSV bytes handed on: len(normalise_csv_bytes(member))
        self.held = b""
        self.seen_data = False
        self.done = False

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at the end); b"" once all were given."""
        pieces, n = [], 0
        while n < size and not self.done:
            piece = self._piece(size - n)
            pieces.append(piece)
            n += len(piece)
        self.given += n
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _piece(self, size: int) -> bytes:
        raw, self.first = (self.first, None) if self.first else (None, None)
        if raw is None:
            raw = self.member.stream.read(size)
        if not raw:
            self.done = True
            if not self.seen_data:
                raise _NotStreamable("no data")  # empty or blank: the whole read's verdict
            tail = self.held
            if tail.endswith(b"\n") and not tail.endswith((b"\n\n", b"\r\n\r\n", b"\r\n\n")):
                return tail
            return b"\n"
        self.inflated += len(raw)
        if self.inflated > self.member.cap:
            raise _NotStreamable("over the cap")
        data = raw.rstrip()
        if not data:
            self.held += raw
            if len(self.held) > _MAX_HELD_WHITESPACE:
                raise _NotStreamable("a long run of whitespace")
            return b""
        self.seen_data = True
        out, self.held = self.held + data, raw[len(data) :]
        return out


def _block_read_options(spec: CsvSpec, header_lines: int, size: int) -> pacsv.ReadOptions:
    """One block read as one chunk (pyarrow's own blocks are 1 MB: ~7,000 rows of 1s)."""
    return pacsv.ReadOptions(
        column_names=list(spec.names),
        skip_rows=header_lines,
        use_threads=False,
        block_size=size + 1,
    )


def read_csv_stream(
    member: ZipMember, spec: CsvSpec, block_size: int
) -> tuple[pa.Table, int, int] | None:
    """A large member parsed block by block as it is inflated; returns (the table of the
    kept columns, one chunk per block; header lines; CSV bytes), or None when the member
    must be read whole instead (anything pyarrow or the stream refuses, a quote character,
    no data row, over the cap): that read gives the exact verdict and message
    (``read_csv_bytes``).

    Same table as ``read_csv_bytes`` of the whole member: the same bytes
    (``_NormalisedStream``) cut after the last newline of each ``block_size`` bytes (no
    quote, so no value holds a newline) and the same reader options. One pyarrow call per
    block, not ``pyarrow.csv.open_csv``: its reader ran ahead of the parse, and a monthly 1s
    member read from a Python stream held ~130 MB of CSV besides the rows. Memory: the
    rows and about two blocks of CSV. The blocks' chunks are not joined here: joined, the
    rows were held twice, and the freed blocks stayed in the process (the allocators could
    not give back pages shared with the other columns' blocks): +220 MB for a month of 1s.
    """
    parts: list[pa.Table] = []
    try:
        first = member.stream.read(_CHUNK)
        header_lines = 1 if has_header(first, spec) else 0
        source = _NormalisedStream(member, first)
        del first
        carry = b""
        while True:
            chunk = source.read(block_size)
            if not chunk and not carry:
                break
            buf = carry + chunk if carry else chunk
            del chunk
            cut = buf.rfind(b"\n") + 1 if not source.done else len(buf)
            if cut == 0:
                if len(buf) > 4 * block_size:
                    return None  # no line end in 4 blocks: not these files' CSV
                carry = buf
                continue
            if buf.find(b'"', 0, cut) >= 0:
                return None
            carry = buf[cut:]
            with memoryview(buf) as view:
                block = view[:cut]
                _, parse_options, convert_options = _options(spec, 0)
                parts.append(
                    pacsv.read_csv(
                        pa.py_buffer(block),
                        read_options=_block_read_options(spec, 0 if parts else header_lines, cut),
                        parse_options=parse_options,
                        convert_options=convert_options,
                    )
                )
                del block
            del buf
        if not sum(p.num_rows for p in parts):
            return None
    except Exception:  # noqa: BLE001 (any refusal: the whole read names it, or the store's error)
        return None
    return pa.concat_tables(parts), header_lines, source.given


def _lines(data: bytes) -> pa.Array:
    """Every line of ``data`` as one string array (no CSV splitting)."""
    text = data.decode("utf-8", errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    return pa.array(text.split("\n"), pa.string())


def locate_csv_defect(data: bytes, spec: CsvSpec, header_lines: int) -> str | None:
    """Name the first line that has the wrong field count or a non-numeric kept field.

    Vectorised over all lines; called only after the fast reader has refused the file.
    """
    if not data.strip():
        return "CSV member is empty"
    lines = pc.utf8_rtrim(_lines(data), characters="\r")
    rows = lines[header_lines:]
    if len(rows) == 0:
        return "CSV has no data rows"
    n_fields = pc.add(pc.count_substring(rows, ","), 1).to_numpy()
    bad_count = np.flatnonzero(n_fields != len(spec.names))
    whole = np.flatnonzero(n_fields == len(spec.names))
    fields = pc.split_pattern(rows.take(pa.array(whole, pa.int64())), ",")
    first_bad: tuple[int, str] | None = None
    if bad_count.size:
        i = int(bad_count[0])
        got = "an empty line" if rows[i].as_py() == "" else f"{n_fields[i]} fields"
        first_bad = (i, f"{got}, expected {len(spec.names)}")
    for name, typ in spec.types.items():
        values = pc.list_element(fields, spec.names.index(name))
        pattern = _INT_RE if pa.types.is_integer(typ) else _FLOAT_RE
        ok = pc.match_substring_regex(values, pattern).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~ok)
        if bad.size and (first_bad is None or whole[bad[0]] < first_bad[0]):
            i = int(whole[bad[0]])
            kind = "an integer" if pa.types.is_integer(typ) else "a number"
            first_bad = (i, f"field {name!r} is not {kind}: {values[int(bad[0])].as_py()!r}")
    if first_bad is None:
        return None
    i, what = first_bad
    return f"line {i + 1 + header_lines}: {what}"
