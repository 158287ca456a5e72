"""The report's HTML pages: every table fits the report's result pane on a 1400-px screen.

Judged without a browser by html.min_width_px (what a table cannot shrink below: each column's widest
piece that cannot wrap, at DejaVu Sans widths, which a headless Chromium measured 0-12% narrower on
these pages), on the pages made from the shipped reference results (results/reference/default).
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from conftest import REPO

from offloadbench import aggregate, claims, html, reference

REF = REPO / "results" / "reference" / "default"
SCREEN_PX = 1400


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("pages")
    table = pd.read_csv(REF / "comparison.csv")
    aggregate.write_tables(table, out / "comparison", "Fine-tuning methods compared.", aggregate.GROUPS)
    rel = aggregate.relative(table, "full")
    aggregate.write_tables(rel, out / "relative", "Each run relative to full.", aggregate.RELATIVE_GROUPS)
    aggregate.write_memory_table(pd.read_csv(REF / "memory.csv"), out / "memory", "default")
    doc = json.loads((REF / "claims.json").read_text())
    (out / "claims.html").write_text(claims.to_html(doc["profile"], doc["claims"], doc["predicted_for"]))
    tolerances = {"loss": 0.01, "gain": 0.25, "memory": 0.25, "time": 2.0}
    reference.run_compare(REF / "comparison.csv", REF, tolerances, out / "reference.json")
    return {p.stem: p.read_text() for p in out.glob("*.html")}


def test_the_width_budget_is_the_report_pane_of_a_1400_px_screen():
    """The Snakemake report shows a result in an iframe beside its menu (a quarter of the window):
    ~1050 px of 1400, less 2 x 12 px margin and a scrollbar."""
    assert html.TABLE_WIDTH_PX <= SCREEN_PX * 3 / 4 - 24 - 15


@pytest.mark.parametrize("name", ["comparison", "relative", "memory", "claims", "reference"])
def test_every_table_of_the_report_fits_without_scrolling_sideways(pages, name):
    widths = html.min_width_px(pages[name])
    assert widths, f"{name}.html has no table"
    too_wide = [round(w) for w in widths if w > html.TABLE_WIDTH_PX]
    assert not too_wide, f"{name}.html: tables at least {too_wide} px wide, more than {html.TABLE_WIDTH_PX}"


def test_header_text_wraps_between_words():
    cell = f"<th>{html.header('GPU reserved peak (GiB)')}</th>"
    narrow = html.cell_min_width_px(cell)
    assert narrow == pytest.approx(html.text_width_px("reserved", bold=True) + html.CELL_PAD_PX)
    assert narrow < html.text_width_px("GPU reserved peak (GiB)", bold=True) / 2


def test_numbers_do_not_wrap_and_text_wraps_at_spaces_and_plus_signs():
    number = html.cell_min_width_px('<td class="">1,234,567.89</td>')
    assert number == pytest.approx(html.text_width_px("1,234,567.89") + html.CELL_PAD_PX)
    offload = html.breakable("params:cpu+optimizer:cpu+activations:cpu → no copy")
    assert html.cell_min_width_px(f'<td class="text">{offload}</td>') == pytest.approx(
        html.text_width_px("activations:cpu") + html.CELL_PAD_PX
    )


def test_a_table_too_wide_for_the_pane_is_split_into_its_column_groups_each_led_by_the_first_column():
    where = ("GPU", "host", "NVMe", "DeepSpeed est.")
    cols = {f"{w} {k} (GiB)": [1.0, 2.0] for w in where for k in ("predicted", "measured", "ratio")}
    df = pd.DataFrame({"run": ["zero3_offload_nvme", "full"], **cols})
    out = html.table(df, width_px=700)
    widths = html.min_width_px(out)
    assert len(widths) > 1 and max(widths) <= 700
    heads = [[c for c in df.columns if f">{html.header(str(c))}<" in t] for t in out.split("</table>")[:-1]]
    assert all(h[0] == "run" for h in heads), "each part is led by the run column"
    assert sorted(c for h in heads for c in h[1:]) == sorted(cols), "every other column exactly once"
    for h in heads:  # a group (GPU ..., host ...) stays in one table
        assert len({c.split()[0] for c in h[1:]}) * 3 == len(h) - 1
    assert len(html.min_width_px(html.table(df[["run", *list(cols)[:3]]]))) == 1, "a table that fits stays one table"


RAW_KEY = re.compile(r"\b(?:\w+_bytes|tokens_per_s|eval_ppl|eval_loss)\b")


def test_the_claims_page_names_numbers_in_words_not_summary_keys(pages):
    """claims.html's numbers read "host memory above the runtime baseline: a / b", "accelerator
    memory", "eval perplexity", not host_rss_above_baseline_bytes, accelerator_bytes, eval_ppl."""
    text = re.sub(r"<[^>]+>", " ", pages["claims"])
    assert not RAW_KEY.findall(text), sorted(set(RAW_KEY.findall(text)))
    assert "host memory above the runtime baseline: zero3_offload_nvme / zero3_offload_cpu" in text
    assert "accelerator memory" in text and "full: predicted accelerator peak" in text
    assert "drop below the base model = 59.0%" in text, "a drop in per cent, as the claim's reason gives it"
    cpu = pd.read_csv(REF / "comparison.csv").set_index("run").loc["zero3_offload_cpu", "host above baseline (GiB)"]
    assert f"zero3_offload_cpu = {cpu:.2f} GiB" in text, "GiB with 2 decimals, as in the comparison table"
    assert "timed steps = 5, 5" in text and "[5, 5]" not in text


def test_claims_md_names_no_summary_keys():
    doc = json.loads((REF / "claims.json").read_text())
    md = claims.to_markdown(doc["profile"], doc["claims"], doc["predicted_for"])
    assert not RAW_KEY.findall(md), sorted(set(RAW_KEY.findall(md)))
