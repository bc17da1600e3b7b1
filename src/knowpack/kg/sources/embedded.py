"""The embedded fact graph (the default source): real facts from data files that pinned PyPI wheels ship, built
offline (``knowpack.kg.embedded``). Its build depends only on those pinned wheels, so it is cached across runs."""

from __future__ import annotations

from knowpack.kg.sources import BuildRequest, Source, register


def build(request: BuildRequest):
    from knowpack.kg.embedded import build_embedded

    config = request.config
    return build_embedded(templates=request.templates, seed=config.seed, per_bucket=config.per_bucket,
                          balance=config.balance, max_aliases=config.max_aliases)


def fingerprint() -> dict:
    from knowpack.kg.embedded import source_fingerprint

    return {"embedded": source_fingerprint()}


# The study's notebook keeps 30 facts per relation and bucket; so does the embedded graph, whose 100+ relations
# give thousands of questions without one relation dominating.
register(Source("embedded", "the embedded fact graph from pinned PyPI data wheels (offline)", build,
                default_per_bucket=30, fingerprint=fingerprint, cached=True))
