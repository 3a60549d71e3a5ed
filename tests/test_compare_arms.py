"""compare with N arms: the CNN, scratch and pretrained backbones, several seeds, the gain split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from components.common.dataset import DataError
from components.compare import arms as arms_module
from components.compare.compare import flat_metrics, run
from components.compare.config import CompareConfig
from components.compare.inputs import load_run
from components.compare.stats import holm, mcnemar_exact
from tests.fixtures_compare import write_arm


def compare(tmp_path: Path, folders: list[Path]):
    return run(
        CompareConfig(
            run_dirs=tuple(map(str, folders)),
            output_dir=str(tmp_path / "out"),
            store=str(tmp_path / "store"),
        )
    )


def correct(folder: Path) -> np.ndarray:
    with np.load(folder / "test_predictions.npz") as data:
        return data["predictions"] == data["labels"]


def mcnemar(first: Path, second: Path) -> float:
    a, b = correct(first), correct(second)
    return mcnemar_exact(int(np.sum(a & ~b)), int(np.sum(b & ~a)))


def test_three_arms_split_the_gain_into_architecture_and_pretraining(tmp_path):
    cnn = write_arm(tmp_path, "cnn", "seed_cnn", accuracy=0.6)
    scratch = write_arm(tmp_path, "scratch", "inception_v3", accuracy=0.64)
    pretrained = write_arm(tmp_path, "pretrained", "inception_v3", accuracy=0.96)
    result = compare(tmp_path, [pretrained, cnn, scratch])  # the order does not matter
    metrics = result.metrics
    assert result.winner == "transfer"
    assert [metrics[f"{key}_test_accuracy"] for key in ("cnn", "scratch", "transfer")] == [
        0.6,
        0.64,
        0.96,
    ]
    assert metrics["scratch_params_total"] > 0 and metrics["transfer_pretrained"] == 1.0
    # Holm across the three pairs tested: cnn-scratch, cnn-transfer, scratch-transfer.
    raw = [mcnemar(cnn, scratch), mcnemar(cnn, pretrained), mcnemar(scratch, pretrained)]
    corrected = holm(raw)
    assert metrics["architecture_gain"] == pytest.approx(0.04)
    assert metrics["architecture_gain_p_value"] == pytest.approx(corrected[0])
    assert metrics["architecture_gain_significant"] == (1.0 if corrected[0] < 0.05 else 0.0)
    assert metrics["pretraining_gain"] == pytest.approx(0.32)
    assert metrics["pretraining_gain_p_value"] == pytest.approx(corrected[2])
    assert metrics["pretraining_gain_significant"] == 1.0
    assert metrics["pretraining_gain_ci_low"] > 0 < metrics["pretraining_gain_ci_high"]
    assert metrics["mcnemar_p_value"] == pytest.approx(corrected[1])  # the CNN vs transfer
    assert metrics["accuracy_difference"] == pytest.approx(0.36)

    summary = Path(result.summary_md).read_text()
    html_text = Path(result.report_html).read_text()
    assert "| | Seed CNN | InceptionV3 from scratch | InceptionV3 (pretrained) |" in summary
    for text in (summary, html_text):
        assert "Where the gain comes from" in text
        assert "architecture gain of inception" in text and "pretraining gain of" in text
        assert "significant at the 5% level" in text
    verdict = "significant" if corrected[0] < 0.05 else "not distinguishable"
    assert f"+4.0 points, {verdict} at the 5% level" in result.comparison["headline"]
    record = json.loads((tmp_path / "store" / "champion" / "fashion_mnist.json").read_text())
    assert record["role"] == "transfer" and record["arm"] == "pretrained"
    assert record["model_uri"] == str(pretrained)


def test_seeds_give_mean_and_sd_and_each_seed_pair_is_tested(tmp_path):
    accuracies = {"cnn": (0.6, 0.64, 0.68), "pretrained": (0.9, 0.92, 0.96)}
    folders = {
        arm: [
            write_arm(tmp_path, arm, model, seed=seed, accuracy=value)
            for seed, value in zip((7, 8, 9), accuracies[arm], strict=True)
        ]
        for arm, model in (("cnn", "seed_cnn"), ("pretrained", "inception_v3"))
    }
    result = compare(tmp_path, [*folders["cnn"], *folders["pretrained"]])
    metrics = result.metrics
    for arm, key in (("cnn", "cnn"), ("pretrained", "transfer")):
        assert metrics[f"{key}_test_accuracy"] == pytest.approx(np.mean(accuracies[arm]))
        assert metrics[f"{key}_test_accuracy_sd"] == pytest.approx(np.std(accuracies[arm], ddof=1))
        assert metrics[f"{key}_seeds"] == 3
    (pair,) = result.comparison["significance"]["pairs"]
    seed_pairs = [(s["first_seed"], s["second_seed"]) for s in pair["per_seed"]]
    assert seed_pairs == [(7, 7), (8, 8), (9, 9)]
    raw = [mcnemar(a, b) for a, b in zip(folders["cnn"], folders["pretrained"], strict=True)]
    assert [s["p_value_holm"] for s in pair["per_seed"]] == pytest.approx(holm(raw))
    assert metrics["mcnemar_p_value"] == pytest.approx(max(holm(raw)))
    differences = [s["accuracy_difference"] for s in pair["per_seed"]]
    assert pair["accuracy_difference"] == pytest.approx(np.mean(differences))
    assert pair["difference_sd"] == pytest.approx(np.std(differences, ddof=1))
    assert pair["ci_low"] < pair["accuracy_difference"] < pair["ci_high"]
    summary = Path(result.summary_md).read_text()
    assert f"{np.mean(accuracies['cnn']):.4f} ± {np.std(accuracies['cnn'], ddof=1):.4f}" in summary
    assert "mean of 3 seed pairs" in summary
    assert "Seeds | 7, 8, 9 | 7, 8, 9" in summary


def test_several_backbones_are_named_by_backbone(tmp_path):
    folders = [
        write_arm(tmp_path, "cnn", "seed_cnn", accuracy=0.6),
        write_arm(tmp_path, "pretrained", "resnet50_v2", accuracy=0.92),
        write_arm(tmp_path, "scratch", "resnet50_v2", accuracy=0.7),
        write_arm(tmp_path, "pretrained", "inception_v3", accuracy=0.96),
        write_arm(tmp_path, "scratch", "inception_v3", accuracy=0.64),
    ]
    arms = arms_module.group([load_run(folder, "run") for folder in folders])
    assert [arm.key for arm in arms] == [
        "cnn",
        "scratch_resnet50_v2",
        "resnet50_v2",
        "scratch_inception_v3",
        "inception_v3",
    ]
    tested = arms_module.significance(arms)
    assert len(tested["pairs"]) == 10  # every pair of the five arms, one Holm correction
    split = arms_module.gains(arms, tested)
    winner = arms_module.pick_winner(arms)
    metrics = flat_metrics(arms, winner, False, tested, split)
    assert winner.key == "inception_v3" and metrics["winner_is_transfer"] == 1.0
    assert metrics["resnet50_v2_test_accuracy"] == 0.92
    assert metrics["scratch_resnet50_v2_test_accuracy"] == 0.7
    assert metrics["scratch_inception_v3_test_accuracy"] == 0.64
    assert metrics["inception_v3_pretraining_gain"] == pytest.approx(0.32)
    assert metrics["resnet50_v2_architecture_gain"] == pytest.approx(0.1)
    for name in ("p_value", "ci_low", "ci_high", "significant"):
        assert f"resnet50_v2_pretraining_gain_{name}" in metrics
    assert metrics["accuracy_difference"] == pytest.approx(0.36)  # the best pretrained arm
    assert not any(name.startswith(("transfer_test", "scratch_test")) for name in metrics)


def test_two_runs_of_the_same_arm_model_and_seed_are_refused(tmp_path):
    first = write_arm(tmp_path / "a", "cnn", "seed_cnn")
    second = write_arm(tmp_path / "b", "cnn", "seed_cnn")
    with pytest.raises(DataError, match=r"two runs of the same arm, model and seed.*a/cnn"):
        compare(tmp_path, [first, second, write_arm(tmp_path, "scratch", "inception_v3")])
    assert not (tmp_path / "out").exists()


def test_runs_of_a_single_arm_are_refused(tmp_path):
    folders = [write_arm(tmp_path, "cnn", "seed_cnn", seed=seed) for seed in (1, 2)]
    with pytest.raises(DataError, match="at least two arms"):
        compare(tmp_path, folders)
    assert not (tmp_path / "out").exists()


def test_old_records_without_arm_are_placed_by_model_and_weights(tmp_path):
    cnn = write_arm(tmp_path, "cnn", "seed_cnn")
    transfer = write_arm(tmp_path, "pretrained", "inception_v3")
    for folder in (cnn, transfer):
        raw = json.loads((folder / "metrics.json").read_text())
        del raw["arm"]
        (folder / "metrics.json").write_text(json.dumps(raw))
    arms = arms_module.group([load_run(cnn, "cnn"), load_run(transfer, "transfer")])
    assert [(arm.key, str(arm.arm)) for arm in arms] == [("cnn", "cnn"), ("transfer", "pretrained")]


def test_an_exact_tie_of_accuracy_and_size_goes_to_the_earlier_arm(tmp_path):
    folders = [
        write_arm(tmp_path, "scratch", "inception_v3", accuracy=0.8),
        write_arm(tmp_path, "pretrained", "inception_v3", accuracy=0.8),
    ]
    arms = arms_module.group([load_run(folder, "run") for folder in folders])
    assert [arm.key for arm in arms] == ["scratch", "transfer"]
    assert arms_module.pick_winner(arms).key == "scratch"
    assert arms_module.pick_winner(arms[::-1]).key == "transfer"


def test_a_pair_read_from_the_other_side_is_negated_and_the_headline_interval_is_the_winners(
    tmp_path,
):
    cnn = write_arm(tmp_path, "cnn", "seed_cnn", accuracy=0.9)
    scratch = write_arm(tmp_path, "scratch", "inception_v3", accuracy=0.6)
    result = compare(tmp_path, [cnn, scratch])
    tested = result.comparison["significance"]
    (stored,) = tested["pairs"]
    flipped = arms_module.find_pair(tested, stored["second"], stored["first"])
    assert flipped["first"] == stored["second"] and flipped["second"] == stored["first"]
    assert flipped["accuracy_difference"] == pytest.approx(-stored["accuracy_difference"])
    assert (flipped["ci_low"], flipped["ci_high"]) == (-stored["ci_high"], -stored["ci_low"])
    assert arms_module.find_pair(tested, stored["first"], stored["second"]) == stored
    # The CNN wins by +30 points: the headline's interval is of that difference, positive.
    headline = result.comparison["headline"]
    low, high = sorted((-stored["ci_high"] * 100, -stored["ci_low"] * 100))
    assert f"interval of the difference {low:+.2f} to {high:+.2f} points" in headline
    assert low > 0


def test_runs_on_different_splits_are_refused_whatever_run_comes_first(tmp_path):
    old = write_arm(tmp_path, "cnn", "seed_cnn")  # an older record without the split's hash
    metrics = json.loads((old / "metrics.json").read_text())
    metrics.pop("test_split_sha256", None)
    (old / "metrics.json").write_text(json.dumps(metrics))
    scratch = write_arm(tmp_path, "scratch", "inception_v3")
    pretrained = write_arm(tmp_path, "pretrained", "inception_v3", test_split="f" * 64)
    with pytest.raises(DataError, match="different test splits"):
        compare(tmp_path, [old, scratch, pretrained])
