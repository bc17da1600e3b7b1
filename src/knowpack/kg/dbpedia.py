"""Questions from a DBpedia dump by the head-to-tail method (study.md §1), in one streaming pass.

The dump is read once (``ntriples.read_triples``); subject and object terms are dictionary-encoded into integer
entity ids over the whole dump, so popularity (subject + object mentions), the single-object test per
(subject, relation) and the seeded sampling are numpy operations on ~23 M integers. Only the sampled pool
(a few times the cap per relation and bucket) is ever turned into Python
strings, labelled (labels/redirects dumps, filtered with a vectorised set lookup) and cleaned: facts are examined
in seeded random order per relation and bucket, a little more than the cap at a time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from knowpack.errors import InputError
from knowpack.kg.aliases import build_aliases, distinct_names
from knowpack.kg.ntriples import ReadStats, iri_label, literal_parts, read_triples, term_text
from knowpack.kg.folder import BUCKETS
from knowpack.kg.select import FACT_COLUMNS, answer_in_question, cut_buckets, select_questions
from knowpack.kg.templates import Templates, fill
from knowpack.text import normalize

RESOURCE_NS = "http://dbpedia.org/resource/"
ONTOLOGY_NS = "http://dbpedia.org/ontology/"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
RDFS_DOMAIN = "http://www.w3.org/2000/01/rdf-schema#domain"
RDFS_RANGE = "http://www.w3.org/2000/01/rdf-schema#range"
REDIRECTS = ONTOLOGY_NS + "wikiPageRedirects"
# The study's junk answers: navigation pages and generic values that are not facts about the subject.
JUNK_PREFIXES = ("Category:", "Template:", "File:", "Portal:", "List_of_", "Lists_of_", "Death_of_")
JUNK_ANSWERS = frozenset(normalize(a) for a in (
    "Cross-platform", "Unknown", "Multiplatform", "Self-published", "Independent", "Independent (politician)",
    "Not applicable", "Various", "Various artists", "None", "Freeware", "Proprietary software",
))

Progress = Callable[[int], None]


@dataclass
class DumpScan:
    """The dump as integer arrays: one row per triple, entity ids into ``entities`` (dictionary of term keys)."""

    entities: pa.Array
    popularity: np.ndarray
    subject: np.ndarray
    relation: np.ndarray
    object: np.ndarray
    relations: list[str]
    stats: ReadStats


def _entity_keys(terms: pa.Array) -> pa.Array:
    """DBpedia resources become their local name; other terms stay raw (``<iri>``, ``_:b``, ``"lit"@en``)."""
    is_resource = pc.starts_with(terms, "<" + RESOURCE_NS)
    return pc.if_else(is_resource, pc.binary_slice(terms, len(RESOURCE_NS) + 1, -1), terms)


def _relation_keys(predicates: pa.Array) -> pa.Array:
    """Ontology properties become their local name (``birthPlace``); other predicates keep their full IRI."""
    in_ontology = pc.starts_with(predicates, ONTOLOGY_NS)
    return pc.if_else(in_ontology, pc.binary_slice(predicates, len(ONTOLOGY_NS), 1 << 30), predicates)


def scan_dump(path: str, *, strict: bool, max_bad_lines: int, progress: Progress | None = None) -> DumpScan:
    stats = ReadStats()
    subjects, objects, relations_per_block = [], [], []
    relation_ids: dict[bytes, int] = {}
    for block in read_triples(path, stats, strict=strict, max_bad_lines=max_bad_lines, progress=progress):
        subjects.append(_entity_keys(block.subject))
        objects.append(_entity_keys(block.object))
        encoded = pc.dictionary_encode(_relation_keys(block.predicate))
        mapping = np.array([relation_ids.setdefault(v, len(relation_ids)) for v in encoded.dictionary.to_pylist()],
                           dtype=np.int32)
        relations_per_block.append(mapping[encoded.indices.to_numpy()] if len(mapping) else np.zeros(0, np.int32))
    if stats.triples == 0:
        raise InputError(f"{path}: no usable triples ({stats.lines} lines; {stats.bad.describe()})")
    count = stats.triples
    encoded = pc.dictionary_encode(pa.chunked_array(subjects + objects, type=pa.binary()))
    del subjects, objects
    entities = encoded.chunks[0].dictionary
    ids = np.concatenate([chunk.indices.to_numpy() for chunk in encoded.chunks])
    del encoded
    subject_ids, object_ids = ids[:count], ids[count:]
    is_literal = pc.starts_with(entities, '"').to_numpy(zero_copy_only=False)
    mentioned_objects = object_ids[~is_literal[object_ids]]
    popularity = np.bincount(subject_ids, minlength=len(entities)) + np.bincount(mentioned_objects, minlength=len(entities))
    popularity[is_literal] = 0
    return DumpScan(entities, popularity.astype(np.int64), subject_ids, np.concatenate(relations_per_block),
                    object_ids, [key.decode("utf-8", "replace") for key in relation_ids], stats)


def single_object_rows(scan: DumpScan) -> tuple[np.ndarray, np.ndarray]:
    """Row index of one triple per (subject, relation) pair that has exactly one distinct object, and the
    number of pairs with several objects per relation."""
    key = scan.subject.astype(np.int64) * len(scan.relations) + scan.relation
    order = np.lexsort((scan.object, key))
    sorted_key, sorted_object = key[order], scan.object[order]
    new_pair = np.ones(len(order), dtype=bool)
    new_pair[1:] = sorted_key[1:] != sorted_key[:-1]
    new_object = new_pair.copy()
    new_object[1:] |= sorted_object[1:] != sorted_object[:-1]
    starts = np.flatnonzero(new_pair)
    distinct = np.add.reduceat(new_object.astype(np.int32), starts)
    multi = np.bincount(scan.relation[order[starts[distinct > 1]]], minlength=len(scan.relations))
    return order[starts[distinct == 1]], multi


def read_labels(paths: tuple[str, ...], wanted: set[bytes], *, strict: bool, max_bad_lines: int) -> dict[bytes, str]:
    """rdfs:label of the wanted entity keys (English or untagged literals first)."""
    labels: dict[bytes, tuple[int, str]] = {}
    value_set = pa.array(sorted(wanted), pa.binary())
    for path in paths:
        for block in read_triples(path, ReadStats(), strict=strict, max_bad_lines=max_bad_lines):
            keys = _entity_keys(block.subject)
            mask = pc.and_(pc.equal(block.predicate, RDFS_LABEL.encode()), pc.is_in(keys, value_set=value_set))
            for key, term in zip(keys.filter(mask).to_pylist(), block.object.filter(mask).to_pylist()):
                if not term.startswith(b'"'):
                    continue
                text, lang, _ = literal_parts(term.decode("utf-8", "replace"))
                rank = 0 if lang in (None, "en") else 1
                if text.strip() and (key not in labels or rank < labels[key][0]):
                    labels[key] = (rank, text.strip())
    return {key: text for key, (_, text) in labels.items()}


def read_redirects(paths: tuple[str, ...], wanted: set[bytes], *, strict: bool, max_bad_lines: int) -> dict[bytes, list[str]]:
    """Names of the redirect pages that point at the wanted entities (Wikipedia's alternative titles)."""
    names: dict[bytes, list[str]] = defaultdict(list)
    value_set = pa.array(sorted(wanted), pa.binary())
    for path in paths:
        for block in read_triples(path, ReadStats(), strict=strict, max_bad_lines=max_bad_lines):
            targets = _entity_keys(block.object)
            mask = pc.and_(pc.equal(block.predicate, REDIRECTS.encode()), pc.is_in(targets, value_set=value_set))
            sources = _entity_keys(block.subject.filter(mask)).to_pylist()
            for target, source in zip(targets.filter(mask).to_pylist(), sources):
                names[target].append(_key_text(source))
    return names


def read_domains(path: str | None, *, strict: bool, max_bad_lines: int) -> dict[str, str]:
    """Relation → rdfs:domain class (else rdfs:range) from the DBpedia ontology in N-Triples."""
    if path is None:
        return {}
    domains: dict[str, str] = {}
    ranges: dict[str, str] = {}
    for block in read_triples(path, ReadStats(), strict=strict, max_bad_lines=max_bad_lines):
        for s, p, o in zip(block.subject.to_pylist(), block.predicate.to_pylist(), block.object.to_pylist()):
            if p in (RDFS_DOMAIN.encode(), RDFS_RANGE.encode()) and s.startswith(b"<" + ONTOLOGY_NS.encode()):
                relation = s[len(ONTOLOGY_NS) + 1: -1].decode("utf-8", "replace")
                target = domains if p == RDFS_DOMAIN.encode() else ranges
                target.setdefault(relation, term_text(o.decode("utf-8", "replace"), ONTOLOGY_NS))
    if not domains and not ranges:
        raise InputError(f"{path}: no rdfs:domain or rdfs:range triples; give the DBpedia ontology as N-Triples")
    return {**ranges, **domains}


def ranked_redirects(names) -> list[str]:
    """Redirect titles, the forms a model most likely answers first: fewest words, then fewest characters (short
    names and abbreviations such as "USA" before "United States of America (country)"), then alphabetical; dump
    order never decides, so a popular object with hundreds of redirects keeps its common names under the cap."""
    return sorted(set(names), key=lambda name: (len(name.split()), len(name), name))


def _key_text(key: bytes) -> str:
    text = key.decode("utf-8", "replace")
    if text.startswith(("<", '"', "_:")):
        return term_text(text)
    return iri_label(text)


def _source_reason(subject_key: str, object_key: str, answer: str) -> str:
    """The study's cleaning rules that need the raw names."""
    if subject_key.startswith("_:") or object_key.startswith("_:"):
        return "blank node"
    if "__" in subject_key or "__" in object_key:
        return "name contains __"
    if subject_key.startswith(("List_of_", "Lists_of_")):
        return "list subject"
    if object_key.startswith(JUNK_PREFIXES) or normalize(answer) in JUNK_ANSWERS:
        return "junk answer"
    return ""


def build_dbpedia(
    *,
    dump: str,
    labels: tuple[str, ...],
    redirects: tuple[str, ...],
    ontology: str | None,
    templates: Templates,
    seed: int,
    per_bucket: int,
    balance: bool,
    max_aliases: int,
    strict: bool,
    max_bad_lines: int,
    progress: Progress | None = None,
) -> tuple[pa.Table, dict]:
    """Stream the dump and return (questions table, build summary)."""
    domains = read_domains(ontology, strict=strict, max_bad_lines=max_bad_lines)
    scan = scan_dump(dump, strict=strict, max_bad_lines=max_bad_lines, progress=progress)
    entity_bucket = cut_buckets(scan.popularity)
    rows, multi = single_object_rows(scan)
    cand_subject, cand_relation, cand_object = scan.subject[rows], scan.relation[rows], scan.object[rows]
    cand_bucket = entity_bucket[cand_subject]
    n_relations = len(scan.relations)
    singles = np.bincount(cand_relation * 3 + cand_bucket, minlength=3 * n_relations).reshape(n_relations, 3)
    triples_per_relation = np.bincount(scan.relation, minlength=n_relations)

    # Seeded random order inside each (relation, bucket). Facts are examined in that order, in rounds: the first
    # round takes 2 × cap + 10 per group, later rounds double the share of the groups that cleaning left short.
    has_template = np.array([name in templates for name in scan.relations], dtype=bool)
    random_rank = np.random.default_rng(seed).random(len(rows))
    group = cand_relation.astype(np.int64) * 3 + cand_bucket
    order = np.lexsort((random_rank, group))
    order = order[has_template[cand_relation[order]]]
    sorted_group = group[order]
    rank_in_group = np.arange(len(order)) - np.searchsorted(sorted_group, sorted_group, side="left")
    group_size = np.bincount(sorted_group, minlength=3 * n_relations)

    records: list[tuple] = []
    usable = np.zeros(3 * n_relations, dtype=np.int64)
    label_of: dict[bytes, str] = {}
    looked_up: set[bytes] = set()
    redirect_names: dict[bytes, list[str]] = {}
    capped: dict[bytes, int] = {}  # answers whose alias forms the cap cut: how many forms it dropped
    taken = np.zeros(3 * n_relations, dtype=np.int64)
    want = np.where(group_size > 0, 2 * per_bucket + 10, 0)
    while True:
        short = (usable < per_bucket) & (taken < group_size) & (want > taken)
        if not short.any():
            break
        batch = order[short[sorted_group] & (rank_in_group >= taken[sorted_group]) & (rank_in_group < want[sorted_group])]
        taken[short] = np.minimum(want[short], group_size[short])
        want[short] *= 2
        subject_keys = scan.entities.take(pa.array(cand_subject[batch])).to_pylist()
        object_keys = scan.entities.take(pa.array(cand_object[batch])).to_pylist()
        if labels:  # one pass over the labels dumps per round, for keys not looked up before
            new = (set(subject_keys) | set(object_keys)) - looked_up
            looked_up |= new
            label_of.update(read_labels(labels, new, strict=strict, max_bad_lines=max_bad_lines))
        if redirects:
            new = set(object_keys) - redirect_names.keys()
            found = read_redirects(redirects, new, strict=strict, max_bad_lines=max_bad_lines)
            redirect_names.update({key: found.get(key, []) for key in new})
        for index, subject_key, object_key in zip(batch, subject_keys, object_keys):
            subject_text = subject_key.decode("utf-8", "replace")
            object_text = object_key.decode("utf-8", "replace")
            answer = label_of.get(object_key) or _key_text(object_key)
            subject = label_of.get(subject_key) or _key_text(subject_key)
            relation = scan.relations[cand_relation[index]]
            reason = _source_reason(subject_text, object_text, answer)
            if not reason and answer_in_question(answer, fill(templates[relation][0], subject)):
                reason = "answer in question"
            usable[group[index]] += not reason
            names = [_key_text(object_key), *ranked_redirects(redirect_names.get(object_key, ()))]
            forms = len(distinct_names(answer, names))
            if forms > max_aliases:
                capped[object_key] = forms - max_aliases
            records.append((
                relation, subject_text, subject, answer if object_text.startswith('"') else object_text, answer,
                build_aliases(answer, names, max_aliases), int(scan.popularity[cand_subject[index]]),
                BUCKETS[cand_bucket[index]], domains.get(relation, "undefined"), float(random_rank[index]), reason,
            ))
    facts = pd.DataFrame.from_records(records, columns=list(FACT_COLUMNS))
    skipped: Counter = Counter()
    table, per_relation = select_questions(facts, templates, per_bucket=per_bucket, balance=balance, skipped=skipped)

    relation_rows = []
    for rid, name in enumerate(scan.relations):
        reasons = {reason: count for (relation, reason), count in skipped.items() if relation == name}
        if multi[rid]:
            reasons["several objects"] = int(multi[rid])
        if not has_template[rid] and singles[rid].sum():
            reasons["no template"] = int(singles[rid].sum())
        relation_rows.append({
            "relation": name,
            "triples": int(triples_per_relation[rid]),
            "facts": {bucket: int(singles[rid, b]) for b, bucket in enumerate(BUCKETS)},
            "questions": per_relation.get(name, dict.fromkeys(BUCKETS, 0)),
            "skipped": reasons,
        })
    bucket_of_triple = entity_bucket[scan.subject]
    summary = {
        "lines": scan.stats.lines,
        "triples": scan.stats.triples,
        "comment_or_blank_lines": scan.stats.skipped,
        "bad_lines": scan.stats.bad.count,
        "bad_line_examples": scan.stats.bad.examples,
        "entities": int((scan.popularity > 0).sum()),
        "relations": n_relations,
        "buckets": {
            bucket: {"entities": int(((entity_bucket == b) & (scan.popularity > 0)).sum()),
                     "triples": int((bucket_of_triple == b).sum())}
            for b, bucket in enumerate(BUCKETS)
        },
        "relation_table": relation_rows,
        "aliases": {"rule": "label, then redirects by fewest words and characters, one per normalised form",
                    "cap": max_aliases, "answers_capped": len(capped), "forms_dropped": int(sum(capped.values()))},
    }
    return table, summary

