"""claims.md and claims.html: the checked claims (offloadbench.claims) as a reader sees them, each
verdict with why, what it was expected to be on this device and profile, what it rests on, the
numbers in words and the comparison table's formats, and the memory model's predicted verdict."""

from __future__ import annotations

from . import html

# What a reader sees for a summary key in claims.md.
LABELS = {
    "gpu_allocated_peak_bytes": "GPU allocated peak",
    "gpu_reserved_peak_bytes": "GPU reserved peak",
    "gpu_nvml_used_peak_bytes": "GPU peak (NVML)",
    "host_rss_peak_bytes": "host RSS peak",
    "host_rss_above_baseline_bytes": "host memory above the runtime baseline",
    "tokens_per_s": "tokens/s",
    "eval_ppl": "eval perplexity",
    "eval_loss": "eval loss",
}


def _predicted_cell(r: dict) -> str:
    p = r.get("predicted")
    if not p:
        return "–"
    return f"{p['verdict']}: {p['reason']}" if p["verdict"] else p["reason"]


def expected_note(r: dict) -> str:
    """The claims file's expectation for a result, as a reader sees it: "N/A on a CPU: why" or
    "PASS", led by "unexpected: expected" where the verdict differs; "–" for a result without one."""
    e = r.get("expected")
    if not e:
        return "–"
    said = e["verdict"] + (f" {e['when']}" if e.get("when") else "") + (f": {e['why']}" if e.get("why") else "")
    return said if r.get("as_expected", True) else f"unexpected: expected {said}"


def unexpected(results: list[dict]) -> list[dict]:
    return [r for r in results if r.get("expected") and not r.get("as_expected", True)]


def _expected_summary(results: list[dict]) -> str:
    off = unexpected(results)
    if not any(r.get("expected") for r in results):
        return ""
    if not off:
        return "Every verdict is the one the claims file expects for these runs."
    which = ", ".join(f"{r['id']} ({r['verdict']}, expected {r['expected']['verdict']})" for r in off)
    return f"Unexpected: {which}."


def to_markdown(profile: str, results: list[dict], predicted_for: str | None = None) -> str:
    head = "| claim | verdict | expected | statement | why | rests on |"
    if predicted_for:
        head += " predicted on a GPU |"
    lines = [f"# Claims ({profile} profile)", "", head, "|---" * head.count(" |") + "|"]
    for r in results:
        note = expected_note(r)
        note = f"**{note}**" if r in unexpected(results) else note
        cells = [r["id"], f"**{r['verdict']}**", note, r["statement"], r["reason"], r.get("rests_on", "")]
        row = "| " + " | ".join(cells) + " |"
        lines.append(row + (f" {_predicted_cell(r)} |" if predicted_for else ""))
    lines += ["", EXPECTED_NOTE + " " + _expected_summary(results)]
    if predicted_for:
        lines += ["", f"Predicted on a GPU: the verdict for the {predicted_for} (not a measurement)."]
    return "\n".join(lines) + "\n"


EXPECTED_NOTE = (
    "Expected: the verdict configs/claims.yaml (key expected) gives for the device these runs used and this "
    "profile, and why; a claim with no such entry is expected to PASS."
)


# What a reader sees for the other keys of a claim's numbers (claims.json keeps the keys as they are).
NUMBER_LABELS = {
    "accelerator_bytes": "accelerator memory",
    "predicted accelerator bytes": "predicted accelerator peak",
    "steps": "timed steps",
    "drop": "drop below the base model",
    "base": "base model",
}


def label(key: str) -> str:
    """A key of a claim's numbers in words: "host_rss_above_baseline_bytes: a / b" reads "host
    memory above the runtime baseline: a / b", "full: predicted accelerator bytes" "full:
    predicted accelerator peak"; a run name or a key already in words is left as it is."""
    head, sep, tail = key.partition(": ")
    if sep and head in LABELS:
        return f"{LABELS[head]}: {tail}"
    if sep and tail in NUMBER_LABELS:
        return f"{head}: {NUMBER_LABELS[tail]}"
    return LABELS.get(key) or NUMBER_LABELS.get(key) or key


def _fmt(key: str, value, sub: str = "") -> str:
    """A value of a claim's numbers in the comparison table's format: memory in GiB with 2 decimals,
    tokens/s whole, perplexity with 1 decimal, a drop in per cent, a loss difference as 1.0e-05."""
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(key, v, sub) for v in value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return html.escape(str(value))
    if "bytes" in key:
        return f"{value / 2**30:,.2f} GiB"
    if sub == "drop":
        return f"{value:.1%}"
    if sub == "steps":
        return f"{value:,}"
    if "tokens_per_s" in key:
        return f"{value:,.0f}"
    if "ppl" in key or "ppl" in sub:
        return f"{value:,.1f}"
    if value == 0:
        return "0"
    if abs(value) < 1e-2:  # a loss difference between twins: 1e-7 to 1e-3
        return f"{value:.1e}"
    return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"


def _numbers_html(numbers: dict) -> str:
    """A claim's numbers as a small table: one row per comparison (or per run), keys in words."""
    rows = []
    # below_base's "base" is the base model's value of the metric its runs' entries name
    metric = next((k for v in numbers.values() if isinstance(v, dict) for k in v if k in LABELS), "")
    for key, value in numbers.items():
        if isinstance(value, dict):
            cells = ", ".join(f"{html.escape(label(k))} = {_fmt(key, v, k)}" for k, v in value.items() if k != "ratio")
            ratio = f"{value['ratio']:.3f}" if isinstance(value.get("ratio"), int | float) else "–"
        else:
            cells, ratio = _fmt(key, value, metric if key == "base" else ""), "–"
        rows.append(
            f'<tr><td class="text">{html.escape(label(key))}</td><td class="text">{cells}</td><td>{ratio}</td></tr>'
        )
    head = '<tr><th class="text">compared</th><th class="text">values</th><th>ratio</th></tr>'
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def to_html(profile: str, results: list[dict], predicted_for: str | None = None) -> str:
    """The reviewer's page: each claim, its verdict, why, and the numbers it used."""
    counts = {v: sum(r["verdict"] == v for r in results) for v in ("PASS", "FAIL", "N/A")}
    body = [
        html.paragraph(
            f"{counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['N/A']} N/A. "
            "PASS and FAIL are judged on the numbers below; N/A means these runs cannot test the claim "
            "(for example accelerator memory on a CPU-only machine) and says why: nothing is estimated in its place. "
            + EXPECTED_NOTE
        )
    ]
    if summary := _expected_summary(results):
        cls = "unexpected" if unexpected(results) else "expected"
        body.append(f'<p class="{cls}">{html.escape(summary)}</p>')
    for r in results:
        cls = r["verdict"].replace("/", "")
        e, flag, expected_line = r.get("expected"), "", ""
        off = bool(e) and not r.get("as_expected", True)
        if off:
            flag = f' <span class="unexpected">unexpected: expected {html.escape(e["verdict"])}</span>'
        elif e and e["verdict"] != "PASS":
            flag = f' <span class="expected">expected {html.escape(e["when"] or "")}</span>'
        if e:
            note = html.escape(expected_note(r))
            expected_line = "<br><b>Expected.</b> " + (f'<span class="unexpected">{note}</span>' if off else note)
        body.append(
            f'<h2>{r["id"]}: <span class="{cls}">{r["verdict"]}</span>{flag}</h2>'
            f"<p><b>Claim.</b> {html.escape(r['statement'])}<br><b>Why.</b> {html.escape(r['reason'])}"
            f"{expected_line}<br>"
            f"<b>Runs.</b> {html.escape(', '.join(r['runs']))}"
            + (f"<br><b>Rests on.</b> {html.escape(r['rests_on'])}" if r.get("rests_on") else "")
            + (
                f"<br><b>Predicted on a GPU</b> (the {html.escape(predicted_for)}; not a measurement). "
                f"{html.escape(_predicted_cell(r))}"
                if predicted_for
                else ""
            )
            + "</p>"
        )
        if r["numbers"]:
            body.append(_numbers_html(r["numbers"]))
    return html.page(f"The paper's claims, checked ({profile} profile)", "\n".join(body))
