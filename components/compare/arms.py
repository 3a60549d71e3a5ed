"""The arms of a comparison: training runs grouped by (arm, model), their names and statistics.

A run is identified by (arm, model, seed) from its metrics.json. Runs of the same arm and model
with different seeds are one arm; its figures are the mean (and sd) over its seeds.

Names (the prefixes of the flat metrics, and the names in the significance pairs):

- the CNN: `cnn`;
- with one backbone: its pretrained arm `transfer`, its from-scratch arm `scratch`;
- with several backbones: the pretrained arm is the backbone's name (`resnet50_v2`), the
  from-scratch arm `scratch_<backbone>` (`scratch_resnet50_v2`).

Pairs: every pair of arms is tested, seed pair by seed pair (the arms' runs in seed order, the
first with the first), with one Holm correction across every test. An arm pair is
"significant" when every seed pair is significant at ALPHA after the correction and all seed
differences have the same sign. Its difference is the seed-averaged one, with the sd over seeds,
and its interval the bootstrap over test images of the seed-averaged difference.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.common.dataset import DataError
from components.common.result import METRICS_FILE, Arm
from components.compare import stats
from components.compare.inputs import RunOutputs

CNN_KEY, TRANSFER_KEY, SCRATCH_KEY = "cnn", "transfer", "scratch"


def _mean(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def _sd(values: list[float | None]) -> float | None:
    if len(values) < 2 or any(v is None for v in values):
        return None
    return float(np.std(values, ddof=1))


@dataclass(frozen=True)
class ArmRuns:
    """One arm: the runs of one (arm, model), in seed order."""

    key: str  # the metrics prefix: "cnn", "transfer", "scratch", "resnet50_v2", ...
    arm: Arm
    model: str
    runs: tuple[RunOutputs, ...]

    @property
    def first(self) -> RunOutputs:
        """The run of the lowest seed (its figures stand for the arm's in the plots)."""
        return self.runs[0]

    @property
    def seeds(self) -> list[int | None]:
        """The seeds of the arm's runs."""
        return [run.metrics.seed for run in self.runs]

    @property
    def pretrained(self) -> bool:
        """Whether the arm started from pretrained weights."""
        return self.arm == Arm.PRETRAINED

    @property
    def display_name(self) -> str:
        """A human-readable name that says which arm this is."""
        name = self.first.display_name
        lowered = name.lower()
        if self.arm == Arm.SCRATCH and "scratch" not in lowered:
            return f"{name} from scratch"
        if self.arm == Arm.PRETRAINED and "pretrain" not in lowered:
            return f"{name} (pretrained)"
        return name

    def number(self, name: str) -> float | None:
        """A metrics.json number, averaged over the seeds (None when any run lacks it)."""
        return _mean([run.numbers[name] for run in self.runs])

    def spread(self, name: str) -> float | None:
        """The sd of a number over the seeds (None with one seed or a missing value)."""
        return _sd([run.numbers[name] for run in self.runs])

    @property
    def accuracy(self) -> float | None:
        """Mean test accuracy over the seeds."""
        return self.number("test_accuracy")

    @property
    def accuracy_sd(self) -> float | None:
        """Test accuracy's sd over the seeds."""
        return self.spread("test_accuracy")

    def best_run(self) -> RunOutputs:
        """The run with the highest test accuracy (the lowest seed on a tie)."""
        return max(self.runs, key=lambda run: -1.0 if run.accuracy is None else run.accuracy)


def _label(arm: ArmRuns, run: RunOutputs) -> RunOutputs:
    """The run renamed after its arm (and seed, with several), in its notes too."""
    label = arm.key if len(arm.runs) == 1 else f"{arm.key} seed {run.metrics.seed}"
    old = f"{run.role}:"
    notes = [f"{label}:{note[len(old) :]}" if note.startswith(old) else note for note in run.notes]
    return dataclasses.replace(run, role=label, notes=notes)


def group(runs: list[RunOutputs]) -> list[ArmRuns]:
    """The runs grouped into arms: the CNN first, then per backbone its scratch and pretrained arm.

    Two runs of the same (arm, model, seed) are an error naming both folders.
    """
    seen: dict[tuple[str, str, Any], RunOutputs] = {}
    for run in runs:
        identity = (run.metrics.arm, run.model, run.metrics.seed)
        if identity in seen:
            raise DataError(
                f"two runs of the same arm, model and seed {identity}: "
                f"{Path(seen[identity].folder) / METRICS_FILE} and "
                f"{Path(run.folder) / METRICS_FILE}"
            )
        seen[identity] = run
    backbones = list(dict.fromkeys(r.model for r in runs if r.metrics.arm != Arm.CNN))
    cnn_models = list(dict.fromkeys(r.model for r in runs if r.metrics.arm == Arm.CNN))
    order = [(Arm.CNN, model) for model in cnn_models]
    for model in backbones:
        order += [(Arm.SCRATCH, model), (Arm.PRETRAINED, model)]
    arms = []
    for arm, model in order:
        members = [r for r in runs if r.metrics.arm == arm and r.model == model]
        if not members:
            continue
        members.sort(key=lambda r: (r.metrics.seed is None, r.metrics.seed or 0))
        if arm == Arm.CNN:
            key = CNN_KEY if len(cnn_models) == 1 else model
        elif len(backbones) == 1:
            key = SCRATCH_KEY if arm == Arm.SCRATCH else TRANSFER_KEY
        else:
            key = f"{SCRATCH_KEY}_{model}" if arm == Arm.SCRATCH else model
        grouped = ArmRuns(key=key, arm=Arm(arm), model=model, runs=tuple(members))
        arms.append(dataclasses.replace(grouped, runs=tuple(_label(grouped, r) for r in members)))
    return arms


def pick_winner(arms: list[ArmRuns]) -> ArmRuns | None:
    """The arm with the highest mean test accuracy; None when any accuracy is missing.

    An exact tie goes to the arm with fewer parameters (the earlier arm when those tie too).
    """
    if len(arms) < 2 or any(arm.accuracy is None for arm in arms):
        return None
    return max(  # max keeps the first of equal keys: the earlier arm
        arms,
        key=lambda arm: (arm.accuracy, -(arm.number("params_total") or float("inf"))),
    )


def significance(arms: list[ArmRuns]) -> dict[str, Any]:
    """The paired tests of every pair of arms on the shared test images, for comparison.json.

    `{"computed": True, "test": ..., "alpha": ..., "pairs": [pair dicts]}`, each pair's
    difference being second - first (later arm - earlier arm), or `{"computed": False,
    "reason": ...}` when a run has no test predictions (runs written before they were saved).
    """
    missing = [run.role for arm in arms for run in arm.runs if run.predictions is None]
    if missing:
        return {
            "computed": False,
            "reason": f"no test predictions for {' and '.join(map(str, missing))} (an older "
            "run), so the significance of the difference could not be computed",
        }
    labels = arms[0].first.predictions.labels
    correct = {arm.key: [run.predictions.predictions == labels for run in arm.runs] for arm in arms}
    tests = []  # (first arm, second arm, seed index, b, c, p)
    for first, second in itertools.combinations(arms, 2):
        for index, (a, b) in enumerate(zip(correct[first.key], correct[second.key], strict=False)):
            only_first, only_second = int(np.sum(a & ~b)), int(np.sum(b & ~a))
            p = stats.mcnemar_exact(only_first, only_second)
            tests.append((first, second, index, only_first, only_second, p))
    adjusted = stats.holm([test[-1] for test in tests])
    pairs = []
    for (first, second), group_tests in itertools.groupby(
        zip(tests, adjusted, strict=True), key=lambda item: (item[0][0].key, item[0][1].key)
    ):
        pairs.append(_pair(arms, first, second, list(group_tests), correct, len(labels)))
    return {
        "computed": True,
        "test": stats.TEST_NAME,
        "alpha": stats.ALPHA,
        "confidence": stats.CONFIDENCE,
        "resamples": stats.RESAMPLES,
        "correction": "Holm",
        "pairs": pairs,
    }


def _pair(arms, first: str, second: str, tests, correct, images: int) -> dict[str, Any]:
    """One arm pair's statistics from its seed pairs' tests [((.., index, b, c, p), p_holm)]."""
    by_key = {arm.key: arm for arm in arms}
    per_seed = []
    for (arm_a, arm_b, index, b, c, p), p_holm in tests:
        low, high = stats.bootstrap_difference(correct[first][index], correct[second][index])
        per_seed.append(
            {
                "first_seed": arm_a.runs[index].metrics.seed,
                "second_seed": arm_b.runs[index].metrics.seed,
                "first_only_right": b,
                "second_only_right": c,
                "accuracy_difference": (c - b) / images,
                "p_value": p,
                "p_value_holm": p_holm,
                "ci_low": low,
                "ci_high": high,
                "significant": p_holm < stats.ALPHA,
            }
        )
    seeds = len(per_seed)
    differences = [item["accuracy_difference"] for item in per_seed]
    if seeds == 1:
        low, high = per_seed[0]["ci_low"], per_seed[0]["ci_high"]
    else:
        share = [np.mean(np.stack(correct[key][:seeds]), axis=0) for key in (first, second)]
        low, high = stats.bootstrap_mean_difference(share[1] - share[0])
    same_sign = all(d > 0 for d in differences) or all(d < 0 for d in differences)
    return {
        "first": first,
        "second": second,
        "first_name": by_key[first].display_name,
        "second_name": by_key[second].display_name,
        "seeds": seeds,
        "images": images,
        "first_only_right": sum(item["first_only_right"] for item in per_seed),
        "second_only_right": sum(item["second_only_right"] for item in per_seed),
        "accuracy_difference": float(np.mean(differences)),
        "difference_sd": _sd(differences),
        "p_value": max(item["p_value"] for item in per_seed),
        "p_value_holm": max(item["p_value_holm"] for item in per_seed),
        "ci_low": low,
        "ci_high": high,
        "significant": same_sign and all(item["significant"] for item in per_seed),
        "per_seed": per_seed,
    }


def find_pair(tested: dict[str, Any] | None, first: str, second: str) -> dict[str, Any] | None:
    """The tested pair of two arm keys, oriented as asked: its difference is `second - first`.

    None when the pair was not tested.
    """
    if not tested or not tested.get("computed"):
        return None
    for pair in tested["pairs"]:
        if (pair["first"], pair["second"]) == (first, second):
            return pair
        if (pair["first"], pair["second"]) == (second, first):
            return _reversed(pair)
    return None


def _reversed(pair: dict[str, Any]) -> dict[str, Any]:
    """The same pair seen from the other side: names swapped, differences and intervals negated."""
    flipped = dict(pair)
    for a, b in (("first", "second"), ("first_name", "second_name")):
        flipped[a], flipped[b] = pair.get(b), pair.get(a)
    for a, b in (("first_only_right", "second_only_right"), ("first_seed", "second_seed")):
        if a in pair:
            flipped[a], flipped[b] = pair[b], pair[a]
    if pair.get("accuracy_difference") is not None:
        flipped["accuracy_difference"] = -pair["accuracy_difference"]
    if pair.get("ci_low") is not None and pair.get("ci_high") is not None:
        flipped["ci_low"], flipped["ci_high"] = -pair["ci_high"], -pair["ci_low"]
    if "per_seed" in pair:
        flipped["per_seed"] = [_reversed(item) for item in pair["per_seed"]]
    return flipped


def gains(arms: list[ArmRuns], tested: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The gain split per backbone: architecture (scratch vs CNN), pretraining (vs scratch).

    Each gain has its difference (mean over seeds, sd) and, when tested, its pair's p and interval.
    """
    found = {(arm.arm, arm.model): arm for arm in arms}
    cnn = next((arm for arm in arms if arm.arm == Arm.CNN), None)
    backbones = list(dict.fromkeys(arm.model for arm in arms if arm.arm != Arm.CNN))
    result = []
    for model in backbones:
        scratch = found.get((Arm.SCRATCH, model))
        pretrained = found.get((Arm.PRETRAINED, model))
        for kind, base, other in (
            ("architecture", cnn, scratch),
            ("pretraining", scratch, pretrained),
        ):
            if base is None or other is None:
                continue
            prefix = f"{kind}_gain" if len(backbones) == 1 else f"{model}_{kind}_gain"
            pair = find_pair(tested, base.key, other.key)
            difference = (
                None
                if base.accuracy is None or other.accuracy is None
                else other.accuracy - base.accuracy
            )
            result.append(
                {
                    "kind": kind,
                    "backbone": model,
                    "metric": prefix,
                    "first": base.key,
                    "second": other.key,
                    "first_name": base.display_name,
                    "second_name": other.display_name,
                    "accuracy_difference": difference,
                    "difference_sd": pair["difference_sd"] if pair else None,
                    "pair": pair,
                }
            )
    return result
