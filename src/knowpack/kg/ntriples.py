"""A streaming, vectorised N-Triples reader for DBpedia dumps (plain, .bz2 or .gz).

The study's notebook walks every character of the 22.8 M-line dump in Python (43 min per pass). Here a
background thread decompresses (bz2 and zlib release the GIL) while the main thread splits each ~32 MiB block
into lines and matches all of them at once with one RE2 expression (pyarrow.compute), so Python never touches
a single triple. Terms stay raw bytes (``<iri>``, ``_:b``, ``"lit"@en``) until the few that end up in questions
are decoded (``iri_label`` / ``literal_parts``).

A line that is neither a triple, a comment nor blank is *malformed*: it is counted and remembered with its line
number; the reader gives up only when ``strict`` or when more than ``max_bad_lines`` turn up.
"""

from __future__ import annotations

import bz2
import gzip
import queue
import re
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from knowpack.errors import InputError

BLOCK_BYTES = 32 << 20
KEPT_EXAMPLES = 20

# N-Triples 1.1 terminals (https://www.w3.org/TR/n-triples/#n-triples-grammar), as RE2 over raw bytes. Lines
# keep their "\n" (they are zero-copy slices of the block). Validation runs as a DFA over every line (fast); the
# capturing expression, which needs a slower engine, runs only on lines already known to be valid.
_UCHAR = r"\\u[0-9A-Fa-f]{4}|\\U[0-9A-Fa-f]{8}"
_IRI = rf'<(?:[^\x00-\x20<>"{{}}|^`\\]|{_UCHAR})*>'
_BNODE = r"_:[A-Za-z0-9_\x80-\xff](?:[A-Za-z0-9_.\-\x80-\xff]*[A-Za-z0-9_\-\x80-\xff])?"
_LITERAL = (
    rf'"(?:[^"\\\n\r]|\\[tbnrf"\'\\]|{_UCHAR})*"'
    rf"(?:@[a-zA-Z]+(?:-[a-zA-Z0-9]+)*|\^\^{_IRI})?"
)
_END = r"[ \t]*\.[ \t]*(?:#[^\n]*)?\r?\n$"
VALID_TRIPLE = rf"^[ \t]*(?:{_IRI}|{_BNODE})[ \t]*{_IRI}[ \t]*(?:{_IRI}|{_BNODE}|{_LITERAL}){_END}"
CAPTURE_TRIPLE = (
    r'^[ \t]*(?P<s><[^>]*>|_:[^ \t<]+?)[ \t]*<(?P<p>[^>]*)>[ \t]*'
    r'(?P<o><[^>]*>|_:[^ \t]+?|".*"(?:@[^ \t]+|\^\^<[^>]*>)?)' + _END
)
SKIPPED_LINE = r"^[ \t]*(?:#[^\n]*)?\r?\n$"  # comment or blank line


@dataclass
class BadLines:
    """Malformed lines seen so far: how many, and the first few with their line numbers."""

    count: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line_numbers: np.ndarray, texts: list[bytes]) -> None:
        self.count += len(line_numbers)
        for number, text in zip(line_numbers, texts):
            if len(self.examples) >= KEPT_EXAMPLES:
                break
            self.examples.append((int(number), text.decode("utf-8", "replace").rstrip("\r\n")[:160]))

    def describe(self) -> str:
        if not self.count:
            return "no malformed lines"
        where = ", ".join(str(number) for number, _ in self.examples[:5])
        first = self.examples[0][1] if self.examples else ""
        return f"{self.count} malformed line(s) (line {where}{'…' if self.count > 5 else ''}; first: {first!r})"


@dataclass
class TripleBlock:
    """The triples of one block: raw term bytes (subject, object) and predicate IRIs without brackets."""

    subject: pa.Array
    predicate: pa.Array
    object: pa.Array
    line: np.ndarray

    def __len__(self) -> int:
        return len(self.subject)


@dataclass
class ReadStats:
    lines: int = 0
    triples: int = 0
    skipped: int = 0  # comments and blank lines
    bad: BadLines = field(default_factory=BadLines)


# ---------------------------------------------------------------- opening and block reading


def open_dump(path: str | Path) -> BinaryIO:
    """Open a plain, bz2 or gzip file by its magic bytes (not its name); InputError when missing."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"{source}: file not found")
    with open(source, "rb") as probe:
        magic = probe.read(3)
    if magic == b"BZh":
        return bz2.open(source, "rb")
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(source, "rb")
    return open(source, "rb")


def read_blocks(path: str | Path, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield ``(first line number, block of whole lines)``; decompression runs ahead in a thread."""
    source = Path(path)
    stream = open_dump(source)
    blocks: queue.Queue = queue.Queue(maxsize=3)
    stop = threading.Event()

    def produce() -> None:
        carry = b""
        try:
            with stream:
                while not stop.is_set():
                    chunk = stream.read(block_bytes)
                    if not chunk:
                        break
                    data = carry + chunk
                    cut = data.rfind(b"\n") + 1
                    if cut == 0:
                        carry = data
                        continue
                    carry = data[cut:]
                    blocks.put(data[:cut])
            if carry:
                blocks.put(carry + b"\n")
            blocks.put(None)
        except (EOFError, OSError, ValueError) as err:  # truncated or corrupt compressed stream
            blocks.put(InputError(f"{source}: truncated or corrupt file ({err})"))

    thread = threading.Thread(target=produce, name="knowpack-dump-reader", daemon=True)
    thread.start()
    line_number = 1
    try:
        while (item := blocks.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield line_number, item
            line_number += item.count(b"\n")
    finally:
        stop.set()
        while thread.is_alive():  # unblock the producer if the consumer stopped early
            try:
                blocks.get_nowait()
            except queue.Empty:
                thread.join(0.05)


# ---------------------------------------------------------------- parsing


def split_lines(data: bytes) -> pa.BinaryArray:
    """Zero-copy lines of a block that ends with a newline; each value keeps its trailing ``\\n``."""
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    offsets = np.empty(len(newlines) + 1, dtype=np.int32)
    offsets[0] = 0
    offsets[1:] = newlines + 1
    return pa.BinaryArray.from_buffers(pa.binary(), len(newlines), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def parse_block(data: bytes, first_line: int, stats: ReadStats) -> TripleBlock:
    """Match every line of ``data`` (whole lines, ``\\n``-terminated) at once; count the rest in ``stats``."""
    lines = split_lines(data)
    numbers = np.arange(first_line, first_line + len(lines), dtype=np.int64)
    stats.lines += len(lines)
    valid = pc.match_substring_regex(lines, VALID_TRIPLE)
    if not pc.all(valid).as_py():
        invalid = pc.invert(valid)
        others = lines.filter(invalid)
        skipped = pc.match_substring_regex(others, SKIPPED_LINE)
        stats.skipped += pc.sum(skipped).as_py() or 0
        bad = pc.invert(skipped)
        if pc.any(bad).as_py():
            bad_numbers = numbers[invalid.to_numpy(zero_copy_only=False)][bad.to_numpy(zero_copy_only=False)]
            stats.bad.add(bad_numbers, others.filter(bad).to_pylist())
        lines = lines.filter(valid)
        numbers = numbers[valid.to_numpy(zero_copy_only=False)]
    matched = pc.extract_regex(lines, CAPTURE_TRIPLE)
    stats.triples += len(matched)
    return TripleBlock(matched.field("s"), matched.field("p"), matched.field("o"), numbers)


def read_triples(
    path: str | Path,
    stats: ReadStats,
    *,
    strict: bool = False,
    max_bad_lines: int = 1000,
    block_bytes: int = BLOCK_BYTES,
    progress=None,
) -> Iterator[TripleBlock]:
    """Stream ``path`` as TripleBlocks; InputError at the first malformed line when ``strict``, or once more
    than ``max_bad_lines`` were seen. ``progress`` (optional) is called with the number of bytes consumed."""
    for first_line, data in read_blocks(path, block_bytes):
        block = parse_block(data, first_line, stats)
        if stats.bad.count and (strict or stats.bad.count > max_bad_lines):
            limit = "--strict allows none" if strict else f"more than --max-bad-lines {max_bad_lines}"
            raise InputError(f"{path}: {stats.bad.describe()}; {limit}")
        if progress is not None:
            progress(len(data))
        yield block


def parse_lines(lines: Iterable[str]) -> tuple[list[tuple[str, str, str]], ReadStats]:
    """Parse a few lines (tests, small files): decoded ``(subject, predicate, object)`` terms and the stats."""
    data = "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode()
    stats = ReadStats()
    block = parse_block(data, 1, stats)
    triples = [
        (s.decode(), p.decode(), o.decode())
        for s, p, o in zip(block.subject.to_pylist(), block.predicate.to_pylist(), block.object.to_pylist())
    ]
    return triples, stats


# ---------------------------------------------------------------- term decoding

_UCHAR_RE = re.compile(r"\\u([0-9A-Fa-f]{4})|\\U([0-9A-Fa-f]{8})")
_ECHARS = {"t": "\t", "b": "\b", "n": "\n", "r": "\r", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
_ESCAPE_RE = re.compile(r"\\([tbnrf\"'\\])|\\u([0-9A-Fa-f]{4})|\\U([0-9A-Fa-f]{8})")
_LITERAL_RE = re.compile(r'^"(?P<lex>.*)"(?:@(?P<lang>[A-Za-z0-9-]+)|\^\^<(?P<dt>[^>]*)>)?$', re.DOTALL)


def _join_surrogates(text: str) -> str:
    """Merge UTF-16 surrogate pairs that some writers emit as two \\u escapes."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def unescape_uchar(text: str) -> str:
    """Resolve ``\\uXXXX`` and ``\\UXXXXXXXX`` escapes."""
    if "\\" not in text:
        return text
    return _join_surrogates(_UCHAR_RE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), text))


def iri_label(local_name: str) -> str:
    """Readable text of an IRI local name: escapes resolved, percent-decoded, underscores as spaces."""
    text = unescape_uchar(local_name)
    if "%" in text:
        text = urllib.parse.unquote(text, errors="replace")
    return text.replace("_", " ").strip()


def literal_parts(term: str) -> tuple[str, str | None, str | None]:
    """``"lexical"@lang`` / ``"lexical"^^<datatype>`` → (lexical form with escapes resolved, lang, datatype)."""
    match = _LITERAL_RE.match(term)
    if match is None:
        raise ValueError(f"not an N-Triples literal: {term[:80]}")

    def resolve(m: re.Match) -> str:
        if m.group(1):
            return _ECHARS[m.group(1)]
        return chr(int(m.group(2) or m.group(3), 16))

    lexical = _join_surrogates(_ESCAPE_RE.sub(resolve, match.group("lex")))
    return lexical, match.group("lang"), match.group("dt")


def term_text(term: str, namespace: str = "") -> str:
    """Human text of any term: a literal's lexical form, or an IRI's label (relative to ``namespace``)."""
    if term.startswith('"'):
        return literal_parts(term)[0]
    if term.startswith("<") and term.endswith(">"):
        iri = term[1:-1]
        if namespace and iri.startswith(namespace):
            return iri_label(iri[len(namespace):])
        return iri_label(iri.rsplit("/", 1)[-1].rsplit("#", 1)[-1])
    return term
