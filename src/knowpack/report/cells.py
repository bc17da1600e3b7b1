"""Table-cell helpers the metrics' report tables share, and the report's plain-language summary.

Cells aggregate over seeds: the mean, with the min–max range in brackets when there are several seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from knowpack.sweep.spec import mixture_label


def cell(values: pd.Series, digits: int = 2, signed: bool = False) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    text = fmt.format(values.mean())
    if len(values) > 1 and values.max() > values.min():
        text += f" [{values.min():.{digits}f}–{values.max():.{digits}f}]"
    return text


def fmt(value, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def by_size_and_mixture(frame: pd.DataFrame, mixtures: list[str], render) -> pd.DataFrame:
    """Rows: number of facts; columns: mixtures (sweep order); cells: ``render(group)``."""
    if frame.empty:
        return pd.DataFrame()
    present = [m for m in mixtures if m in set(frame["mixture"])]
    rows = []
    for size in sorted(frame["unknown"].unique()):
        row = {"facts": int(size)}
        for mixture in present:
            group = frame[(frame["unknown"] == size) & (frame["mixture"] == mixture)]
            row[mixture_label(mixture)] = render(group) if len(group) else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def groups(frame: pd.DataFrame, mixtures: list[str]):
    """((size, mixture), rows) in size order, then the sweep's mixture order."""
    order = {m: i for i, m in enumerate(mixtures)}
    keys = sorted({(int(u), m) for u, m in zip(frame["unknown"], frame["mixture"])}, key=lambda k: (k[0], order[k[1]]))
    for size, mixture in keys:
        yield (size, mixture), frame[(frame["unknown"] == size) & (frame["mixture"] == mixture)]


def sizes_text(sizes: list) -> str:
    sizes = [int(s) for s in sizes]
    return str(sizes[0]) if len(sizes) == 1 else f"{', '.join(map(str, sizes[:-1]))} and {sizes[-1]}"


def summary(data) -> str:
    """One paragraph in plain words: what the report covers, then each metric's sentences (every number is
    computed from the tables)."""
    from knowpack.evaluate.metrics import in_order

    runs = data.evaluated
    if runs.empty:
        return (f"No run of this {data.kind} has a complete evaluation yet ({len(data.runs)} run(s) listed); "
                "finish the runs and make the report again.")
    sizes = sorted(runs["unknown"].unique())
    counts = [(runs["mixture"].nunique(), "mixture")]
    counts += [(runs[name].nunique(), name) for name in ("method", "rank") if runs[name].nunique() > 1]
    counts.append((runs["seed"].nunique(), "seed"))
    parts = [f"{n} {name}{'s' if n != 1 else ''}" for n, name in counts]
    sentences = [
        f"This report covers {len(runs)} evaluated run{'s' if len(runs) != 1 else ''}"
        + (f" of {len(data.runs)}" if len(runs) < len(data.runs) else "")
        + f": {sizes_text(sizes)} packed fact{'s' if sizes[-1] != 1 else ''}, {', '.join(parts[:-1])} and {parts[-1]}."
    ]
    for metric in in_order():
        sentences += metric.sentences(data)
    return " ".join(sentences)
