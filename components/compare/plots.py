"""The comparison figures, drawn with matplotlib's Agg backend and returned as PNG bytes.

Figures are built on `matplotlib.figure.Figure` (no pyplot global state), so they are safe to draw
in any thread and never open a window.
"""

from __future__ import annotations

import io
import math
import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.figure import Figure

from components.common.result import Role
from components.compare.inputs import Misclassified, RunOutputs

DPI = 100
COLOURS = {Role.CNN: "#1f77b4", Role.TRANSFER: "#d62728"}
GRID_COLUMNS = 6


def colour_of(run: RunOutputs) -> str:
    """The CNN's colour, or the other model's."""
    return COLOURS.get(str(run.role).split(" ")[0], COLOURS[Role.TRANSFER])


GRID_MAX = 36
ANNOTATE_MAX = 20  # confusion cells carry their value up to this many classes
TICKS_MAX = 40  # class names on the confusion axes: all up to this many, then every k-th
MATRIX_MAX_INCHES = 12.0  # each confusion matrix stays at most this wide (a heat map beyond)
BARS_MAX = 30  # per-class accuracy: every class up to this many, then the worst BARS_MAX
NAME_CHARS = 24  # class names longer than this are shortened in figures


def short(name: str, limit: int = NAME_CHARS) -> str:
    """A class name cut to `limit` characters (with an ellipsis) for axis labels and titles."""
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def worst_classes(cnn: RunOutputs, transfer: RunOutputs, count: int) -> np.ndarray:
    """Indices of the `count` classes with the lowest mean accuracy over both models.

    Classes without test images (NaN) come last; ties keep class order.
    """
    rows = [run.per_class_accuracy() for run in (cnn, transfer)]
    stacked = np.vstack([r for r in rows if r is not None] or [np.zeros(len(cnn.class_names))])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        mean = np.nanmean(stacked, axis=0)
    order = np.lexsort((np.arange(len(mean)), np.where(np.isnan(mean), np.inf, mean)))
    return order[:count]


def to_png(figure: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _fine_tune_start(run: RunOutputs) -> int | None:
    history = run.history
    for epoch, phase in zip(history.epoch, history.phase, strict=True):
        if phase == "fine_tune":
            return epoch
    return None


def _curves(ax, run: RunOutputs, metric: str, *, label_model: bool, colour: str | None) -> None:
    history = run.history
    prefix = f"{run.display_name} " if label_model else ""
    ax.plot(history.epoch, history.get(metric), "o-", color=colour, label=f"{prefix}train")
    ax.plot(history.epoch, history.get(f"val_{metric}"), "s--", color=colour, label=f"{prefix}val")
    start = _fine_tune_start(run)
    if start is not None:
        label = None if label_model else "fine-tuning starts"
        ax.axvline(start - 0.5, color=colour or "grey", linestyle=":", linewidth=1, label=label)


def learning_curves(cnn: RunOutputs, transfer: RunOutputs, metric: str) -> bytes:
    """Train and validation `metric` per epoch: each model alone, then both overlaid.

    Histories of different lengths are plotted as they are; a dotted line marks where a
    fine-tuning phase starts.
    """
    figure = Figure(layout="constrained", figsize=(15, 4.2))
    axes = figure.subplots(1, 3, sharey=True)
    for ax, run in zip(axes[:2], (cnn, transfer), strict=True):
        _curves(ax, run, metric, label_model=False, colour=None)
        ax.set_title(run.display_name)
    for run in (cnn, transfer):
        _curves(axes[2], run, metric, label_model=True, colour=colour_of(run))
    axes[2].set_title("Both models, shared axes")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel(metric)
    figure.suptitle(f"Training and validation {metric}")
    return to_png(figure)


def confusion_matrices(cnn: RunOutputs, transfer: RunOutputs) -> bytes:
    """Both confusion matrices, each row normalised to sum to 1 (rows: true class)."""
    names = [short(name) for name in cnn.class_names]
    size = min(MATRIX_MAX_INCHES, max(4.5, 0.55 * len(names) + 2))
    figure = Figure(layout="constrained", figsize=(2 * size + 1, size))
    axes = figure.subplots(1, 2)
    image = None
    for ax, run in zip(axes, (cnn, transfer), strict=True):
        ax.set_title(run.display_name)
        if run.confusion is None:
            ax.text(0.5, 0.5, "no confusion matrix", ha="center", va="center")
            ax.set_axis_off()
            continue
        rows = run.confusion.sum(axis=1, keepdims=True).astype(float)
        normalised = np.divide(
            run.confusion, rows, out=np.zeros(run.confusion.shape), where=rows > 0
        )
        image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        step = max(1, math.ceil(len(names) / TICKS_MAX))
        ticks = np.arange(0, len(names), step)
        labels = [names[i] if step == 1 else f"{names[i]} ({i})" for i in ticks]
        fontsize = 8 if len(names) <= ANNOTATE_MAX else 6
        ax.set_xticks(
            ticks, labels, rotation=45 if step == 1 else 90, ha="right", fontsize=fontsize
        )
        ax.set_yticks(ticks, labels, fontsize=fontsize)
        ax.set_xlabel("predicted" if step == 1 else f"predicted (one class in {step} named)")
        if len(names) <= ANNOTATE_MAX:
            for (row, col), value in np.ndenumerate(normalised):
                if value < 0.005:  # leave empty cells empty
                    continue
                colour = "white" if value > 0.5 else "black"
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, c=colour)
    axes[0].set_ylabel("true class")
    if image is not None:
        figure.colorbar(image, ax=list(axes), shrink=0.8, label="share of the true class")
    figure.suptitle("Confusion matrices, normalised by row")
    return to_png(figure)


def per_class_accuracy(cnn: RunOutputs, transfer: RunOutputs) -> bytes:
    """Grouped bars: each class's test accuracy for both models; the worst BARS_MAX when many."""
    if len(cnn.class_names) > BARS_MAX:
        return worst_class_accuracy(cnn, transfer)
    names = [short(name) for name in cnn.class_names]
    figure = Figure(layout="constrained", figsize=(max(8.0, 0.9 * len(names) + 2), 4.5))
    ax = figure.subplots()
    positions = np.arange(len(names))
    width = 0.4
    for offset, run in ((-width / 2, cnn), (width / 2, transfer)):
        values = run.per_class_accuracy()
        if values is None:
            values = np.full(len(names), np.nan)
        bars = ax.bar(positions + offset, np.nan_to_num(values), width, color=colour_of(run))
        bars.set_label(run.display_name)
        for bar, value in zip(bars, values, strict=True):
            text = "n/a" if math.isnan(value) else f"{value:.2f}"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_xticks(positions, names, rotation=30, ha="right")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("test accuracy (recall)")
    ax.set_title("Per-class test accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    return to_png(figure)


def worst_class_accuracy(cnn: RunOutputs, transfer: RunOutputs) -> bytes:
    """Horizontal grouped bars of the BARS_MAX classes with the lowest mean accuracy."""
    shown = worst_classes(cnn, transfer, BARS_MAX)
    names = [short(cnn.class_names[i], 40) for i in shown]
    figure = Figure(layout="constrained", figsize=(10.0, 0.32 * len(names) + 1.5))
    ax = figure.subplots()
    positions = np.arange(len(names))
    height = 0.4
    for offset, run in ((-height / 2, cnn), (height / 2, transfer)):
        values = run.per_class_accuracy()
        values = np.full(len(names), np.nan) if values is None else values[shown]
        bars = ax.barh(positions + offset, np.nan_to_num(values), height, color=colour_of(run))
        bars.set_label(run.display_name)
        for bar, value in zip(bars, values, strict=True):
            text = "n/a" if math.isnan(value) else f"{value:.2f}"
            y = bar.get_y() + bar.get_height() / 2
            ax.annotate(text, (bar.get_width(), y), va="center", fontsize=7, xytext=(2, 0),
                        textcoords="offset points")  # fmt: skip
    ax.set_yticks(positions, names, fontsize=8)
    ax.invert_yaxis()  # worst first, at the top
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("test accuracy (recall)")
    ax.set_title(
        f"Per-class test accuracy: the {len(names)} worst of {len(cnn.class_names)} classes "
        "(lowest mean of both models first)"
    )
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return to_png(figure)


def misclassified_grid(run: RunOutputs, wrong: Misclassified) -> bytes:
    """A grid of test images the model got wrong, titled with true and predicted labels."""
    count = min(len(wrong.images), GRID_MAX)
    columns = min(GRID_COLUMNS, max(count, 1))
    rows = max(1, math.ceil(count / columns))
    figure = Figure(layout="constrained", figsize=(columns * 1.9, rows * 2.1))
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    names = run.class_names
    for index, ax in enumerate(axes):
        ax.set_axis_off()
        if index >= count:
            continue
        image = wrong.images[index]
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image)
        true = short(names[wrong.labels[index]], 18)
        predicted = short(names[wrong.predictions[index]], 18)
        confidence = float(wrong.confidence[index])
        ax.set_title(f"true: {true}\npred: {predicted} ({confidence:.2f})", fontsize=7, color="C3")
    if count == 0:
        axes[0].text(0.5, 0.5, "no wrong predictions", ha="center", va="center")
    figure.suptitle(f"{run.display_name}: wrong test predictions ({count} shown)")
    return to_png(figure)


def all_figures(
    cnn: RunOutputs, transfer: RunOutputs, others: tuple[RunOutputs, ...] = ()
) -> dict[str, tuple[str, bytes]]:
    """Every figure: {file name: (caption, PNG bytes)}, in report order.

    The curves, confusion matrices and per-class bars set `cnn` against `transfer` (the CNN
    and the headline arm); `others` add their grids of wrong predictions.

    Class and model names are shown as written: a `$` in them is text, not math markup.
    """
    with matplotlib.rc_context({"text.parse_math": False}):
        return _all_figures(cnn, transfer, others)


def _all_figures(cnn: RunOutputs, transfer: RunOutputs, others) -> dict[str, tuple[str, bytes]]:
    figures = {
        "accuracy.png": (
            "Training and validation accuracy",
            learning_curves(cnn, transfer, "accuracy"),
        ),
        "loss.png": ("Training and validation loss", learning_curves(cnn, transfer, "loss")),
        "confusion.png": ("Normalised confusion matrices", confusion_matrices(cnn, transfer)),
        "per_class.png": (
            "Per-class test accuracy"
            + (
                f" (the {BARS_MAX} worst of {len(cnn.class_names)} classes)"
                if len(cnn.class_names) > BARS_MAX
                else ""
            ),
            per_class_accuracy(cnn, transfer),
        ),
    }
    for run in (cnn, transfer, *others):
        if run.misclassified is not None:
            caption = f"Test images {run.display_name} got wrong"
            slug = str(run.role).replace(" ", "_")
            figures[f"misclassified_{slug}.png"] = (
                caption,
                misclassified_grid(run, run.misclassified),
            )
    return figures
