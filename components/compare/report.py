"""The report: a self-contained HTML page and a Markdown summary.

The HTML has its figures as data URIs, inline CSS, no scripts and no external fetches, so it
renders inside the KFP UI's sandboxed iframe.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from components.common.result import Role
from components.compare.inputs import RunOutputs

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       margin: 24px auto; max-width: 1200px; color: #222; background: #fff; line-height: 1.45; }
h1 { font-size: 1.5em; margin-bottom: 4px; }
.headline { font-size: 1.25em; font-weight: 600; padding: 12px 16px; border-radius: 6px;
            background: #eef5ff; border-left: 6px solid #1f77b4; }
.warning { background: #fff3e0; border-left-color: #e65100; }
.muted { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border: 1px solid #ccc; padding: 6px 12px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
td.best { font-weight: 700; background: #eaf7ea; }
td.missing { color: #b00020; font-style: italic; }
.decision { padding: 12px 16px; border-radius: 6px; border: 2px solid; margin: 16px 0; }
.decision.promote { border-color: #2e7d32; background: #f1f8f1; }
.decision.keep { border-color: #757575; background: #f7f7f7; }
.decision.refuse { border-color: #c62828; background: #fdf0f0; }
figure { margin: 24px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-weight: 600; margin-bottom: 6px; }
"""


@dataclass(frozen=True)
class Row:
    """One line of the key-figures table: a metrics.json number or a derived text."""

    label: str
    key: str  # metrics.json field
    fmt: str = "{:.4f}"
    higher_is_better: bool | None = None  # None: no "best" highlight
    text: Callable[[RunOutputs], str] | None = None  # for non-numeric rows

    def value(self, run: RunOutputs) -> float | str | None:
        """The row's value for one run (None: missing or not finite)."""
        return self.text(run) if self.text else run.numbers[self.key]


ROWS = (
    Row("Test accuracy", "test_accuracy", "{:.4f}", True),
    Row("Test loss", "test_loss", "{:.4f}", False),
    Row("Training time (s)", "train_seconds", "{:,.1f}", False),
    Row("Training images/s", "images_per_second", "{:,.0f}", True),
    Row("Parameters (total)", "params_total", "{:,.0f}"),
    Row("Parameters (trainable)", "params_trainable", "{:,.0f}"),
    Row("Epochs run", "epochs_run", "{:.0f}"),
    Row("Pretrained weights", "pretrained", "{}", None, lambda r: "yes" if r.pretrained else "no"),
    Row(
        "Weights sha256",
        "weights_sha256",
        "{}",
        None,
        lambda r: (r.metrics.weights_sha256 or "-")[:12],
    ),
)


# Characters that Markdown (CommonMark + GFM tables, strikethrough) reads as syntax; `_` only
# where it can open or close emphasis (not between letters or digits, as in fashion_mnist).
_MARKDOWN_SYNTAX = re.compile(r"([\\`*\[\]#!|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def markdown_text(value: object) -> str:
    """Text shown literally in Markdown: one line, HTML escaped, Markdown syntax backslashed.

    Display names, class names and champion-file fields come from files a user or another run
    wrote; KFP's Markdown viewer renders inline HTML, so `<img ...>` must not pass, and `|` must
    not open a table cell.
    """
    text = " ".join(str(value).split())
    return _MARKDOWN_SYNTAX.sub(r"\\\1", html.escape(text, quote=False))


def describe(run: RunOutputs) -> str:
    """The model as the headline names it."""
    if run.role == Role.CNN:
        if "scratch" in run.display_name.lower():  # the name already says it
            return f"the {run.display_name}"
        return f"the CNN trained from scratch ({run.display_name})"
    name = run.display_name
    if "pretrain" in name.lower() or "random" in name.lower():  # the name already says which
        state = "" if run.pretrained else ", NOT pretrained"
    else:
        state = ", pretrained weights" if run.pretrained else ", NOT pretrained: random init"
    return f"transfer learning ({name}{state})"


def significance_text(tested: dict[str, Any] | None) -> str:
    """The verdict on the difference: significant or not distinguishable, test, p and interval."""
    if not tested:
        return ""
    if not tested.get("computed"):
        return f"Significance could not be computed: {tested['reason'].split(', so ')[0]}."
    pair = tested["pairs"][0]
    verdict = (
        f"significant at the {tested['alpha']:.0%} level"
        if pair["significant"]
        else f"not distinguishable at the {tested['alpha']:.0%} level"
    )
    return (
        f"The difference is {verdict} ({tested['test']}: p = {pair['p_value_holm']:.3g}; "
        f"{tested['confidence']:.0%} bootstrap confidence interval of the difference "
        f"{pair['ci_low'] * 100:+.2f} to {pair['ci_high'] * 100:+.2f} points, "
        f"over {pair['images']:,} test images)."
    )


def headline(
    cnn: RunOutputs,
    transfer: RunOutputs,
    winner: str | None,
    tested: dict[str, Any] | None = None,
) -> str:
    """One sentence that answers the question, with the honest caveat first when needed.

    With the paired statistics (`tested`, see compare.significance) a second sentence says
    whether the difference is significant at the 5% level or not distinguishable from noise.
    """
    caveat = ""
    if not transfer.pretrained:
        caveat = (
            "The transfer model was NOT pretrained (random initialisation), so this run does not "
            "measure transfer learning. "
        )
    if winner is None:
        missing = [r.display_name for r in (cnn, transfer) if r.accuracy is None]
        return (
            f"{caveat}No winner: test accuracy is missing or not a number for {', '.join(missing)}."
        )
    runs = {Role.CNN: cnn, Role.TRANSFER: transfer}
    best, other = runs[winner], runs[Role.TRANSFER if winner == Role.CNN else Role.CNN]
    gain = (best.accuracy - other.accuracy) * 100
    verb = "beats" if gain > 0 else "ties with (fewer parameters)"
    sentence = (
        f"{describe(best)} {verb} {describe(other)} by {gain:+.1f} points: "
        f"{best.accuracy:.4f} vs {other.accuracy:.4f} test accuracy."
    )
    verdict = significance_text(tested)
    return caveat + sentence[0].upper() + sentence[1:] + (f" {verdict}" if verdict else "")


def _cell(row: Row, run: RunOutputs, best: float | None) -> tuple[str, str]:
    value = row.value(run)
    if value is None:
        return "missing", run.missing.get(row.key, "missing")
    text = row.fmt.format(value)
    return ("best" if best is not None and value == best else ""), text


def table_rows(cnn: RunOutputs, transfer: RunOutputs) -> list[tuple[str, list[tuple[str, str]]]]:
    """(label, [(css class, text) per model]) for the key-figures table."""
    rows = []
    for row in ROWS:
        values = [row.value(run) for run in (cnn, transfer)]
        numeric = [v for v in values if isinstance(v, float)]
        best = None
        if row.higher_is_better is not None and len(numeric) == 2 and numeric[0] != numeric[1]:
            best = max(numeric) if row.higher_is_better else min(numeric)
        rows.append((row.label, [_cell(row, run, best) for run in (cnn, transfer)]))
    return rows


CONFUSED_PAIRS = 8  # rows of the most-confused-pairs table


def confused_pairs(
    run: RunOutputs, count: int = CONFUSED_PAIRS
) -> list[tuple[str, str, float, int]]:
    """(true class, predicted class, share of the true class, images) of the largest errors."""
    if run.confusion is None:
        return []
    matrix = run.confusion.astype(float)
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    np.fill_diagonal(shares, 0.0)
    order = np.argsort(-shares, axis=None, kind="stable")[:count]
    names = run.class_names
    pairs = []
    for flat in order:
        true, predicted = np.unravel_index(flat, shares.shape)
        if shares[true, predicted] <= 0:
            break
        images = int(run.confusion[true, predicted])
        pairs.append((names[true], names[predicted], float(shares[true, predicted]), images))
    return pairs


def confused_html(cnn: RunOutputs, transfer: RunOutputs) -> str:
    """A table per model of its most confused (true, predicted) class pairs."""
    esc = html.escape
    parts = []
    for run in (cnn, transfer):
        rows = "".join(
            f"<tr><td>{esc(true)}</td><td>{esc(predicted)}</td><td>{share:.1%}</td>"
            f"<td>{count}</td></tr>"
            for true, predicted, share, count in confused_pairs(run)
        )
        if rows:
            parts.append(
                f"<h3>{esc(run.display_name)}</h3><table class='confused'><thead><tr>"
                "<th>true class</th><th>predicted as</th><th>share of the class</th>"
                f"<th>images</th></tr></thead><tbody>{rows}</tbody></table>"
            )
    if not parts:
        return ""
    return "<h2 id='confused'>Most confused class pairs</h2>" + "".join(parts)


def significance_rows(tested: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(label, value) lines of the significance section (the same in HTML and Markdown)."""
    if not tested:
        return []
    if not tested.get("computed"):
        return [("Significance", f"could not be computed: {tested['reason']}")]
    rows = [("Test", f"{tested['test']}, {tested['correction']}-corrected across pairs")]
    for pair in tested["pairs"]:
        name = f"{pair['second']} - {pair['first']}"
        rows += [
            (f"{name}: accuracy difference", f"{pair['accuracy_difference'] * 100:+.2f} points"),
            (
                f"{name}: {tested['confidence']:.0%} confidence interval",
                f"{pair['ci_low'] * 100:+.2f} to {pair['ci_high'] * 100:+.2f} points "
                f"(paired bootstrap, {tested['resamples']:,} resamples)",
            ),
            (
                f"{name}: p-value",
                f"{pair['p_value_holm']:.4g} (uncorrected {pair['p_value']:.4g}; "
                f"{pair['second_only_right']} images only {pair['second']} got right, "
                f"{pair['first_only_right']} only {pair['first']})",
            ),
            (
                f"{name}: verdict",
                f"significant at the {tested['alpha']:.0%} level"
                if pair["significant"]
                else f"not distinguishable at the {tested['alpha']:.0%} level",
            ),
        ]
    return rows


def significance_html(tested: dict[str, Any] | None) -> str:
    """The significance section of the HTML report."""
    rows = significance_rows(tested)
    if not rows:
        return ""
    esc = html.escape
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return f"<h2>Is the difference real?</h2><table id='significance'><tbody>{body}</tbody></table>"


def render_html(
    cnn: RunOutputs,
    transfer: RunOutputs,
    comparison: dict[str, Any],
    figures: dict[str, tuple[str, bytes]],
) -> str:
    """The self-contained HTML report."""
    esc = html.escape
    warning = " warning" if not transfer.pretrained or comparison["winner"] is None else ""
    head = "".join(f"<th>{esc(r.display_name)}</th>" for r in (cnn, transfer))
    body = "".join(
        f"<tr><td>{esc(label)}</td>"
        + "".join(f'<td class="{css}">{esc(text)}</td>' for css, text in cells)
        + "</tr>"
        for label, cells in table_rows(cnn, transfer)
    )
    champion = comparison["champion"]
    previous = champion.get("previous") or {}
    previous_text = (
        f"Champion before this run: {previous.get('display_name') or previous.get('model')} "
        f"({previous.get('test_accuracy')})"
        if previous
        else "There was no champion before this run"
    )
    notes = "".join(f"<li>{esc(note)}</li>" for note in comparison["notes"])
    figure_html = "".join(
        f'<figure id="{esc(name.removesuffix(".png"))}"><figcaption>{esc(caption)}</figcaption>'
        f'<img alt="{esc(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode("ascii")}"></figure>'
        for name, (caption, png) in figures.items()
    )
    dataset = comparison["dataset"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CNN vs transfer learning on {esc(dataset["name"])}</title>
<style>{CSS}</style></head>
<body>
<h1>CNN from scratch vs transfer learning on {esc(dataset["name"])}</h1>
<p class="muted">Dataset version {esc(str(dataset["version"]))}, test split
{esc(str(dataset["test_split_sha256"])[:12])}, compared at {esc(comparison["created_at"])}.</p>
<p class="headline{warning}" id="headline">{esc(comparison["headline"])}</p>
{significance_html(comparison.get("significance"))}
<h2>Key figures</h2>
<table id="key-figures"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>
<div class="decision {esc(champion["decision"])}" id="champion">
<strong>Champion gate: {esc(champion["decision"])}</strong>
(margin {champion["margin"] * 100:.2f} points).<br>{esc(champion["reason"])}<br>
<span class="muted">{esc(previous_text)}. Champion file: {esc(champion["champion_uri"])}</span>
</div>
{f"<h2>Notes</h2><ul id='notes'>{notes}</ul>" if notes else ""}
{confused_html(cnn, transfer)}
<h2>Figures</h2>
{figure_html}
</body></html>
"""


def render_markdown(cnn: RunOutputs, transfer: RunOutputs, comparison: dict[str, Any]) -> str:
    """The Markdown summary (KFP Markdown artifact): headline, key figures, gate, notes.

    Every piece of text goes through `markdown_text`.
    """
    md = markdown_text
    lines = [
        f"# CNN from scratch vs transfer learning on {md(comparison['dataset']['name'])}",
        "",
        f"**{md(comparison['headline'])}**",
        "",
        f"| | {md(cnn.display_name)} | {md(transfer.display_name)} |",
        "|---|---:|---:|",
    ]
    for label, cells in table_rows(cnn, transfer):
        values = [f"**{md(text)}**" if css == "best" else md(text) for css, text in cells]
        lines.append(f"| {md(label)} | {values[0]} | {values[1]} |")
    tested_rows = significance_rows(comparison.get("significance"))
    if tested_rows:
        lines += ["", "**Is the difference real?**", ""]
        lines += [f"- {md(label)}: {md(value)}" for label, value in tested_rows]
    champion = comparison["champion"]
    lines += ["", f"**Champion gate: {md(champion['decision'])}.** {md(champion['reason'])}", ""]
    if comparison["notes"]:
        lines += ["Notes:", "", *[f"- {md(note)}" for note in comparison["notes"]], ""]
    lines.append(f"Figures: {', '.join(md(name) for name in comparison['figures'])}")
    return "\n".join(lines) + "\n"
