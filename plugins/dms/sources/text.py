"""Text whose decoding the extract leaves to the transforms.

Decoding a legacy encoding such as GB18030 is the most expensive part of reading an export,
and CPython does it holding the GIL: in the one extract task it took longer than pyarrow's
whole parse (bench/bench_pipeline.py). The transforms are mapped over the chunks and run in
parallel, so the extract reads such a file as latin-1 instead, which maps every byte to one
character and cannot fail, and marks each column with the real encoding. The transform
turns the column back into the file's bytes and decodes them, a column at a time.

This is exact only when the bytes the CSV parser looks for (delimiter, quote character,
CR, LF) never occur inside a multi-byte character. That holds for single-byte encodings
and for the common East Asian double-byte ones, as long as those bytes sit outside the
trail-byte ranges (`transport_encoding` checks it); anything else, UTF-16 for one, is still
transcoded by the reader itself.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dms.errors import SourceError

if TYPE_CHECKING:
    from collections.abc import Callable

# Field metadata on a string column whose values are the source's bytes read as latin-1:
# the encoding to decode them with.
DECODE_KEY = b"dms.decode"
# Schema metadata: the source file, named in decoding errors.
SOURCE_KEY = b"dms.source"
TRANSPORT = "latin-1"
ENCODING_HINT = (
    "check the spec's `encoding` (for example gb18030 for Chinese GBK/GB2312 exports, "
    "cp1252 or latin-1 for Western Windows exports)"
)

# Double-byte encodings whose lead bytes are all >= 0x81, so that an ASCII byte outside the
# trail-byte ranges below is always that ASCII character. Listed rather than guessed: an
# encoding missing here is merely transcoded by the reader, which is slower but exact.
_DOUBLE_BYTE = {"gb18030", "gbk", "gb2312", "big5", "big5hkscs", "cp950", "cp932", "shift_jis", "euc_jp", "euc_kr"}
# Trail bytes below 0x80 of those encodings: 0x40-0x7E (GBK, Big5, Shift_JIS) and the
# digits (the second and fourth byte of GB18030's four-byte sequences).
_TRAIL_ASCII = frozenset(range(0x30, 0x3A)) | frozenset(range(0x40, 0x7F))


def transport_encoding(encoding: str, structural: str) -> str | None:
    """`TRANSPORT` if a file in `encoding` can be parsed as latin-1 and decoded later, else None.

    `structural` holds the characters the parser splits on (delimiter and quote character);
    CR and LF are added here.
    """
    name = codecs.lookup(encoding).name
    if name in {"utf-8", "utf-8-sig", "latin-1", "iso8859-1"}:
        return None  # read natively: nothing to defer
    special = {ord(c) for c in structural + "\r\n"}
    if max(special) >= 0x80:
        return None
    if name in _DOUBLE_BYTE:
        return TRANSPORT if not special & _TRAIL_ASCII else None
    return TRANSPORT if _is_single_byte_ascii(name) else None


def _is_single_byte_ascii(name: str) -> bool:
    """An encoding of one byte per character that agrees with ASCII below 0x80 (cp1252, koi8_r...)."""
    try:
        ascii_part = bytes(range(0x80)).decode(name)
        high = bytes(range(0x80, 0x100)).decode(name, errors="replace")
    except (LookupError, UnicodeError):
        return False
    return ascii_part == "".join(map(chr, range(0x80))) and len(high) == 0x80


class Undecodable(NamedTuple):
    """A value whose bytes are not valid in the declared encoding: its row is rejected, not the chunk."""

    index: int  # position in the table
    column: str
    reason: str


def deferred(field: pa.Field) -> str | None:
    """The encoding a column still has to be decoded with, or None if it is plain text."""
    meta = field.metadata or {}
    raw = meta.get(DECODE_KEY)
    return raw.decode() if raw else None


def mark(field: pa.Field, encoding: str) -> pa.Field:
    return field.with_metadata({**(field.metadata or {}), DECODE_KEY: encoding.encode()})


def original(text: str, encoding: str | None) -> str:
    """A transported string as the source meant it (for messages: undecodable bytes are replaced)."""
    if encoding is None:
        return text
    return text.encode(TRANSPORT).decode(encoding, errors="replace")


def decode_column(
    column: pa.Array | pa.ChunkedArray,
    encoding: str,
    where: Callable[[int], str],
    undecodable: list[tuple[int, str]] | None = None,
) -> pa.Array:
    """Decode one transported column: a large_string array of the text as the file meant it.

    `where(i)` names value i ("file, row, column") for the error raised on bytes that are not
    valid `encoding`. With `undecodable`, such values become "" and (position, reason) is
    appended there instead, so the caller rejects those rows and keeps the others. Columns of
    few distinct values (cities, flags, codes) decode each value once; a sample of the column
    decides.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    array = array.cast(pa.large_string())
    if array.null_count:
        array = pc.fill_null(array, "")
    n = len(array)
    if n == 0 or _is_ascii(array):
        return array  # nothing above 0x7F: latin-1 and every supported encoding agree
    if undecodable is not None:
        try:
            return decode_column(array, encoding, where)
        except SourceError:
            # Only a chunk with bad bytes pays for the value-by-value pass.
            return _decode_each(array, encoding, where, undecodable)
    sample = array.slice(0, _SAMPLE)
    if len(pc.unique(sample)) * 2 <= len(sample):
        encoded = pc.dictionary_encode(array)
        indices = encoded.indices.to_numpy(zero_copy_only=False)

        def first_use(k: int) -> str:
            return where(int(np.flatnonzero(indices == k)[0]))

        return _decode_values(encoded.dictionary, encoding, first_use).take(encoded.indices)
    return _decode_values(array, encoding, where)


_SAMPLE = 2000


def _decode_each(
    array: pa.Array, encoding: str, where: Callable[[int], str], undecodable: list[tuple[int, str]]
) -> pa.Array:
    values: list[str] = []
    for i, value in enumerate(array.to_pylist()):
        raw = value.encode(TRANSPORT)
        try:
            values.append(raw.decode(encoding))
        except UnicodeDecodeError as exc:
            undecodable.append(
                (i, f"{where(i)}: byte 0x{raw[exc.start]:02x} is not valid {encoding}, the spec's `encoding`")
            )
            values.append("")
    return pa.array(values, type=pa.large_string())


def _is_ascii(array: pa.Array) -> bool:
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64, count=len(array) + 1, offset=array.offset * 8)
    data = array.buffers()[2]
    if data is None or offsets[-1] == offsets[0]:
        return True
    return bool(np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]].max() < 0x80)


def _decode_values(array: pa.Array, encoding: str, where: Callable[[int], str]) -> pa.Array:
    """Vectorised: the values are joined with NUL separators, turned back into bytes and
    decoded in one call each, and the separators found again with numpy. A value that itself
    holds a NUL makes the separators ambiguous; such a column is decoded value by value.
    """
    n = len(array)
    if n == 0:
        return array.cast(pa.large_string())
    joined = pc.binary_join(
        pa.LargeListArray.from_arrays(pa.array([0, n], pa.int64()), array), pa.scalar("\x00", pa.large_string())
    )
    text = joined[0].as_py()
    try:
        decoded = text.encode(TRANSPORT).decode(encoding)
    except UnicodeDecodeError as exc:
        # Count the separators before the bad byte to find its value.
        index = text.count("\x00", 0, exc.start)
        byte = text[exc.start].encode(TRANSPORT)[0]
        raise SourceError(f"{where(index)}: byte 0x{byte:02x} is not valid {encoding}; {ENCODING_HINT}") from None
    data = decoded.encode("utf-8")
    separators = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0)
    if len(separators) != n - 1:
        values = [v.encode(TRANSPORT).decode(encoding) for v in array.to_pylist()]
        return pa.array(values, type=pa.large_string())
    offsets = np.empty(n + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:n] = separators - np.arange(n - 1)
    offsets[n] = len(data) - (n - 1)
    body = data.replace(b"\x00", b"")
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(body)])


def decode_batch(
    batch: pa.RecordBatch | pa.Table, columns: list[str] | None = None, undecodable: list[Undecodable] | None = None
) -> pa.Table:
    """`batch` as a table with its transported columns (or those of `columns`) decoded to text.

    Bytes not valid in the declared encoding raise `SourceError` naming file, row and column;
    with `undecodable`, their values become "" and each is listed there instead, for the
    transform to reject those rows (`dms.transform.rejects.reject_undecodable`).
    """
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    source = (table.schema.metadata or {}).get(SOURCE_KEY, b"the source").decode()
    rows = table.column("__row") if "__row" in table.column_names else None
    for name in columns if columns is not None else table.column_names:
        position = table.schema.get_field_index(name)
        encoding = deferred(table.schema.field(position))
        if encoding is None:
            continue

        def where(i: int, name: str = name) -> str:
            row = f"row {rows[i].as_py()}" if rows is not None else f"value {i + 1}"
            return f"{source}: {row}, column {name!r}"

        found: list[tuple[int, str]] | None = [] if undecodable is not None else None
        table = table.set_column(position, name, decode_column(table.column(name), encoding, where, found))
        if undecodable is not None and found:
            undecodable.extend(Undecodable(i, name, reason) for i, reason in found)
    return table
