"""The report as one self-contained HTML file (figures embedded as base64 PNG, no scripts, no server needed)
and as Markdown (figures linked as the PNG files beside it)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9em; } .summary { background: #f5f7fa; padding: 0.8em 1em; border-radius: 6px; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; } img { max-width: 100%; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
"""


@dataclass
class Section:
    """A heading, a sentence saying what it shows, an optional figure and optional tables."""

    title: str
    text: str
    figure: Path | None = None
    tables: tuple[tuple[str, pd.DataFrame], ...] = ()


def render_html(title: str, meta: str, summary: str, sections: list[Section]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(meta)}</p>',
        f'<p class="summary">{html.escape(summary)}</p>',
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2><p>{html.escape(section.text)}</p>")
        if section.figure is not None:
            encoded = base64.b64encode(section.figure.read_bytes()).decode()
            parts.append(
                f'<figure><img alt="{html.escape(section.title)}" src="data:image/png;base64,{encoded}">'
                f"<figcaption>{html.escape(section.figure.name)}</figcaption></figure>"
            )
        for caption, table in section.tables:
            if len(table):
                parts.append(f"<p><b>{html.escape(caption)}</b></p>")
                parts.append(table.to_html(index=False, border=0, escape=True, na_rep="–"))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_markdown(title: str, meta: str, summary: str, sections: list[Section]) -> str:
    lines = [f"# {title}", "", f"_{meta}_", "", summary, ""]
    for section in sections:
        lines += [f"## {section.title}", "", section.text, ""]
        if section.figure is not None:
            lines += [f"![{section.title}]({section.figure.name})", ""]
        for caption, table in section.tables:
            if len(table):
                lines += [f"**{caption}**", "", _markdown_table(table), ""]
    return "\n".join(lines)


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])
