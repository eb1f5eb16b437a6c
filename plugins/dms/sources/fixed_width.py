"""Fixed-width text exports, streamed in chunks of `chunk_rows` rows with every value as a string.

Each column sits at the same position in every line: `start` (1-based, by default right
after the previous column) and `width`, counted in bytes of the file's encoding (`unit:
bytes`, the mainframe and legacy GBK/GB18030 convention: a Chinese character takes two
bytes, or four for the rarest) or in characters (`unit: characters`, Unicode code points).

Row numbers (`__row`, and `MalformedRow.row`) are the physical line numbers of the file,
1-based, as an editor shows them: lines skipped by `skip_rows` count, and so do blank lines
(empty, or only spaces and tabs), which are skipped without being rows. Values are the text
at the column's position, unstripped (the transform strips). Content after the last column
is ignored. A line that does not reach the start of every column, or (in bytes) whose
column boundary falls inside a multi-byte character, is a `MalformedRow`, never a silently
garbled value; a line that merely ends inside the last column gives it the shorter value.

The file is read in blocks of whole lines, and each block is decoded, checked and sliced
with numpy as a whole: memory is about a block and a chunk, whatever the size of the file.
The encoding must be ASCII-compatible (a newline is the byte 0x0A and never part of another
character), which holds for UTF-8, the Chinese, Japanese and Korean legacy encodings and the
single-byte code pages; UTF-16 exports are refused with an error.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from dms.errors import SourceError
from dms.sources.base import ROW_COLUMN, ChunkBuilder, MalformedRow, SourceChunk, int64_array
from dms.sources.text import ENCODING_HINT
from dms.spec import FixedWidthSource

# Lines are read this many bytes at a time; a block's decoding and index arrays take a few
# times its size, so 1 MiB keeps a task's memory small and the numpy calls large.
DEFAULT_BLOCK_SIZE = 1 << 20
# A "line" longer than this has no line breaks to speak of: the file is not a fixed-width
# export (or is one without newlines, which this reader cannot split into records).
MAX_LINE_BYTES = 16 << 20
# More malformed lines than this (or than chunk_rows, if larger) waiting for one chunk means
# the layout or the encoding is wrong, not a few bad lines: fail instead of rejecting them all.
MAX_MALFORMED_PER_CHUNK = 10_000

_NEWLINE = 0x0A
_CR = 0x0D
_UTF8 = {"utf-8", "utf-8-sig"}
# Encodings in which every character encodes on its own, the same bytes wherever it stands
# (no shift states, no pairs of code points sharing one code): a block's character
# boundaries can then be found from a table of each character's encoded length. Any other
# ASCII-compatible encoding is still read exactly, by a slower byte-by-byte decoder.
_PER_CHARACTER = {"gb18030", "gbk", "gb2312", "big5", "cp950", "cp932", "shift_jis", "euc_jp", "euc_kr", "cp949"}


@dataclass(frozen=True)
class _Column:
    name: str
    start: int  # 0-based offset in the line, in the source's unit
    end: int  # exclusive


def iter_fixed_width_chunks(
    path: Path, source: FixedWidthSource, chunk_rows: int, *, block_size: int = DEFAULT_BLOCK_SIZE
) -> Iterator[SourceChunk]:
    """Stream `path` as `SourceChunk`s whose batches have exactly `chunk_rows` rows (the last one fewer).

    Every column is a string. Malformed lines travel in `SourceChunk.malformed` with their
    line number, text and reason. An empty file, or one with nothing after `skip_rows`,
    yields nothing. A problem with the file itself (missing, undecodable, no line breaks)
    raises `SourceError` naming the file and, where known, the line and column.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    path = Path(path)
    reader = _Reader(path, source, chunk_rows, block_size)
    yield from reader.chunks()


def _layout(path: Path, source: FixedWidthSource) -> list[_Column]:
    columns: list[_Column] = []
    seen: set[str] = set()
    position = 0
    for column in source.columns:
        # The spec does not check names (yet); a duplicate would silently shadow a column.
        name = column.name
        if not name.strip():
            raise SourceError(f"{path}: a fixed-width column has an empty name")
        if name == ROW_COLUMN:
            raise SourceError(f"{path}: column name {ROW_COLUMN!r} is reserved")
        if name in seen:
            raise SourceError(f"{path}: column name {name!r} is given twice")
        seen.add(name)
        start = column.start - 1 if column.start is not None else position
        columns.append(_Column(name, start, start + column.width))
        position = start + column.width
    return columns


def _check_encoding(path: Path, encoding: str) -> str:
    name = codecs.lookup(encoding).name
    if name in _UTF8:
        return "utf-8"  # a BOM is taken off the first line by the reader
    try:
        ascii_compatible = "\r\n a0".encode(name) == b"\r\n a0"
    except UnicodeError:
        ascii_compatible = False
    if not ascii_compatible:
        raise SourceError(
            f"{path}: encoding {encoding!r} does not write a newline as the byte 0x0A, so its lines cannot be "
            "found; a fixed-width export must be in UTF-8, a legacy code page or a CJK encoding such as gb18030 "
            "(convert a UTF-16 file, or check the spec's `encoding`)"
        )
    return name


def _encoded_length(code: int, encoding: str) -> int:
    """The length of one character in `encoding`, 0 if it has none (surrogates, missing characters)."""
    try:
        return len(chr(code).encode(encoding))
    except UnicodeError:
        return 0


@lru_cache(maxsize=8)
def _encoded_lengths(encoding: str) -> np.ndarray:
    """The encoded length of each character of the Basic Multilingual Plane (0 if it has none).

    uint8 and looked up with np.take: three times faster than an int64 table on a block.
    """
    return np.array([_encoded_length(code, encoding) for code in range(0x10000)], dtype=np.uint8)


# The UTF-8 length of each character of the Basic Multilingual Plane (surrogates never occur
# in decoded text); characters beyond it take 4 bytes.
_UTF8_LENGTHS = np.repeat(np.array([1, 2, 3], dtype=np.uint8), [0x80, 0x800 - 0x80, 0x10000 - 0x800])


@lru_cache(maxsize=8)
def _single_byte(encoding: str) -> bool:
    """Every byte one character (cp1252, latin-1, koi8_r...): no boundary can split a character."""
    try:
        return len(bytes(range(0x100)).decode(encoding, errors="replace")) == 0x100 and all(
            len(bytes([b]).decode(encoding, errors="replace")) == 1 for b in range(0x100)
        )
    except LookupError:
        return False


@dataclass
class _Block:
    """One block of whole lines, decoded: where each line's text is, in units and in UTF-8."""

    utf8: np.ndarray  # the block's text as UTF-8 bytes (uint8), line ends included
    line_start: np.ndarray  # per line: position of its first unit
    line_end: np.ndarray  # per line: position after its last unit (before CR LF)
    # unit position -> UTF-8 offset, or None when units are the UTF-8 bytes themselves
    to_utf8: np.ndarray | None
    # per unit position: a character starts there (bytes unit); None when every position does
    boundary: np.ndarray | None

    def utf8_offsets(self, positions: np.ndarray) -> np.ndarray:
        return positions if self.to_utf8 is None else self.to_utf8[positions]


class _Reader:
    def __init__(self, path: Path, source: FixedWidthSource, chunk_rows: int, block_size: int) -> None:
        self.path = path
        self.source = source
        self.chunk_rows = chunk_rows
        self.block_size = block_size
        self.columns = _layout(path, source)
        self.encoding = _check_encoding(path, source.encoding)
        self.bytes_unit = source.unit == "bytes"
        self.unit = "bytes" if self.bytes_unit else "characters"
        # A line must reach the start of every column (a column starting exactly where the
        # line ends is ""); one ending inside the last column gives it a shorter value.
        self.min_length = max(c.start for c in self.columns)
        self.full_length = max(c.end for c in self.columns)
        self.starts_last = max(self.columns, key=lambda c: c.start)
        fields = [pa.field(c.name, pa.string()) for c in self.columns]
        self.schema = pa.schema([pa.field(ROW_COLUMN, pa.int64()), *fields])
        self.builder = ChunkBuilder(self.schema, chunk_rows)
        self.max_malformed = max(chunk_rows, MAX_MALFORMED_PER_CHUNK)

    def chunks(self) -> Iterator[SourceChunk]:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed in the finally below, across yields
        except FileNotFoundError:
            raise SourceError(f"{self.path}: file not found") from None
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot open: {exc.strerror or exc}") from None
        try:
            yield from self._blocks(handle)
        finally:
            handle.close()
        yield from self.builder.finish()

    def _blocks(self, handle: BinaryIO) -> Iterator[SourceChunk]:
        lines_done = 0  # physical lines before the next block
        to_skip = self.source.skip_rows
        carry = b""
        first = True
        while True:
            try:
                data = handle.read(self.block_size)
            except OSError as exc:
                raise SourceError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
            at_end = not data  # before the BOM goes: a block of only a BOM is not the end
            if first:
                first = False
                if self.encoding == "utf-8" and data.startswith(codecs.BOM_UTF8):
                    data = data[len(codecs.BOM_UTF8) :]  # positions count from after the BOM
            buffer = carry + data if carry else data
            if at_end and buffer and not buffer.endswith(b"\n"):
                buffer += b"\n"  # the last line without a line break is a line all the same
            cut = buffer.rfind(b"\n") + 1
            if cut == 0:
                if at_end:
                    break
                if len(buffer) > MAX_LINE_BYTES:
                    raise SourceError(
                        f"{self.path}: line {lines_done + 1} is longer than {MAX_LINE_BYTES} bytes: the file has no "
                        "line breaks where a fixed-width export has one per record"
                    )
                carry = buffer
                continue
            block, carry = buffer[:cut], buffer[cut:]
            count = block.count(b"\n")
            if to_skip:
                # Skipped lines are not decoded: a banner may be in another encoding than the data.
                skipped = min(to_skip, count)
                position = 0
                for _ in range(skipped):
                    position = block.index(b"\n", position) + 1
                block = block[position:]
                lines_done += skipped
                to_skip -= skipped
                count -= skipped
            if count:
                yield from self._read_block(block, lines_done + 1)
                lines_done += count
            if at_end:
                break
        if to_skip:
            raise SourceError(
                f"{self.path}: the file has only {lines_done} lines, but skip_rows is {self.source.skip_rows}"
            )

    def _read_block(self, raw: bytes, first_line: int) -> Iterator[SourceChunk]:
        """Turn a block of whole lines (each ending in LF) into numbered rows and malformed lines."""
        block = self._decode(raw, first_line)
        lengths = block.line_end - block.line_start
        start8 = block.utf8_offsets(block.line_start)
        end8 = block.utf8_offsets(block.line_end)
        numbers = np.arange(first_line, first_line + len(lengths), dtype=np.int64)

        # Blank lines: nothing but spaces and tabs between the line's start and end.
        text = block.utf8
        solid = np.concatenate(([0], np.cumsum((text != 0x20) & (text != 0x09), dtype=np.int64)))
        blank = solid[end8] == solid[start8]

        reasons: dict[int, str] = {}
        short = ~blank & (lengths < self.min_length)
        for i in np.flatnonzero(short):
            last = self.starts_last
            reasons[int(i)] = (
                f"line has {lengths[i]} {self.unit}, the columns need {self.full_length} "
                f"(column {last.name!r} starts at {self.unit[:-1]} {last.start + 1})"
            )
        candidate = ~blank & ~short
        if block.boundary is not None:
            for column in self.columns:
                begin = block.line_start + np.minimum(column.start, lengths)
                end = block.line_start + np.minimum(column.end, lengths)
                split_start = candidate & ~block.boundary[begin]
                split_end = candidate & ~block.boundary[end] & ~split_start
                for i in np.flatnonzero(split_start):
                    reasons.setdefault(
                        int(i), f"column {column.name!r} starts inside a character at byte {column.start + 1}"
                    )
                for i in np.flatnonzero(split_end):
                    # The column's last byte is the first byte of a character that goes on past it.
                    reasons.setdefault(int(i), f"column {column.name!r} ends inside a character at byte {column.end}")

        good = candidate.copy()
        if reasons:
            bad = np.fromiter(reasons, dtype=np.int64, count=len(reasons))
            good[bad] = False
            for i in np.sort(bad):
                line = text[start8[i] : end8[i]].tobytes().decode("utf-8")
                self.builder.add_malformed(MalformedRow(int(numbers[i]), line, reasons[int(i)]))
            self._check_flood()

        rows = np.flatnonzero(good)
        if not len(rows):
            return
        line_start, line_length = block.line_start[rows], lengths[rows]
        arrays = [int64_array(numbers[rows])]
        for column in self.columns:
            begin = block.utf8_offsets(line_start + np.minimum(column.start, line_length))
            end = block.utf8_offsets(line_start + np.minimum(column.end, line_length))
            arrays.append(_gather(text, begin, end))
        yield from self.builder.add(pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def _check_flood(self) -> None:
        waiting = self.builder.waiting_malformed
        if waiting <= self.max_malformed:
            return
        first = self.builder.first_waiting_malformed
        assert first is not None
        raise SourceError(
            f"{self.path}: {waiting} malformed lines within one chunk (the first at line {first.row}: {first.reason}); "
            f"check the spec's `columns`, `unit` ({self.unit}) and `encoding` ({self.source.encoding})"
        )

    # -- decoding -------------------------------------------------------------------------

    def _decode(self, raw: bytes, first_line: int) -> _Block:
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            raise SourceError(self._decode_error(raw, exc, first_line)) from None
        source = np.frombuffer(raw, dtype=np.uint8)
        if self.bytes_unit:
            line_start, line_end = _lines(source)
            if self.encoding == "utf-8":
                # A UTF-8 character starts at every byte but a continuation byte (10xxxxxx).
                boundary = np.append((source & 0xC0) != 0x80, True)
                return _Block(source, line_start, line_end, None, boundary)
            utf8 = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
            if _single_byte(self.encoding):
                to_utf8 = _character_starts(utf8)  # byte i is character i
                return _Block(utf8, line_start, line_end, to_utf8, None)
            to_utf8, boundary = self._byte_map(raw, text, utf8)
            return _Block(utf8, line_start, line_end, to_utf8, boundary)
        # Characters: the units are the characters of the decoded text.
        utf8 = source if self.encoding == "utf-8" else np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        starts8, ends8 = _lines(utf8)
        to_utf8 = _character_starts(utf8)
        return _Block(utf8, np.searchsorted(to_utf8, starts8), np.searchsorted(to_utf8, ends8), to_utf8, None)

    def _byte_map(self, raw: bytes, text: str, utf8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For a multi-byte legacy encoding: which bytes start a character, and their UTF-8 offsets."""
        size = len(raw)
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        if self.encoding in _PER_CHARACTER:
            # mode="clip" looks characters beyond the BMP up as U+FFFF; they are fixed after.
            encoded = np.take(_encoded_lengths(self.encoding), codes, mode="clip")
            utf8_lengths = np.take(_UTF8_LENGTHS, codes, mode="clip")
            astral = np.flatnonzero(codes > 0xFFFF)
            if len(astral):
                encoded[astral] = [_encoded_length(int(c), self.encoding) for c in codes[astral]]
                utf8_lengths[astral] = 4
            # The table is exact only if the text encodes back to the very same bytes, and
            # character by character (it does for these encodings, barring a byte sequence
            # that decodes to a character whose own code is another sequence).
            if encoded.all() and int(encoded.sum(dtype=np.int64)) == size and text.encode(self.encoding) == raw:
                source_at = np.concatenate(([0], np.cumsum(encoded, dtype=np.int64)))
                utf8_at = np.concatenate(([0], np.cumsum(utf8_lengths, dtype=np.int64)))
                boundary = np.zeros(size + 1, dtype=bool)
                boundary[source_at] = True
                to_utf8 = np.zeros(size + 1, dtype=np.int64)
                to_utf8[source_at] = utf8_at
                return to_utf8, boundary
        return _byte_map_slowly(raw, self.encoding, len(utf8))

    def _decode_error(self, raw: bytes, exc: UnicodeDecodeError, first_line: int) -> str:
        """Name the line and column of the first undecodable byte (only called on failure)."""
        source = np.frombuffer(raw, dtype=np.uint8)
        line_start, _ = _lines(source)
        index = int(np.searchsorted(line_start, exc.start, side="right")) - 1
        begin = int(line_start[index])
        offset = exc.start - begin  # bytes before the bad one in its line
        # In characters: everything before the first bad byte decodes, so this counts them.
        position = offset if self.bytes_unit else len(raw[begin : exc.start].decode(self.encoding))
        where = next((c for c in self.columns if c.start <= position < c.end), None)
        column = f"column {where.name!r}" if where else "outside the columns"
        return (
            f"{self.path}: line {first_line + index}, {column} (byte {offset + 1} of the line): "
            f"byte 0x{raw[exc.start]:02x} is not valid {self.source.encoding}; {ENCODING_HINT}"
        )


def _lines(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (before CR LF) of each line of a block whose every line ends in LF."""
    newline = np.flatnonzero(data == _NEWLINE)
    start = np.empty(len(newline), dtype=np.int64)
    start[0] = 0
    start[1:] = newline[:-1] + 1
    end = newline.copy()
    crlf = end > start
    crlf[crlf] = data[end[crlf] - 1] == _CR
    end[crlf] -= 1
    return start, end


def _character_starts(utf8: np.ndarray) -> np.ndarray:
    """The UTF-8 offset of each character, and the length of the text after the last."""
    return np.append(np.flatnonzero((utf8 & 0xC0) != 0x80), len(utf8))


def _byte_map_slowly(raw: bytes, encoding: str, utf8_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Character boundaries found by feeding a decoder one byte at a time: exact for any
    ASCII-compatible encoding, slow (about a second per few MB), so only the fallback."""
    size = len(raw)
    boundary = np.zeros(size + 1, dtype=bool)
    to_utf8 = np.zeros(size + 1, dtype=np.int64)
    boundary[0] = True
    decoder = codecs.getincrementaldecoder(encoding)()
    written = 0
    for i in range(size):
        out = decoder.decode(raw[i : i + 1])
        if out:
            written += len(out.encode("utf-8"))
            boundary[i + 1] = True
            to_utf8[i + 1] = written
    assert written == utf8_size, "the byte-by-byte decoding disagrees with the block's"
    return to_utf8, boundary


def _gather(data: np.ndarray, begin: np.ndarray, end: np.ndarray) -> pa.Array:
    """A string array of data[begin[i]:end[i]] for every i, without a Python loop per value."""
    lengths = end - begin
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    if total:
        # Index of every byte to take: each value's start, then consecutive bytes.
        index = np.repeat(begin - offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
        body = data[index]
    else:
        body = np.zeros(0, dtype=np.uint8)
    # A block is far below 2 GiB, so 32-bit offsets (pa.string, as the CSV reader gives) do.
    return pa.Array.from_buffers(
        pa.string(), len(lengths), [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(body)]
    )
