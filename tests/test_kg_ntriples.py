"""The N-Triples reader: every term and escape form, comments, malformed lines, compression, strictness."""

from __future__ import annotations

import bz2
import gzip

import pytest

from knowpack.errors import InputError
from knowpack.kg.ntriples import ReadStats, iri_label, literal_parts, parse_lines, read_triples, term_text

R = "http://dbpedia.org/resource/"
O = "http://dbpedia.org/ontology/"


def test_every_term_and_escape_form():
    lines = [
        "# a comment line",
        "",
        f"<{R}Caf\\u00E9_%28Paris%29> <{O}city> <{R}Paris> .",
        f"<{R}Emoji_\\U0001F600> <{O}genre> <{R}S%C3%A3o_Paulo> .",
        f'<{R}A> <http://www.w3.org/2000/01/rdf-schema#label> "say \\"hi\\"\\t\\u00E9 . # not a comment"@en-GB .',
        f'_:b1 <{O}year> "1999"^^<http://www.w3.org/2001/XMLSchema#gYear> . # trailing comment',
        f"<{R}X>\t<{O}p>\t_:node2.\r",
        f"<{R}Y><{O}p><{R}Z>.",
        f'<{R}W> <{O}p> "tab\\there\\nnew \\\\ back \\\' quote" .',
    ]
    triples, stats = parse_lines(lines)
    assert stats.lines == 9 and stats.skipped == 2 and stats.bad.count == 0 and len(triples) == 7
    subjects = [s for s, _, _ in triples]
    assert subjects[:2] == [f"<{R}Caf\\u00E9_%28Paris%29>", f"<{R}Emoji_\\U0001F600>"]
    assert term_text(triples[0][0], R) == "Café (Paris)"
    assert term_text(triples[1][0], R) == "Emoji 😀"
    assert term_text(triples[1][2], R) == "São Paulo"
    assert literal_parts(triples[2][2]) == ('say "hi"\té . # not a comment', "en-GB", None)
    assert triples[3] == ("_:b1", f"{O}year", '"1999"^^<http://www.w3.org/2001/XMLSchema#gYear>')
    assert triples[4][2] == "_:node2"
    assert triples[5] == (f"<{R}Y>", f"{O}p", f"<{R}Z>")
    assert literal_parts(triples[6][2])[0] == "tab\there\nnew \\ back ' quote"


def test_decoding_helpers():
    assert iri_label("Mercury_%28planet%29") == "Mercury (planet)"
    assert iri_label("\\uD83D\\uDE00_smile") == "😀 smile"  # a surrogate pair written as two \u escapes
    assert iri_label("100%_Pure") == "100% Pure"  # a lone percent sign is kept
    assert term_text('"plain"') == "plain"
    assert term_text("<http://example.org/ns#Thing_one>") == "Thing one"


def test_malformed_lines_are_counted_with_their_numbers():
    lines = [
        f"<{R}A> <{O}p> <{R}B> .",
        f"<{R}A B> <{O}p> <{R}C> .",  # space inside an IRI
        f"<{R}A> <{O}p> <{R}C>",  # no final dot
        f'<{R}A> <{O}p> "unterminated .',
        f"<{R}A> <{O}p> <{R}C> . extra",
        f'"literal subject" <{O}p> <{R}C> .',
        f"<{R}D> <{O}p> <{R}E> .",
    ]
    triples, stats = parse_lines(lines)
    assert len(triples) == 2
    assert stats.bad.count == 5
    assert [number for number, _ in stats.bad.examples] == [2, 3, 4, 5, 6]
    assert "line 2, 3, 4, 5, 6" in stats.bad.describe()


@pytest.mark.parametrize("opener", [open, bz2.open, gzip.open], ids=["plain", "bz2", "gz"])
def test_compressed_files_and_line_numbers_across_blocks(tmp_path, opener):
    path = tmp_path / "dump.ttl"
    body = "".join(f"<{R}S{i}> <{O}p> <{R}O{i}> .\n" for i in range(500)) + "broken line\n"
    with opener(path, "wb") as handle:
        handle.write(body.encode())
    stats = ReadStats()
    blocks = list(read_triples(path, stats, block_bytes=1000))
    assert len(blocks) > 5 and sum(len(b) for b in blocks) == 500
    assert blocks[-1].line[-1] == 500
    assert stats.bad.examples == [(501, "broken line")]


def test_strict_and_bad_line_limit(tmp_path):
    path = tmp_path / "dump.nt"
    path.write_text(f"<{R}A> <{O}p> <{R}B> .\nnot a triple\nnor this\n")
    with pytest.raises(InputError, match=r"dump.nt: 2 malformed line\(s\) \(line 2, 3.*--strict allows none"):
        list(read_triples(path, ReadStats(), strict=True))
    with pytest.raises(InputError, match="more than --max-bad-lines 1"):
        list(read_triples(path, ReadStats(), max_bad_lines=1))
    stats = ReadStats()
    assert sum(len(b) for b in read_triples(path, stats, max_bad_lines=2)) == 1 and stats.bad.count == 2


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        list(read_triples(tmp_path / "nope.bz2", ReadStats()))
    body = b"".join(f"<{R}S{i}> <{O}p> <{R}O{i}> .\n".encode() for i in range(2000))
    data = bz2.compress(body)
    truncated = tmp_path / "cut.bz2"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.bz2: truncated or corrupt"):
        list(read_triples(truncated, ReadStats()))
    gz = tmp_path / "cut.gz"
    packed = gzip.compress(body)
    gz.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InputError, match="cut.gz: truncated or corrupt"):
        list(read_triples(gz, ReadStats()))
