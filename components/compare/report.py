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

from components.common.result import Arm
from components.compare.arms import ArmRuns, find_pair
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
    text: Callable[[ArmRuns], str] | None = None  # for non-numeric rows

    def value(self, arm: ArmRuns) -> float | str | None:
        """The row's value for one arm, its mean over seeds (None: missing or not finite)."""
        return self.text(arm) if self.text else arm.number(self.key)


ROWS = (
    Row("Test accuracy", "test_accuracy", "{:.4f}", True),
    Row("Test loss", "test_loss", "{:.4f}", False),
    Row("Training time (s)", "train_seconds", "{:,.1f}", False),
    Row("Training images/s", "images_per_second", "{:,.0f}", True),
    Row("Parameters (total)", "params_total", "{:,.0f}"),
    Row("Parameters (trainable)", "params_trainable", "{:,.0f}"),
    Row("Epochs run", "epochs_run", "{:.0f}"),
    Row("Pretrained weights", "pretrained", "{}", None, lambda a: "yes" if a.pretrained else "no"),
    Row(
        "Weights sha256",
        "weights_sha256",
        "{}",
        None,
        lambda a: (a.first.metrics.weights_sha256 or "-")[:12],
    ),
    Row("Seeds", "seed", "{}", None, lambda a: ", ".join(str(seed) for seed in a.seeds)),
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


def describe(arm: ArmRuns) -> str:
    """The arm as the headline names it."""
    name = arm.first.display_name
    lowered = name.lower()
    if arm.arm == Arm.CNN:
        if "scratch" in lowered:  # the name already says it
            return f"the {name}"
        return f"the CNN trained from scratch ({name})"
    if arm.arm == Arm.SCRATCH:
        if "scratch" in lowered:
            return f"the {name} backbone"
        return f"the {name} backbone trained from scratch (random init)"
    if "pretrain" in lowered:
        return f"transfer learning ({name})"
    return f"transfer learning ({name}, pretrained weights)"


def verdict(pair: dict[str, Any], alpha: float) -> str:
    """The verdict: significant, or not distinguishable, at the `alpha` level."""
    level = f"at the {alpha:.0%} level"
    return f"significant {level}" if pair["significant"] else f"not distinguishable {level}"


def _seeds_text(pair: dict[str, Any]) -> str:
    if pair.get("seeds", 1) < 2:
        return ""
    spread = pair.get("difference_sd")
    sd = f", sd {spread * 100:.2f} points over seeds" if spread is not None else ""
    return f"; mean of {pair['seeds']} seed pairs{sd}, the largest corrected p shown"


def significance_text(tested: dict[str, Any] | None, pair: dict[str, Any] | None = None) -> str:
    """The verdict on one pair's difference (the first tested pair by default)."""
    if not tested:
        return ""
    if not tested.get("computed"):
        return f"Significance could not be computed: {tested['reason'].split(', so ')[0]}."
    pair = pair or tested["pairs"][0]
    return (
        f"The difference is {verdict(pair, tested['alpha'])} ({tested['test']}: "
        f"p = {pair['p_value_holm']:.3g}; {tested['confidence']:.0%} bootstrap confidence "
        f"interval of the difference {pair['ci_low'] * 100:+.2f} to "
        f"{pair['ci_high'] * 100:+.2f} points, over {pair['images']:,} test images"
        f"{_seeds_text(pair)})."
    )


def _accuracy_text(arm: ArmRuns) -> str:
    if arm.accuracy_sd is None:
        return f"{arm.accuracy:.4f}"
    return f"{arm.accuracy:.4f} ± {arm.accuracy_sd:.4f} (mean ± sd of {len(arm.runs)} seeds)"


def gain_text(gain: dict[str, Any], tested: dict[str, Any] | None) -> str:
    """One gain of the split, its difference, verdict, p and interval, as one line.

    E.g. "pretraining gain of inception_v3 (InceptionV3 (pretrained) vs InceptionV3 from
    scratch): +12.3 points, significant at the 5% level (p = 0.001, 95% CI +10.10 to +14.20)".
    """
    names = f"{gain['second_name']} vs {gain['first_name']}"
    label = f"{gain['kind']} gain of {gain['backbone']} ({names})"
    if gain["accuracy_difference"] is None:
        return f"{label}: not measured, an accuracy is missing"
    text = f"{label}: {gain['accuracy_difference'] * 100:+.1f} points"
    pair = gain["pair"]
    if pair is None or not tested or not tested.get("computed"):
        return text
    return (
        f"{text}, {verdict(pair, tested['alpha'])} (p = {pair['p_value_holm']:.3g}, "
        f"{tested['confidence']:.0%} CI {pair['ci_low'] * 100:+.2f} to "
        f"{pair['ci_high'] * 100:+.2f})"
    )


def headline(
    arms: list[ArmRuns],
    winner: ArmRuns | None,
    tested: dict[str, Any] | None = None,
    split: list[dict[str, Any]] | None = None,
) -> str:
    """What was measured and the answer, in a few sentences.

    The best arm against the next one, whether that difference is significant at the 5% level
    or not distinguishable, then the gain split.
    """
    caveat = ""
    if not any(arm.pretrained for arm in arms):
        caveat = (
            "No pretrained backbone ran, so this run measures the architecture, not transfer "
            "learning. "
        )
    if winner is None:
        missing = [arm.display_name for arm in arms if arm.accuracy is None]
        return (
            f"{caveat}No winner: test accuracy is missing or not a number for {', '.join(missing)}."
        )
    others = [arm for arm in arms if arm is not winner]
    other = max(others, key=lambda arm: arm.accuracy)
    gain = (winner.accuracy - other.accuracy) * 100
    verb = "beats" if gain > 0 else "ties with (fewer parameters)"
    best_of = f" (the best of {len(arms)} arms)" if len(arms) > 2 else ""
    sentence = (
        f"{describe(winner)}{best_of} {verb} {describe(other)} by {gain:+.1f} points: "
        f"{_accuracy_text(winner)} vs {_accuracy_text(other)} test accuracy."
    )
    verdict_text = significance_text(tested, find_pair(tested, other.key, winner.key))
    parts = [caveat + sentence[0].upper() + sentence[1:]]
    if verdict_text:
        parts.append(verdict_text)
    if split:
        texts = [gain_text(item, tested) for item in split]
        joined = "; ".join(texts)
        parts.append(joined[0].upper() + joined[1:] + ".")
    return " ".join(parts)


def _cell(row: Row, arm: ArmRuns, best: float | None) -> tuple[str, str]:
    value = row.value(arm)
    if value is None:
        return "missing", next(
            (run.missing[row.key] for run in arm.runs if row.key in run.missing), "missing"
        )
    text = row.fmt.format(value)
    spread = arm.spread(row.key) if not row.text else None
    if spread is not None and row.key == "test_accuracy":
        text = f"{text} ± {row.fmt.format(spread)}"
    return ("best" if best is not None and value == best else ""), text


def table_rows(arms: list[ArmRuns]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(label, [(css class, text) per arm]) for the key-figures table (mean ± sd over seeds)."""
    rows = []
    for row in ROWS:
        values = [row.value(arm) for arm in arms]
        numeric = [v for v in values if isinstance(v, float)]
        best = None
        if row.higher_is_better is not None and len(numeric) == len(arms) and len(set(numeric)) > 1:
            best = max(numeric) if row.higher_is_better else min(numeric)
        rows.append((row.label, [_cell(row, arm, best) for arm in arms]))
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


def confused_html(arms: list[ArmRuns]) -> str:
    """A table per arm (its lowest seed's run) of its most confused (true, predicted) pairs."""
    esc = html.escape
    parts = []
    for run in (arm.first for arm in arms):
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
        spread = pair.get("difference_sd")
        seeds = (
            f" (mean of {pair['seeds']} seed pairs"
            + (f", sd {spread * 100:.2f} points)" if spread is not None else ")")
            if pair.get("seeds", 1) > 1
            else ""
        )
        rows += [
            (
                f"{name}: accuracy difference",
                f"{pair['accuracy_difference'] * 100:+.2f} points{seeds}",
            ),
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
            (f"{name}: verdict", verdict(pair, tested["alpha"])),
        ]
    return rows


def gain_rows(split: list[dict[str, Any]] | None, tested: dict[str, Any] | None) -> list[str]:
    """One line per gain of the split (the same in HTML and Markdown)."""
    return [gain_text(item, tested) for item in split or []]


def gains_html(split: list[dict[str, Any]] | None, tested: dict[str, Any] | None) -> str:
    """The gain-split section of the HTML report."""
    rows = gain_rows(split, tested)
    if not rows:
        return ""
    items = "".join(f"<li>{html.escape(row)}</li>" for row in rows)
    return f"<h2>Where the gain comes from</h2><ul id='gains'>{items}</ul>"


def significance_html(tested: dict[str, Any] | None) -> str:
    """The significance section of the HTML report."""
    rows = significance_rows(tested)
    if not rows:
        return ""
    esc = html.escape
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return f"<h2>Is the difference real?</h2><table id='significance'><tbody>{body}</tbody></table>"


def render_html(
    arms: list[ArmRuns],
    comparison: dict[str, Any],
    figures: dict[str, tuple[str, bytes]],
) -> str:
    """The self-contained HTML report."""
    esc = html.escape
    pretrained = any(arm.pretrained for arm in arms)
    warning = " warning" if not pretrained or comparison["winner"] is None else ""
    head = "".join(f"<th>{esc(arm.display_name)}</th>" for arm in arms)
    body = "".join(
        f"<tr><td>{esc(label)}</td>"
        + "".join(f'<td class="{css}">{esc(text)}</td>' for css, text in cells)
        + "</tr>"
        for label, cells in table_rows(arms)
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
{gains_html(comparison.get("gains"), comparison.get("significance"))}
{significance_html(comparison.get("significance"))}
<h2>Key figures</h2>
<table id="key-figures"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>
<div class="decision {esc(champion["decision"])}" id="champion">
<strong>Champion gate: {esc(champion["decision"])}</strong>
(margin {champion["margin"] * 100:.2f} points).<br>{esc(champion["reason"])}<br>
<span class="muted">{esc(previous_text)}. Champion file: {esc(champion["champion_uri"])}</span>
</div>
{f"<h2>Notes</h2><ul id='notes'>{notes}</ul>" if notes else ""}
{confused_html(arms)}
<h2>Figures</h2>
{figure_html}
</body></html>
"""


def render_markdown(arms: list[ArmRuns], comparison: dict[str, Any]) -> str:
    """The Markdown summary (KFP Markdown artifact): headline, key figures, gate, notes.

    Every piece of text goes through `markdown_text`.
    """
    md = markdown_text
    lines = [
        f"# CNN from scratch vs transfer learning on {md(comparison['dataset']['name'])}",
        "",
        f"**{md(comparison['headline'])}**",
        "",
        "| | " + " | ".join(md(arm.display_name) for arm in arms) + " |",
        "|---|" + "---:|" * len(arms),
    ]
    for label, cells in table_rows(arms):
        values = [f"**{md(text)}**" if css == "best" else md(text) for css, text in cells]
        lines.append(f"| {md(label)} | " + " | ".join(values) + " |")
    split_rows = gain_rows(comparison.get("gains"), comparison.get("significance"))
    if split_rows:
        lines += ["", "**Where the gain comes from**", ""]
        lines += [f"- {md(row)}" for row in split_rows]
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
