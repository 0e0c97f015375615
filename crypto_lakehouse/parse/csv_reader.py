"""Reading one Binance archive: zip member bytes to a typed Arrow table.

The fast path hands the member bytes straight to pyarrow's CSV reader with explicit column
types. Only when that fails does ``locate_csv_defect`` re-read the bytes as plain lines to
name the first bad line (1-based, as a text editor counts), so that the message points a
person at the exact row whatever pyarrow version produced the error.
"""

from __future__ import annotations

import functools
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

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
            # Inflated into one buffer of the declared size (≤ the cap): chunks joined at the
            # end held the member twice (800 MB at the peak for a monthly 1s kline zip).
            data = bytearray(member.file_size)
            total = 0
            with zf.open(member) as stream:
                with memoryview(data) as view:
                    while total < len(data) and (n := stream.readinto(view[total:][:_CHUNK])):
                        total += n
                del data[total:]  # fewer bytes than declared
                while chunk := stream.read(_CHUNK):  # more than declared: counted too
                    total += len(chunk)
                    if total > cap:
                        what = f"inflates past {total} bytes (declared {member.file_size})"
                        raise _over_cap(label, member.filename, what, zip_size, cap, limit)
                    data += chunk
            return data
    except zipfile.BadZipFile as exc:
        raise ArchiveDefect(f"{label}: not a readable zip ({exc})") from exc
    except (zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, zlib.error) as exc:
        # OSError covers a truncated member, zlib.error a corrupt deflate stream; a missing file is checked before we get here.
        raise ArchiveDefect(f"{label}: cannot inflate zip member ({exc})") from exc


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
