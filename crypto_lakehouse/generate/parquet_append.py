"""Rewrite the end of a Parquet file without re-encoding its unchanged row groups.

A daily update of a 6-year 1m file changes only its last row group (one row group holds
``ROW_GROUP_ROWS`` rows, ~91 days of minutes), yet re-encoding 3 M rows costs about as much
as recomputing them. A Parquet file is ``PAR1``, the column chunks of each row group in
order, then the footer (a Thrift compact-encoded ``FileMetaData``) and ``PAR1``. The chunks
carry no absolute offsets (only the footer does), and the writer encodes each row group on
its own, so the file pyarrow writes for a table equals: the bytes of the row groups of an
earlier file whose rows are the same, followed by the row groups pyarrow writes for the
remaining rows, under the footer of the latter with those earlier row groups put in front
and every offset shifted. ``append_rows`` builds exactly that; the tests compare it byte
for byte with a plain ``pyarrow.parquet.write_table`` of the whole table.

Only the Thrift compact protocol subset a Parquet footer uses is implemented.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from crypto_lakehouse import io, storage

# Written explicitly by every path (full and appended), so both agree on the row groups
# whatever pyarrow's default becomes. 2^17 rows (~91 days of minutes, DuckDB's own row
# group is 122,880 rows): a daily update decodes and re-encodes at most this many rows of
# a file (pyarrow's 2^20, ~2 years, made it re-encode a whole 400-day file every day).
ROW_GROUP_ROWS = 1 << 17
MAGIC = b"PAR1"

# Thrift compact protocol type ids.
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(
    13
)

# FileMetaData / RowGroup / ColumnChunk / ColumnMetaData field ids (parquet.thrift).
FMD_NUM_ROWS, FMD_ROW_GROUPS, FMD_CREATED_BY = 3, 4, 6
RG_COLUMNS, RG_NUM_ROWS, RG_FILE_OFFSET, RG_ORDINAL = 1, 3, 5, 7
CC_FILE_OFFSET, CC_META, CC_OFFSET_INDEX, CC_COLUMN_INDEX = 2, 3, 4, 6
CMD_OFFSETS = (9, 10, 11, 14)  # data, index, dictionary page; bloom filter


class UnsupportedFile(ValueError):
    """The earlier file cannot be extended (encrypted, page index, other layout)."""


@dataclass
class Field:
    id: int
    type: int
    value: object  # int, float, bytes, bool, Struct, or (elem_type, list)


class Struct(list):
    """The fields of a Thrift struct (``Field``), in file order. ``raw``: the struct's own
    encoded bytes when it was decoded from a footer's row group list; the encoder writes
    them back as they are (a kept row group is never re-encoded field by field). So a
    changed row group is a new ``Struct`` (as ``_shift_row_group`` builds), never one
    edited in place."""

    raw: bytes | None = None
    scanned: bool = False  # from ``_scan_row_group``: only the row count was decoded


# The decoder walks a bytes object by index (``data[pos]`` is an int): a daily update
# decodes the footer of every file it extends, hundreds of column chunks each, and reading
# one byte at a time from a stream cost several times more.
def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        if n < 0x80:
            out.append(n)
            return bytes(out)
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def _list_head(data: bytes, pos: int) -> tuple[int, int, int]:
    """A list's (size, element type, position after the header)."""
    head = data[pos]
    size, elem = head >> 4, head & 0x0F
    if size == 15:
        size, pos = _read_varint(data, pos + 1)
        return size, elem, pos
    return size, elem, pos + 1


def _field_head(data: bytes, pos: int, last: int) -> tuple[int, int, int]:
    """A struct field's (type, id, position after the header); type ``_STOP`` at the end
    of the struct. ``last``: the previous field's id (short headers give a delta)."""
    head = data[pos]
    pos += 1
    ttype, delta = head & 0x0F, head >> 4
    if delta or ttype == _STOP:
        return ttype, last + delta, pos
    n, pos = _read_varint(data, pos)
    return ttype, _unzigzag(n), pos


def _read_value(data: bytes, pos: int, ttype: int, keep_raw: bool = False):
    if ttype == _I32 or ttype == _I64 or ttype == _I16:
        n, pos = _read_varint(data, pos)
        return (n >> 1) ^ -(n & 1), pos
    if ttype == _BINARY:
        n, pos = _read_varint(data, pos)
        end = pos + n
        if end > len(data):
            raise IndexError
        return data[pos:end], end
    if ttype == _STRUCT:
        return _read_struct(data, pos, keep_raw)
    if ttype in (_TRUE, _FALSE):  # a struct field: the value is in the type
        return ttype == _TRUE, pos
    if ttype == _LIST or ttype == _SET:
        size, elem, pos = _list_head(data, pos)
        items = []
        if elem in (_TRUE, _FALSE):  # a collection element: one byte per bool
            for _ in range(size):
                items.append(data[pos] == _TRUE)
                pos += 1
            return (elem, items), pos
        for _ in range(size):
            item, pos = _read_value(data, pos, elem, keep_raw)
            items.append(item)
        return (elem, items), pos
    if ttype == _BYTE:
        return data[pos], pos + 1
    if ttype == _DOUBLE:
        return struct.unpack_from("<d", data, pos)[0], pos + 8
    raise UnsupportedFile(f"Thrift type {ttype} not supported")


def _read_struct(data: bytes, pos: int, keep_raw: bool = False) -> tuple[Struct, int]:
    start = pos
    fields = Struct()
    last = 0
    while True:
        ttype, fid, pos = _field_head(data, pos, last)
        if ttype == _STOP:
            if keep_raw:
                fields.raw = data[start:pos]
            return fields, pos
        value, pos = _read_value(data, pos, ttype)
        fields.append(Field(fid, ttype, value))
        last = fid


def _write_value(out: bytearray, ttype: int, value) -> None:
    if ttype in (_TRUE, _FALSE):
        return
    if ttype == _BYTE:
        out.append(value & 0xFF)
    elif ttype in (_I16, _I32, _I64):
        out += _varint(_zigzag(value) & ((1 << 64) - 1))
    elif ttype == _DOUBLE:
        out += struct.pack("<d", value)
    elif ttype == _BINARY:
        out += _varint(len(value)) + value
    elif ttype in (_LIST, _SET):
        elem, items = value
        out.append((len(items) << 4 | elem) if len(items) < 15 else (0xF0 | elem))
        if len(items) >= 15:
            out += _varint(len(items))
        for item in items:
            if elem in (_TRUE, _FALSE):
                out.append(_TRUE if item else _FALSE)
            else:
                _write_value(out, elem, item)
    elif ttype == _STRUCT:
        _write_struct(out, value)
    else:
        raise UnsupportedFile(f"Thrift type {ttype} not supported")


def _write_struct(out: bytearray, fields: Struct) -> None:
    raw = getattr(fields, "raw", None)
    if raw is not None:
        out += raw
        return
    last = 0
    for f in fields:
        ttype = f.type
        if ttype in (_TRUE, _FALSE):
            ttype = _TRUE if f.value else _FALSE
        delta = f.id - last
        if 0 < delta <= 15:
            out.append(delta << 4 | ttype)
        else:
            out.append(ttype)
            out += _varint(_zigzag(f.id))
        _write_value(out, f.type, f.value)
        last = f.id
    out.append(_STOP)


def _skip_value(data: bytes, pos: int, ttype: int) -> int:
    """The position after a value, without building it."""
    if ttype == _I32 or ttype == _I64 or ttype == _I16:
        while data[pos] & 0x80:
            pos += 1
        return pos + 1
    if ttype == _STRUCT:
        return _skip_struct(data, pos)
    if ttype == _BINARY:
        n, pos = _read_varint(data, pos)
        return pos + n
    if ttype in (_TRUE, _FALSE):
        return pos
    if ttype == _LIST or ttype == _SET:
        size, elem, pos = _list_head(data, pos)
        if elem in (_TRUE, _FALSE, _BYTE):
            return pos + size
        for _ in range(size):
            pos = _skip_value(data, pos, elem)
        return pos
    if ttype == _BYTE:
        return pos + 1
    if ttype == _DOUBLE:
        return pos + 8
    raise UnsupportedFile(f"Thrift type {ttype} not supported")


def _skip_struct(data: bytes, pos: int) -> int:
    while True:
        head = data[pos]
        pos += 1
        ttype = head & 0x0F
        if ttype == _STOP:
            return pos
        if not head >> 4:  # a long-form field id: skipped, not decoded (the hot loop
            while data[pos] & 0x80:  # of a footer scan; ``_field_head`` costs a call)
                pos += 1
            pos += 1
        pos = _skip_value(data, pos, ttype)


def _scan_row_group(data: bytes, pos: int) -> tuple[Struct, int]:
    """A row group as its bytes (``raw``) and its row count only: what a kept row group
    needs. ``_decoded`` gives the other fields when they are needed."""
    start = pos
    rows = None
    last = 0
    while True:
        ttype, fid, pos = _field_head(data, pos, last)
        if ttype == _STOP:
            break
        if fid == RG_NUM_ROWS:
            rows, pos = _read_value(data, pos, ttype)
        else:
            pos = _skip_value(data, pos, ttype)
        last = fid
    group = Struct([Field(RG_NUM_ROWS, _I64, rows)] if rows is not None else [])
    group.raw = data[start:pos]
    group.scanned = True
    return group, pos


def _decoded(group: Struct) -> Struct:
    """Every field of a row group from ``_scan_row_group`` (or the group itself)."""
    if not group.scanned:
        return group
    try:
        full, _ = _read_struct(group.raw, 0, keep_raw=True)
    except (IndexError, struct.error):
        raise UnsupportedFile("truncated Thrift data") from None
    return full


def _read_footer_struct(data: bytes, scan_row_groups: bool) -> Struct:
    try:
        fields = Struct()
        pos = last = 0
        while True:
            ttype, fid, pos = _field_head(data, pos, last)
            if ttype == _STOP:
                return fields
            if fid == FMD_ROW_GROUPS and ttype == _LIST and scan_row_groups:
                value, pos = _scan_row_groups(data, pos)
            else:
                value, pos = _read_value(data, pos, ttype, keep_raw=fid == FMD_ROW_GROUPS)
            fields.append(Field(fid, ttype, value))
            last = fid
    except (IndexError, struct.error):
        raise UnsupportedFile("truncated Thrift data") from None


def _scan_row_groups(data: bytes, pos: int) -> tuple[tuple[int, list], int]:
    size, elem, pos = _list_head(data, pos)
    if elem != _STRUCT:
        raise UnsupportedFile("row groups that are not structs")
    groups = []
    for _ in range(size):
        group, pos = _scan_row_group(data, pos)
        groups.append(group)
    return (elem, groups), pos


def decode_footer(data: bytes, scan_row_groups: bool = False) -> Struct:
    """The footer's ``FileMetaData``; each of its row groups keeps its bytes (``raw``).
    ``scan_row_groups``: row groups as their bytes and row counts only (``_scan_row_group``),
    several times cheaper for a footer of many column chunks."""
    return _read_footer_struct(bytes(data), scan_row_groups)


def encode_footer(fields: Struct) -> bytes:
    out = bytearray()
    _write_struct(out, fields)
    return bytes(out)


def _get(fields: Struct, fid: int) -> Field | None:
    return next((f for f in fields if f.id == fid), None)


def _shift_row_group(rg: Struct, shift: int, ordinal_shift: int) -> Struct:
    """A copy of a RowGroup with every file offset moved by ``shift`` bytes."""
    out = Struct()
    for f in rg:
        if f.id == RG_FILE_OFFSET:
            out.append(Field(f.id, f.type, f.value + shift))
        elif f.id == RG_ORDINAL:
            out.append(Field(f.id, f.type, f.value + ordinal_shift))
        elif f.id == RG_COLUMNS:
            elem, chunks = f.value
            out.append(Field(f.id, f.type, (elem, [_shift_chunk(c, shift) for c in chunks])))
        else:
            out.append(f)
    return out


def _shift_chunk(chunk: Struct, shift: int) -> Struct:
    out = Struct()
    for f in chunk:
        if f.id in (CC_OFFSET_INDEX, CC_COLUMN_INDEX):
            raise UnsupportedFile("files with a page index are not supported")
        if f.id == CC_FILE_OFFSET and f.value:
            out.append(Field(f.id, f.type, f.value + shift))
        elif f.id == CC_META:
            meta = Struct(
                Field(m.id, m.type, m.value + shift) if m.id in CMD_OFFSETS else m for m in f.value
            )
            out.append(Field(f.id, f.type, meta))
        else:
            out.append(f)
    return out


def _chunk_start(chunk: Struct) -> int:
    meta = _get(chunk, CC_META)
    if meta is None:
        raise UnsupportedFile("column chunk without inline metadata")
    starts = [m.value for m in meta.value if m.id in (9, 11) and m.value]
    return min(starts)


def read_footer(path, scan_row_groups: bool = False) -> tuple[Struct, int]:
    """The decoded footer of ``path`` (local or S3: two ranged reads) and the byte offset
    where the footer starts (``scan_row_groups``: as for ``decode_footer``)."""
    with storage.random_access(path) as f:
        size = f.size()
        if size < 12:
            raise UnsupportedFile(f"{path}: not a Parquet file")
        tail = f.read_at(8, size - 8)
        if tail[4:] != MAGIC:
            raise UnsupportedFile(f"{path}: not a plain (unencrypted) Parquet file")
        length = struct.unpack("<I", tail[:4])[0]
        start = size - 8 - length
        return decode_footer(f.read_at(length, start), scan_row_groups), start


def row_group_rows(footer: Struct) -> list[int]:
    groups = _get(footer, FMD_ROW_GROUPS)
    return [_get(rg, RG_NUM_ROWS).value for rg in groups.value[1]] if groups else []


def _serialise(
    table: pa.Table, metadata: dict[str, str] | None, rows_per_group: int, write_options: dict
) -> bytes:
    import pyarrow.parquet as pq

    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): str(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    sink = pa.BufferOutputStream()
    # The options of io.write_parquet_to: zstd unless the caller names another codec.
    options = {"compression": "zstd", **write_options}
    pq.write_table(table, sink, row_group_size=rows_per_group, **options)
    return sink.getvalue().to_pybytes()


def append_rows(
    path: Path,
    previous: Path,
    keep_groups: int,
    tail: pa.Table,
    metadata: dict[str, str] | None = None,
    rows_per_group: int | None = None,
    **write_options,
) -> None:
    """Write ``path`` atomically: the first ``keep_groups`` row groups of ``previous``
    (each ``rows_per_group`` rows) followed by ``tail``, with ``metadata`` as for
    ``io.write_parquet``. The result is the file ``io.write_parquet(path, whole, metadata,
    row_group_size=rows_per_group, **write_options)`` gives for the whole table, provided
    the kept rows are the whole table's first rows and ``previous`` came from the same
    writer and options (the caller checks ``created_by``). ``path`` may be ``previous``.
    With ``keep_groups == 0`` nothing of ``previous`` is used: ``tail`` is the whole table,
    written directly (no footer decoded and merged in Python). ``rows_per_group``: the
    files' row group size (default ``ROW_GROUP_ROWS``).
    """
    if rows_per_group is None:
        rows_per_group = ROW_GROUP_ROWS
    if keep_groups == 0:
        storage.write_parquet(path, tail, metadata, row_group_size=rows_per_group, **write_options)
        return
    # The kept row groups are copied with their bytes: only their row counts are decoded.
    old_footer, old_footer_start = read_footer(previous, scan_row_groups=True)
    old_groups = _get(old_footer, FMD_ROW_GROUPS).value[1]
    if keep_groups > len(old_groups):
        raise UnsupportedFile(f"{previous}: has {len(old_groups)} row groups, not {keep_groups}")
    if any(_get(rg, RG_NUM_ROWS).value != rows_per_group for rg in old_groups[:keep_groups]):
        raise UnsupportedFile(f"{previous}: row groups of another size")
    tail_bytes = _serialise(tail, metadata, rows_per_group, write_options)
    tail_len = struct.unpack("<I", tail_bytes[-8:-4])[0]
    tail_footer_start = len(tail_bytes) - 8 - tail_len
    footer = decode_footer(tail_bytes[tail_footer_start:-8])
    writer, old_writer = _get(footer, FMD_CREATED_BY), _get(old_footer, FMD_CREATED_BY)
    if old_writer is None or writer is None or old_writer.value != writer.value:
        raise UnsupportedFile(f"{previous}: written by another Parquet writer")
    if keep_groups < len(old_groups):  # the kept bytes end where the next row group starts
        first_dropped = _decoded(old_groups[keep_groups])
        data_end = _chunk_start(_get(first_dropped, RG_COLUMNS).value[1][0])
    else:
        data_end = old_footer_start
    shift = data_end - len(MAGIC)
    tail_groups = _get(footer, FMD_ROW_GROUPS).value[1]
    new_groups = [_shift_row_group(rg, shift, keep_groups) for rg in tail_groups]
    rows = rows_per_group * keep_groups + _get(footer, FMD_NUM_ROWS).value
    merged = Struct()
    for f in footer:
        if f.id == FMD_NUM_ROWS:
            merged.append(Field(f.id, f.type, rows))
        elif f.id == FMD_ROW_GROUPS:
            merged.append(Field(f.id, f.type, (f.value[0], old_groups[:keep_groups] + new_groups)))
        else:
            merged.append(f)
    encoded = encode_footer(merged)
    rest = memoryview(tail_bytes)[len(MAGIC) : tail_footer_start]
    footer = encoded + struct.pack("<I", len(encoded)) + MAGIC
    # On S3 the kept bytes are copied inside the store when it can (UploadPartCopy).
    if storage.is_remote(path) and storage.write_prefix_and_rest(
        path, previous, data_end, bytes(rest) + footer
    ):
        return
    # The kept bytes are read before the new file replaces the old one (atomic rename, or
    # one upload on S3), so ``path`` may be ``previous`` itself.
    with storage.atomic_file(path) as (fd, _tmp):
        if storage.is_remote(previous):
            with storage.random_access(previous) as src:
                for offset in range(0, data_end, 1 << 24):
                    io.write_all(fd, src.read_at(min(1 << 24, data_end - offset), offset))
        else:
            with open(previous, "rb") as src:
                _copy(src.fileno(), fd, data_end)
        io.write_all(fd, rest)
        io.write_all(fd, footer)


def _copy(src_fd: int, dst_fd: int, count: int) -> None:
    """The first ``count`` bytes of ``src_fd`` to ``dst_fd`` (in the kernel when it can)."""
    import os

    offset = 0
    try:
        while offset < count:
            n = os.copy_file_range(src_fd, dst_fd, count - offset, offset)
            if n == 0:
                raise UnsupportedFile("source file shorter than its footer says")
            offset += n
        return
    except (AttributeError, OSError):
        pass  # no copy_file_range here (or across file systems): copy through memory
    while offset < count:
        chunk = os.pread(src_fd, min(1 << 24, count - offset), offset)
        if not chunk:
            raise UnsupportedFile("source file shorter than its footer says")
        io.write_all(dst_fd, chunk)
        offset += len(chunk)
