"""The champion gate: promote a run's winner only if it beats the current champion.

The champion of a dataset lives at `<store>/champion/<dataset>.json`. A gate reads it with its
generation, decides, and writes with `if_generation_match`; when another gate wrote meanwhile the
write fails with `PreconditionFailedError` and the gate reads, decides and writes again, so no
update is lost. Policy:

- a first run (no champion file) promotes its winner;
- a winner with a missing or non-finite test accuracy or test loss, or no test-split identity,
  is refused (and so is a run where either model's accuracy is missing: there is no winner);
- a champion measured on a different test split is not comparable: the gate keeps it and says
  why, unless `promote_on_new_split` is set (then the winner is promoted with that reason);
- otherwise the winner is promoted only if its accuracy exceeds the champion's by more than
  `margin` (absolute accuracy, 0.005 = half a point), and, when both the champion record and
  the winner hold test predictions of that same test split, only if the difference is also
  significant: the exact McNemar test between the two sets of predictions gives p < ALPHA
  (0.05). A champion record without predictions (written by an older version) is judged on
  the margin alone, and the reason says so.

The record keeps the champion's test predictions as plain JSON integer lists, never a pickled
object: `test_predictions = {"test_split_sha256": ..., "predictions": [...], "labels": [...]}`.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from components.common import storage
from components.common.dataset import DataError
from components.common.digest import json_digest
from components.common.logging import get_logger
from components.common.numbers import finite_or_none as number
from components.compare.stats import ALPHA, mcnemar_exact

log = get_logger("compare")

RECORD_FORMAT = 1
MAX_ATTEMPTS = 8  # read-decide-write rounds before giving up on a contended champion file
EPSILON = 1e-9  # accuracies closer than this are equal (float noise, e.g. 0.905 - 0.9 > 0.005)
REQUIRED_FIELDS = ("model", "test_accuracy", "test_split_sha256")
PREDICTIONS_FIELD = "test_predictions"  # {"test_split_sha256", "predictions", "labels"}


@dataclass(frozen=True)
class Decision:
    """What the gate decided and why."""

    decision: str  # "promote", "keep" or "refuse"
    reason: str
    promoted: bool
    champion_uri: str
    previous: dict[str, Any] | None  # the champion record the decision was made against
    record: dict[str, Any] | None  # the record written (None when nothing was written)
    attempts: int  # read-decide-write rounds (more than 1: another gate wrote meanwhile)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the records' prediction lists are shortened to their length."""
        values = asdict(self)
        for key in ("previous", "record"):
            if isinstance(values[key], dict) and PREDICTIONS_FIELD in values[key]:
                stored = values[key][PREDICTIONS_FIELD]
                values[key] = {
                    **values[key],
                    PREDICTIONS_FIELD: {
                        "test_split_sha256": stored.get("test_split_sha256"),
                        "images": len(stored.get("predictions") or []),
                    },
                }
        return values


def champion_uri(store: str, dataset: str) -> str:
    """Where a dataset's champion record lives."""
    return storage.join(store, "champion", f"{dataset}.json")


def parse_record(text: str, uri: str) -> dict[str, Any]:
    """Parse and validate a champion record; a corrupt one is a `DataError` naming the file."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{uri}: corrupt champion file, not valid JSON ({error}); fix or remove it"
        ) from None
    if not isinstance(record, dict):
        raise DataError(f"{uri}: corrupt champion file, expected a JSON object; fix or remove it")
    missing = [name for name in REQUIRED_FIELDS if record.get(name) in (None, "")]
    if missing:
        raise DataError(f"{uri}: corrupt champion file, missing {missing}; fix or remove it")
    if number(record["test_accuracy"]) is None:
        raise DataError(
            f"{uri}: corrupt champion file, test_accuracy {record['test_accuracy']!r} is not a "
            "finite number; fix or remove it"
        )
    if record.get(PREDICTIONS_FIELD) is not None:
        problem = predictions_problem(record[PREDICTIONS_FIELD])
        if problem:
            raise DataError(f"{uri}: corrupt champion file, {problem}; fix or remove it")
    return record


def predictions_problem(stored: Any) -> str:
    """Why a record's test predictions are malformed ("" when they are well formed)."""
    if not isinstance(stored, dict):
        return f"{PREDICTIONS_FIELD} must be an object"
    if not isinstance(stored.get("test_split_sha256"), str) or not stored["test_split_sha256"]:
        return f"{PREDICTIONS_FIELD} must name its test_split_sha256"
    lists = [stored.get(key) for key in ("predictions", "labels")]
    for key, values in zip(("predictions", "labels"), lists, strict=True):
        if not isinstance(values, list) or not all(type(v) is int and v >= 0 for v in values):
            return f"{PREDICTIONS_FIELD}.{key} must be a list of non-negative integers"
    if len(lists[0]) != len(lists[1]):
        return f"{PREDICTIONS_FIELD} has {len(lists[0])} predictions for {len(lists[1])} labels"
    return ""


def significance(candidate: dict[str, Any], current: dict[str, Any]) -> tuple[float, str] | None:
    """(McNemar p, description) of candidate vs champion on the same test images, or None.

    None when either record lacks predictions of the test split both were measured on, or
    when the two hold different labels.
    """
    mine, theirs = candidate.get(PREDICTIONS_FIELD), current.get(PREDICTIONS_FIELD)
    split = candidate.get("test_split_sha256")
    if not mine or not theirs or predictions_problem(mine) or predictions_problem(theirs):
        return None
    if mine["test_split_sha256"] != split or theirs["test_split_sha256"] != split:
        return None
    if mine["labels"] != theirs["labels"]:
        return None
    labels = mine["labels"]
    new_right = [p == t for p, t in zip(mine["predictions"], labels, strict=True)]
    old_right = [p == t for p, t in zip(theirs["predictions"], labels, strict=True)]
    champion_only = sum(o and not n for n, o in zip(new_right, old_right, strict=True))
    candidate_only = sum(n and not o for n, o in zip(new_right, old_right, strict=True))
    p_value = mcnemar_exact(champion_only, candidate_only)
    text = (
        f"exact McNemar p = {p_value:.3g} on {len(labels)} shared test images "
        f"({candidate_only} only the challenger got right, {champion_only} only the champion)"
    )
    return p_value, text


def decide(
    candidate: dict[str, Any],
    current: dict[str, Any] | None,
    margin: float,
    promote_on_new_split: bool = False,
) -> tuple[str, str]:
    """Pure decision: (decision, reason) for a candidate record against the current champion."""
    accuracy = number(candidate.get("test_accuracy"))
    name = candidate.get("display_name") or candidate.get("model")
    if accuracy is None:
        if not name:
            return "refuse", "no winner (a test accuracy is missing or NaN); nothing is promoted"
        return "refuse", f"{name} has no finite test accuracy; nothing is promoted"
    if "test_loss" in candidate and number(candidate["test_loss"]) is None:
        return "refuse", f"{name} has no finite test loss; nothing is promoted"
    if not candidate.get("test_split_sha256"):
        return "refuse", f"{name} does not record which test split it was measured on"
    if current is None:
        return "promote", f"first run: {name} ({accuracy:.4f}) becomes the champion"
    best = float(current["test_accuracy"])
    best_name = current.get("display_name") or current.get("model")
    if current["test_split_sha256"] != candidate["test_split_sha256"]:
        split_note = (
            f"the champion {best_name} ({best:.4f}) was measured on test split "
            f"{str(current['test_split_sha256'])[:12]}, this run on "
            f"{str(candidate['test_split_sha256'])[:12]}: the accuracies are not comparable"
        )
        if promote_on_new_split:
            return "promote", f"{split_note}; promoted because promote_on_new_split is set"
        return "keep", f"{split_note}; not promoted automatically"
    gain = accuracy - best
    versus = f"{name} {accuracy:.4f} vs champion {best_name} {best:.4f} ({gain * 100:+.2f} points)"
    if gain > margin + EPSILON:
        return _significant(candidate, current, versus, margin)
    if gain > EPSILON:
        return "keep", f"{versus}: better, but within the margin of {margin * 100:.2f} points"
    return "keep", f"{versus}: not better"


def _significant(
    candidate: dict[str, Any], current: dict[str, Any], versus: str, margin: float
) -> tuple[str, str]:
    """The decision for a candidate that beats the champion by more than the margin."""
    beats = f"{versus}: beats it by more than the margin of {margin * 100:.2f} points"
    tested = significance(candidate, current)
    if tested is None:
        return "promote", (
            f"{beats}; no significance test (the champion record or this run has no test "
            "predictions of this test split), so the margin alone decides"
        )
    p_value, text = tested
    if p_value < ALPHA:
        return "promote", f"{beats}, and the difference is significant ({text})"
    return "keep", (
        f"{beats}, but the difference is not significant at the {ALPHA:.0%} level ({text})"
    )


def _read_current(uri: str) -> tuple[int, dict[str, Any] | None]:
    gen = storage.generation(uri)
    if gen == 0:
        return 0, None
    try:
        text = storage.read_text(uri)
    except storage.NotFoundError:  # deleted between the two calls: decide again
        raise storage.PreconditionFailedError(f"reading {uri}: deleted meanwhile") from None
    except UnicodeDecodeError:
        raise DataError(f"{uri}: corrupt champion file, not UTF-8 text; fix or remove it") from None
    return gen, parse_record(text, uri)


def gate(
    uri: str,
    candidate: dict[str, Any],
    margin: float,
    *,
    promote_on_new_split: bool = False,
    before_write: Callable[[int], None] | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> Decision:
    """Run the read-decide-write loop on the champion file at `uri`.

    `before_write(attempt)` is called after each decision to promote, before the conditional
    write (tests use it to make two gates race).
    """
    # Identifies this candidate in the record it writes, so that a retried gate (a task rerun
    # after its write, or a write whose success answer was lost) recognises its own promotion.
    fingerprint = json_digest(candidate)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            gen, current = _read_current(uri)
            if current is not None and current.get("candidate_sha256") == fingerprint:
                reason = "already promoted by this run (the gate ran again after its write)"
                log.info("champion_decision", decision="promote", reason=reason, attempt=attempt)
                return Decision(
                    "promote", reason, True, uri, current.get("previous"), current, attempt
                )
            decision, reason = decide(candidate, current, margin, promote_on_new_split)
            if decision != "promote":
                log.info("champion_decision", decision=decision, reason=reason, attempt=attempt)
                return Decision(decision, reason, False, uri, current, None, attempt)
            record = {
                **candidate,
                "candidate_sha256": fingerprint,
                "format_version": RECORD_FORMAT,
                "promoted_at": now().isoformat(timespec="seconds"),
                "reason": reason,
                "previous": _summary(current),
            }
            if before_write is not None:
                before_write(attempt)
            text = json.dumps(record, indent=2, sort_keys=True) + "\n"
            storage.write_text(uri, text, if_generation_match=gen)
        except storage.PreconditionFailedError as error:
            log.info("champion_contended", uri=uri, attempt=attempt, error=str(error))
            time.sleep(random.uniform(0.0, 0.05 * attempt))
            continue
        log.info("champion_decision", decision=decision, reason=reason, attempt=attempt)
        return Decision(decision, reason, True, uri, current, record, attempt)
    raise storage.StorageError(
        f"writing {uri}: the champion file kept changing; gave up after {MAX_ATTEMPTS} attempts"
    )


def _summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    keys = ("model", "display_name", "test_accuracy", "test_split_sha256", "promoted_at")
    return {key: record.get(key) for key in keys}
