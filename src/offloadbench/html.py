"""Small self-contained HTML pages for the Snakemake report, which shows HTML results inline
(a CSV or Markdown file would only be a download link there)."""

from __future__ import annotations

import html
import re

import pandas as pd

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 14px; margin: 12px; color: #222; }
h1 { font-size: 18px; margin: 0 0 8px; } h2 { font-size: 15px; margin: 18px 0 6px; }
p, li { max-width: 70em; line-height: 1.4; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; white-space: normal; vertical-align: bottom; }
td.text, th.text { text-align: left; white-space: normal; }
.PASS { color: #05641e; font-weight: bold; } .FAIL { color: #a40000; font-weight: bold; }
.NA { color: #666; font-weight: bold; } .outside, .differs { color: #a40000; font-weight: bold; }
.unexpected { color: #a40000; background: #fff0c0; font-weight: bold; } .expected { color: #666; font-weight: normal; }
code, pre { font-family: ui-monospace, monospace; font-size: 12px; } pre { white-space: pre-wrap; }
""".strip()


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


# How wide a table may be at the least: the result pane of the Snakemake report on a 1400-px screen
# (its menu takes a quarter: ~1050 px) less the page's margins and a scrollbar. A table whose
# columns cannot shrink below it (min_width_px) is split into stacked tables.
TABLE_WIDTH_PX = 1000
FONT_PX = 14  # body font size (STYLE); th is bold
CELL_PAD_PX = 13  # 6 px padding either side, and a pixel of rounding
# Em widths of DejaVu Sans (system-ui on Debian; wider than Segoe UI or San Francisco), bold about 10% more.
_EM = {"digit": 0.643, "upper": 0.70, "narrow": 0.45, "space": 0.32, "other": 0.60}


def text_width_px(text: str, bold: bool = False) -> float:
    """The width of a line of text at the body font size, from character classes (no browser)."""
    em = 0.0
    for ch in text:
        if ch.isdigit():
            em += _EM["digit"]
        elif ch.isupper():
            em += _EM["upper"]
        elif ch == " ":
            em += _EM["space"]
        elif ch in ".,:;()[]|!'_-+/":
            em += _EM["narrow"]
        else:
            em += _EM["other"]
    return em * FONT_PX * (1.1 if bold else 1.0)


def table(
    df: pd.DataFrame,
    decimals: dict[str, int | str] | None = None,
    css: dict[str, str] | None = None,
    width_px: int = TABLE_WIDTH_PX,
) -> str:
    """An HTML table: numbers right-aligned with the given decimals, text left-aligned, missing as an
    en dash; `css` maps a column to the column whose value is used as the cell's CSS class. Header
    text wraps between words, text cells also after "+"; a table that still could not be
    narrower than `width_px` is split into stacked tables by column group (:func:`column_groups`),
    each led by the first column."""
    decimals, css = decimals or {}, css or {}
    numeric = {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])}
    heads = {c: f'<th class="{"" if c in numeric else "text"}">{header(str(c))}</th>' for c in df.columns}
    cells = {}
    for c in df.columns:
        column = []
        for _, r in df.iterrows():
            v = r[c]
            if v is None or (not isinstance(v, str) and pd.isna(v)):
                text = "–"
            elif c in numeric:
                d = decimals.get(c, 2)
                text = format(v, d) if isinstance(d, str) else f"{v:,.{d}f}"
            else:
                text = breakable(str(v))
            cls = [] if c in numeric else ["text"]
            if c in css:
                cls.append(str(r[css[c]]).replace("/", ""))
            column.append(f'<td class="{" ".join(cls)}">{text}</td>')
        cells[c] = column
    widths = {c: max(cell_min_width_px(x) for x in [heads[c], *cells[c]]) for c in df.columns}
    parts = [list(df.columns)]
    if len(df.columns) > 2 and sum(widths.values()) > width_px:
        parts = pack(list(df.columns), widths, width_px)

    def one(cols: list) -> str:
        rows = ["<tr>" + "".join(cells[c][i] for c in cols) + "</tr>" for i in range(len(df))]
        return f"<table><thead><tr>{''.join(heads[c] for c in cols)}</tr></thead><tbody>{''.join(rows)}</tbody></table>"

    return "\n".join(one(cols) for cols in parts)


def column_groups(columns: list) -> list[list]:
    """Neighbouring columns whose names start with the same word (GPU ..., host ..., NVMe ...)."""
    groups: list[list] = []
    for c in columns:
        word = str(c).split()[0] if str(c).split() else ""
        if groups and str(groups[-1][0]).split()[:1] == [word]:
            groups[-1].append(c)
        else:
            groups.append([c])
    return groups


def pack(columns: list, widths: dict, width_px: int) -> list[list]:
    """The columns after the first in as few stacked tables as keep each within width_px, every
    table led by the first column; a group of columns (column_groups) is not split."""
    lead, parts = columns[0], []
    for group in column_groups(columns[1:]):
        if parts and sum(widths[c] for c in [lead, *parts[-1], *group]) <= width_px:
            parts[-1] += group
        else:
            parts.append(list(group))
    return [[lead, *part] for part in parts]


_TAG = re.compile(r"<(/?)(\w+)([^>]*)>")


def cell_min_width_px(cell: str) -> float:
    """The least width a browser can give a <th> or <td> of this module's tables: its widest piece
    that cannot wrap (a header and a text cell wrap at spaces, <br> and <wbr>; a number cell does
    not), plus padding. Bold in a header and in <b>."""
    m = re.match(r"\s*<(th|td)([^>]*)>", cell)
    tag, attrs = (m[1], m[2]) if m else ("td", "")
    wraps = tag == "th" or re.search(r'class="[^"]*\btext\b', attrs) is not None
    bold = tag == "th"
    inner = cell[m.end() :] if m else cell
    widest, bolds = 0.0, 0
    pieces: list[tuple[str, bool]] = []  # (text, bold) of the current unbreakable run

    def close():
        nonlocal widest, pieces
        widest = max(widest, sum(text_width_px(t, b) for t, b in pieces))
        pieces = []

    pos = 0
    for t in [*_TAG.finditer(inner), None]:
        text = html.unescape(inner[pos : t.start() if t else len(inner)])
        for i, word in enumerate(text.split(" ") if wraps else [text]):
            if i:
                close()
            pieces.append((word, bold or bolds > 0))
        if t is None:
            break
        pos = t.end()
        end, name = t[1] == "/", t[2].lower()
        if name in ("br", "wbr") and (name == "br" or wraps):
            close()
        elif name in ("b", "strong"):
            bolds += -1 if end else 1
        elif name in ("th", "td") and end:
            break
    close()
    return widest + CELL_PAD_PX


def min_width_px(page_or_table: str) -> list[float]:
    """The least width of each table in an HTML page or fragment of this module's tables (the sum of
    its columns' cell_min_width_px): what a browser cannot shrink it below, without one."""
    out = []
    for t in re.findall(r"<table>.*?</table>", page_or_table, flags=re.S):
        columns: dict[int, float] = {}
        for row in re.findall(r"<tr>(.*?)</tr>", t, flags=re.S):
            for i, cell in enumerate(re.findall(r"<t[hd][^>]*>.*?</t[hd]>", row, flags=re.S)):
                columns[i] = max(columns.get(i, 0.0), cell_min_width_px(cell))
        out.append(sum(columns.values()))
    return out


def header(name: str) -> str:
    """A column name for a header cell, which wraps between its words (th is not nowrap), so a
    column is about as wide as its numbers, not its name: "GPU reserved peak (GiB)" takes 4 lines."""
    return html.escape(name)


def breakable(text: str) -> str:
    """Escaped text that may also wrap after "+", "→" and "," (an offload such as
    params:cpu+optimizer:cpu+activations:cpu has no space to wrap at)."""
    return re.sub(r"(\+|→|,)", r"\1<wbr>", html.escape(text))


def escape(text: str) -> str:
    return html.escape(text)


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"
