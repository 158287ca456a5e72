"""Small self-contained HTML pages for the Snakemake report, which shows HTML results inline
(a CSV or Markdown file would only be a download link there)."""

from __future__ import annotations

import html

import pandas as pd

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 14px; margin: 12px; color: #222; }
h1 { font-size: 18px; margin: 0 0 8px; } h2 { font-size: 15px; margin: 18px 0 6px; }
p, li { max-width: 70em; line-height: 1.4; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.text, th.text { text-align: left; white-space: normal; }
.PASS { color: #05641e; font-weight: bold; } .FAIL { color: #a40000; font-weight: bold; }
.NA { color: #666; font-weight: bold; } .outside, .differs { color: #a40000; font-weight: bold; }
code, pre { font-family: ui-monospace, monospace; font-size: 12px; } pre { white-space: pre-wrap; }
""".strip()


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def table(df: pd.DataFrame, decimals: dict[str, int | str] | None = None, css: dict[str, str] | None = None) -> str:
    """An HTML table: numbers right-aligned with the given decimals, text left-aligned, missing as an
    en dash; `css` maps a column to the column whose value is used as the cell's CSS class."""
    decimals, css = decimals or {}, css or {}
    numeric = {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])}
    head = "".join(f'<th class="{"" if c in numeric else "text"}">{html.escape(str(c))}</th>' for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            if v is None or (not isinstance(v, str) and pd.isna(v)):
                text = "–"
            elif c in numeric:
                d = decimals.get(c, 2)
                text = format(v, d) if isinstance(d, str) else f"{v:,.{d}f}"
            else:
                text = html.escape(str(v))
            cls = [] if c in numeric else ["text"]
            if c in css:
                cls.append(str(r[css[c]]).replace("/", ""))
            cells.append(f'<td class="{" ".join(cls)}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def escape(text: str) -> str:
    return html.escape(text)


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"
