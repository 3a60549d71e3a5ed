"""The compare step end to end on small fixture runs: figures, report, metrics, bad input."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from components.common.dataset import DataError
from components.compare import __main__ as cli
from components.compare.arms import group, pick_winner
from components.compare.compare import CompareConfig, run
from components.compare.inputs import load_run
from components.compare.report import headline
from components.compare.stats import holm, mcnemar_exact
from tests.fixtures_compare import CLASS_NAMES, write_pair, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STABLE_NAMES = {
    f"{role}_{name}"
    for role in ("cnn", "transfer")
    for name in (
        "test_accuracy",
        "test_loss",
        "train_seconds",
        "images_per_second",
        "params_total",
        "params_trainable",
    )
} | {"accuracy_difference", "winner_is_transfer", "transfer_pretrained", "champion_promoted"}
SIGNIFICANCE_NAMES = {
    "mcnemar_p_value",
    "accuracy_difference_ci_low",
    "accuracy_difference_ci_high",
    "difference_significant",
}
STABLE_NAMES |= SIGNIFICANCE_NAMES


def compare(tmp_path: Path, cnn: Path, transfer: Path, **options):
    config = CompareConfig(
        cnn_dir=str(cnn),
        transfer_dir=str(transfer),
        output_dir=str(tmp_path / "out"),
        **{"store": str(tmp_path / "store"), **options},
    )
    return run(config)


def test_report_is_self_contained_and_holds_every_figure(tmp_path):
    cnn, transfer = write_pair(
        tmp_path / "runs", 0.85, 0.9, epochs=4, phases=["head"] * 2 + ["fine_tune"] * 2
    )
    result = compare(tmp_path, cnn, transfer)
    out = tmp_path / "out"
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures == sorted(
        [
            *("accuracy.png", "loss.png", "confusion.png", "per_class.png"),
            *("misclassified_cnn.png", "misclassified_transfer.png"),
        ]
    )
    html_text = Path(result.report_html).read_text()
    sources = re.findall(r'src="([^"]*)"', html_text)
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in sources}
    assert embedded == {(out / name).read_bytes() for name in figures}
    assert all((out / name).read_bytes().startswith(PNG_MAGIC) for name in figures)
    # Nothing to fetch: no scripts, stylesheets, external URLs or CSS url().
    for pattern in ("<script", "<link", "http://", "https://", "url(", "@import", "<iframe"):
        assert pattern not in html_text.lower()
    assert "beats the CNN trained from scratch (Seed CNN) by +5.0 points" in html_text
    assert "0.9000 vs 0.8500 test accuracy" in html_text
    assert 'id="champion"' in html_text and "first run" in html_text

    assert result.winner == "transfer"
    assert set(result.metrics) == STABLE_NAMES
    assert result.metrics["winner_is_transfer"] == 1.0
    assert result.metrics["accuracy_difference"] == pytest.approx(0.05)
    assert json.loads((out / "metrics.json").read_text()) == result.metrics
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["winner_model"] == "inception_v3"
    assert comparison["models"]["cnn"]["per_class_accuracy"]["trouser"] == pytest.approx(0.84)
    assert comparison["champion"]["decision"] == "promote"
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# CNN from scratch vs transfer learning on fashion_mnist")
    assert "| Test accuracy | 0.8500 | **0.9000** |" in summary


def test_metric_names_stay_the_same_when_the_cnn_wins(tmp_path):
    cnn, transfer = write_pair(tmp_path / "runs", 0.9, 0.8)
    result = compare(tmp_path, cnn, transfer)
    assert set(result.metrics) == STABLE_NAMES
    assert result.winner == "cnn" and result.metrics["winner_is_transfer"] == 0.0
    assert (
        "The CNN trained from scratch (Seed CNN) beats transfer learning"
        in (result.comparison["headline"])
    )


def test_a_backbone_without_weights_is_the_scratch_arm_and_the_headline_says_so(tmp_path):
    cnn, transfer = write_pair(tmp_path / "runs", 0.85, 0.88, pretrained=False)
    result = compare(tmp_path, cnn, transfer)
    headline = result.comparison["headline"]
    assert headline.startswith(
        "No pretrained backbone ran, so this run measures the architecture, not transfer learning."
    )
    assert "InceptionV3 backbone trained from scratch (random init)" in headline
    html_text = Path(result.report_html).read_text()
    assert 'class="headline warning"' in html_text
    assert headline.split(".")[0] in Path(result.summary_md).read_text()
    assert result.metrics["transfer_pretrained"] == 0.0
    assert result.winner == "scratch"
    assert result.metrics["scratch_test_accuracy"] == pytest.approx(0.88)
    assert not any(name.startswith("transfer_test") for name in result.metrics)


def test_class_names_that_differ_are_a_clear_error_and_nothing_is_written(tmp_path):
    cnn = write_run(tmp_path / "cnn")
    transfer = write_run(tmp_path / "transfer", class_names=["a", "b", "c", "d"])
    with pytest.raises(DataError, match="class names differ") as error:
        compare(tmp_path, cnn, transfer)
    assert str(cnn / "metrics.json") in str(error.value)
    assert str(transfer / "metrics.json") in str(error.value)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "store").exists()


def test_histories_of_different_lengths_are_plotted_as_they_are(tmp_path):
    cnn = write_run(tmp_path / "cnn", epochs=6)
    transfer = write_run(tmp_path / "transfer", model="inception_v3", epochs=2, pretrained=True)
    result = compare(tmp_path, cnn, transfer)
    assert result.comparison["models"]["cnn"]["history_epochs"] == 6
    assert result.comparison["models"]["transfer"]["history_epochs"] == 2
    assert any("differ in length (6 vs 2 epochs)" in note for note in result.comparison["notes"])
    assert (tmp_path / "out" / "accuracy.png").read_bytes().startswith(PNG_MAGIC)


def test_nan_accuracy_is_shown_and_the_gate_refuses(tmp_path):
    cnn, transfer = write_pair(tmp_path / "runs", 0.85, None)
    result = compare(tmp_path, cnn, transfer)
    assert result.winner is None
    assert result.champion["decision"] == "refuse" and not result.champion["promoted"]
    assert result.champion["reason"].startswith("no winner")
    assert not (tmp_path / "store" / "champion" / "fashion_mnist.json").exists()
    assert "transfer_test_accuracy" not in result.metrics
    assert "winner_is_transfer" not in result.metrics
    assert result.metrics["champion_promoted"] == 0.0
    html_text = Path(result.report_html).read_text()
    assert "No winner: test accuracy is missing or not a number for InceptionV3" in html_text
    assert '<td class="missing">NaN (null)</td>' in html_text
    assert "transfer: test_accuracy is NaN (null)" in result.comparison["notes"]
    metrics_file = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert all(np.isfinite(value) for value in metrics_file.values())


def test_missing_metric_field_is_shown_as_missing(tmp_path):
    cnn, transfer = write_pair(tmp_path / "runs")
    raw = json.loads((cnn / "metrics.json").read_text())
    del raw["train_seconds"]
    raw["display_name"] = "CNN <small> & fast"
    (cnn / "metrics.json").write_text(json.dumps(raw))
    result = compare(tmp_path, cnn, transfer)
    assert "cnn: train_seconds is missing" in result.comparison["notes"]
    assert "cnn_train_seconds" not in result.metrics
    html_text = Path(result.report_html).read_text()
    assert '<td class="missing">missing</td>' in html_text
    assert "CNN &lt;small&gt; &amp; fast" in html_text and "<small>" not in html_text


def test_missing_misclassified_file_skips_that_grid_with_a_note(tmp_path):
    cnn = write_run(tmp_path / "cnn", misclassified=None)
    transfer = write_run(tmp_path / "transfer", model="inception_v3", pretrained=True)
    result = compare(tmp_path, cnn, transfer)
    assert "misclassified_cnn.png" not in result.comparison["figures"]
    assert "misclassified_transfer.png" in result.comparison["figures"]
    assert "cnn: no misclassified.npz, so no grid of its wrong predictions" in (
        Path(result.report_html).read_text()
    )


def test_corrupt_misclassified_file_is_a_clear_error(tmp_path):
    cnn, transfer = write_pair(tmp_path / "runs")
    (transfer / "misclassified.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"transfer/misclassified.npz: not a readable .npz"):
        compare(tmp_path, cnn, transfer)


def test_history_series_of_wrong_length_is_a_clear_error(tmp_path):
    cnn = write_run(tmp_path / "cnn")
    history = json.loads((cnn / "history.json").read_text())
    history["val_loss"] = history["val_loss"][:-1]
    (cnn / "history.json").write_text(json.dumps(history))
    with pytest.raises(DataError, match=r"history.json: 'val_loss' has 2 values for 3 epochs"):
        load_run(cnn, "cnn")


def test_confusion_matrix_of_wrong_shape_is_a_clear_error(tmp_path):
    cnn = write_run(tmp_path / "cnn", extra={"confusion_matrix": [[1, 2], [3, 4]]})
    with pytest.raises(DataError, match=r"confusion_matrix has shape \(2, 2\), expected \(4, 4\)"):
        load_run(cnn, "cnn")


def test_different_test_splits_are_a_clear_error(tmp_path):
    cnn, transfer = write_pair(tmp_path / "runs", test_split="c" * 64)
    with pytest.raises(DataError, match="different test splits"):
        compare(tmp_path, cnn, transfer)


def test_an_exact_tie_goes_to_the_smaller_model(tmp_path):
    cnn, transfer = write_pair(tmp_path / "runs", 0.9, 0.9)
    arms = group([load_run(cnn, "cnn"), load_run(transfer, "transfer")])
    assert pick_winner(arms).key == "cnn"


def test_cli_writes_the_report_and_exits_1_on_bad_input(tmp_path, capsys):
    cnn, transfer = write_pair(tmp_path / "runs")
    args = ["--cnn-dir", str(cnn), "--transfer-dir", str(transfer), "--store", str(tmp_path / "s")]
    result_json = tmp_path / "result.json"
    code = cli.main(
        [
            *args,
            "--output-dir",
            str(tmp_path / "out"),
            "--margin",
            "0.01",
            "--output-json",
            str(result_json),
            "--log-format",
            "json",
        ]
    )
    assert code == 0
    result = json.loads(result_json.read_text())
    assert result["winner"] == "transfer" and result["champion"]["promoted"] is True
    assert Path(result["report_html"]).is_file()

    bad = write_run(tmp_path / "bad", class_names=[*CLASS_NAMES[:3], "bag"])
    code = cli.main(
        [
            "--cnn-dir",
            str(bad),
            "--transfer-dir",
            str(transfer),
            "--store",
            str(tmp_path / "s"),
            "--output-dir",
            str(tmp_path / "out2"),
        ]
    )
    assert code == 1
    assert "error: class names differ" in capsys.readouterr().err


def test_champion_on_a_gcs_store(tmp_path, gcs_bucket):
    store = f"{gcs_bucket}/pipeline"
    cnn, transfer = write_pair(tmp_path / "runs", 0.85, 0.9)
    first = compare(tmp_path, cnn, transfer, store=store)
    assert first.champion["promoted"] and first.champion["uri"] == (
        f"{store}/champion/fashion_mnist.json"
    )
    cnn2, transfer2 = write_pair(tmp_path / "runs2", 0.85, 0.902)
    second = compare(tmp_path, cnn2, transfer2, store=store)
    assert second.champion["decision"] == "keep"
    assert "within the margin" in second.champion["reason"]
    from components.common import storage

    record = json.loads(storage.read_text(first.champion["uri"]))
    assert record["test_accuracy"] == 0.9 and record["model"] == "inception_v3"
    assert record["dataset"] == "fashion_mnist" and record["dataset_version"] == "0123456789abcdef"
    assert record["test_split_sha256"] == "a" * 64 and record["train_seconds"] == 12.5
    assert record["model_uri"] == str(transfer) and record["promoted_at"]


def test_headline_does_not_repeat_what_display_names_already_say(tmp_path):
    cnn = write_run(tmp_path / "cnn", display_name="CNN from scratch", accuracy=0.9)
    transfer = write_run(
        tmp_path / "transfer",
        model="inception_v3",
        display_name="InceptionV3 (random init)",
        accuracy=0.1,
    )
    transfer_2 = write_run(
        tmp_path / "transfer2",
        model="inception_v3",
        display_name="InceptionV3 pretrained",
        pretrained=True,
        accuracy=0.5,
    )
    arms = group([load_run(cnn, "cnn"), load_run(transfer, "transfer")])
    text = headline(arms, arms[0])
    assert text == (
        "No pretrained backbone ran, so this run measures the architecture, not transfer "
        "learning. The CNN from scratch beats the InceptionV3 (random init) backbone trained "
        "from scratch (random init) by +80.0 points: 0.9000 vs 0.1000 test accuracy."
    )
    arms = group([load_run(cnn, "cnn"), load_run(transfer_2, "transfer")])
    assert headline(arms, arms[0]) == (
        "The CNN from scratch beats transfer learning (InceptionV3 pretrained) by +40.0 points: "
        "0.9000 vs 0.5000 test accuracy."
    )


def test_dollar_signs_in_names_are_text_not_math(tmp_path):
    names = [f"price $ {i}" if i % 2 else f"a$\\bogus$ {i}" for i in range(len(CLASS_NAMES))]
    cnn = write_run(tmp_path / "cnn", class_names=names, display_name="CNN $1")
    transfer = write_run(
        tmp_path / "transfer", model="inception_v3", class_names=names, display_name="Inc$eption$"
    )
    result = compare(tmp_path, cnn, transfer)
    assert (tmp_path / "out" / "per_class.png").stat().st_size > 0
    assert "CNN $1" in Path(result.report_html).read_text()


def test_compare_releases_the_training_checkpoints_it_consumed(tmp_path):
    """Training keeps its checkpoint until its result is consumed; compare then releases it."""
    store = tmp_path / "store"
    held = {}
    for role in ("cnn", "transfer"):
        folder = store / "checkpoints" / "0123abcd" / role / "head"
        folder.mkdir(parents=True)
        (folder / "LATEST.json").write_text('{"done": true}')
        held[role] = str(folder.parent)
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("not a checkpoint")
    cnn, transfer = write_pair(tmp_path / "runs", checkpoint_dir=held["transfer"])
    metrics = json.loads((cnn / "metrics.json").read_text())
    (cnn / "metrics.json").write_text(json.dumps({**metrics, "checkpoint_dir": held["cnn"]}))
    compare(tmp_path, cnn, transfer)
    assert not Path(held["cnn"]).exists() and not Path(held["transfer"]).exists()

    # A checkpoint_dir outside <store>/checkpoints/ (a planted or foreign file) is never deleted.
    escapes = (str(outside), f"{store}/checkpoints/../../precious", str(store / "checkpoints"))
    for planted in escapes:
        (cnn / "metrics.json").write_text(json.dumps({**metrics, "checkpoint_dir": planted}))
        compare(tmp_path, cnn, transfer)
        assert (outside / "keep.txt").exists() and (store / "checkpoints").is_dir()


def test_test_predictions_are_loaded_and_checked_against_the_run(tmp_path):
    run_dir = write_run(tmp_path / "cnn", accuracy=0.84)
    loaded = load_run(run_dir, "cnn")
    paired = loaded.predictions
    assert paired is not None and paired.test_split_sha256 == "a" * 64
    assert np.mean(paired.predictions == paired.labels) == pytest.approx(0.84)


def test_predictions_outside_the_class_count_are_refused(tmp_path):
    run_dir = write_run(tmp_path / "cnn", predictions=np.full(100, 4))
    with pytest.raises(DataError, match=r"test_predictions.npz: 'predictions' holds class .*0..3"):
        load_run(run_dir, "cnn")


def test_predictions_of_another_test_split_are_refused(tmp_path):
    run_dir = write_run(tmp_path / "cnn")
    path = run_dir / "test_predictions.npz"
    with np.load(path) as data:
        arrays = {key: data[key] for key in data}
    np.savez(path, **{**arrays, "test_split_sha256": np.array("d" * 64)})
    with pytest.raises(DataError, match=r"predictions of test split dddddddddddd, but the run's"):
        load_run(run_dir, "cnn")


def test_predictions_that_do_not_cover_the_test_split_are_refused(tmp_path):
    run_dir = write_run(tmp_path / "cnn", predictions=np.zeros(100, int))
    path = run_dir / "test_predictions.npz"
    with np.load(path) as data:
        arrays = {key: data[key] for key in data}
    np.savez(
        path,
        **{**arrays, "predictions": arrays["predictions"][:90], "labels": arrays["labels"][:90]},
    )
    with pytest.raises(DataError, match=r"90 test predictions, but the confusion matrix"):
        load_run(run_dir, "cnn")


def test_pickled_predictions_are_refused(tmp_path):
    run_dir = write_run(tmp_path / "cnn")
    np.savez(
        run_dir / "test_predictions.npz",
        predictions=np.array([object()] * 100),
        labels=np.zeros(100, int),
    )
    with pytest.raises(DataError, match=r"test_predictions.npz: not a readable .npz"):
        load_run(run_dir, "cnn")


def test_runs_whose_test_labels_differ_are_refused(tmp_path):
    cnn, transfer = write_pair(tmp_path / "runs")
    path = transfer / "test_predictions.npz"
    with np.load(path) as data:
        arrays = {key: data[key] for key in data}
    np.savez(path, **{**arrays, "labels": arrays["labels"][::-1].copy()})
    with pytest.raises(DataError, match="test predictions are not paired"):
        compare(tmp_path, cnn, transfer)
    assert not (tmp_path / "out").exists()


def labels_and_mistakes(wrong_per_class: int, per_class: int = 25, classes: int = 4):
    """The fixture's test labels (grouped by class) and predictions wrong on the first k of each."""
    labels = np.repeat(np.arange(classes), per_class)
    guessed = labels.copy()
    for value in range(classes):
        first = np.flatnonzero(labels == value)[:wrong_per_class]
        guessed[first] = (value + 1) % classes
    return labels, guessed


def discordant(cnn: Path, transfer: Path) -> tuple[int, int]:
    loaded = [np.load(folder / "test_predictions.npz") for folder in (cnn, transfer)]
    right = [data["predictions"] == data["labels"] for data in loaded]
    return int(np.sum(right[0] & ~right[1])), int(np.sum(right[1] & ~right[0]))


def test_a_clear_difference_is_significant_and_the_report_says_so(tmp_path):
    _, cnn_guess = labels_and_mistakes(5)  # 0.80
    _, transfer_guess = labels_and_mistakes(0)  # 1.00
    cnn = write_run(tmp_path / "cnn", accuracy=0.8, predictions=cnn_guess)
    transfer = write_run(
        tmp_path / "transfer",
        model="inception_v3",
        display_name="InceptionV3",
        pretrained=True,
        accuracy=1.0,
        predictions=transfer_guess,
    )
    result = compare(tmp_path, cnn, transfer)
    b, c = discordant(cnn, transfer)
    assert (b, c) == (0, 20)
    metrics = result.metrics
    assert set(metrics) == STABLE_NAMES
    assert metrics["mcnemar_p_value"] == pytest.approx(mcnemar_exact(b, c))
    assert metrics["difference_significant"] == 1.0
    assert 0 < metrics["accuracy_difference_ci_low"] < 0.2 < metrics["accuracy_difference_ci_high"]
    assert result.comparison["headline"].endswith(
        f"The difference is significant at the 5% level (exact McNemar test (two-sided binomial "
        f"on the discordant images): p = {mcnemar_exact(b, c):.3g}; 95% bootstrap confidence "
        f"interval of the difference {metrics['accuracy_difference_ci_low'] * 100:+.2f} to "
        f"{metrics['accuracy_difference_ci_high'] * 100:+.2f} points, over 100 test images)."
    )
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    (pair,) = comparison["significance"]["pairs"]
    assert (pair["first"], pair["second"]) == ("cnn", "transfer")
    assert (pair["first_only_right"], pair["second_only_right"]) == (0, 20)
    for text in (Path(result.summary_md).read_text(), Path(result.report_html).read_text()):
        assert "exact McNemar test" in text and "95% confidence interval" in text
        assert f"{mcnemar_exact(b, c):.4g}" in text
        assert "significant at the 5% level" in text


def test_a_small_difference_is_reported_as_not_distinguishable(tmp_path):
    cnn, transfer = write_pair(tmp_path / "runs", 0.84, 0.88)
    result = compare(tmp_path, cnn, transfer)
    b, c = discordant(cnn, transfer)
    p_value = holm([mcnemar_exact(b, c)])[0]
    assert p_value >= 0.05  # the fixture's 4-point gap on 100 images is noise
    assert result.metrics["mcnemar_p_value"] == pytest.approx(p_value)
    assert result.metrics["difference_significant"] == 0.0
    low, high = (result.metrics[f"accuracy_difference_ci_{end}"] for end in ("low", "high"))
    assert low < 0 < high
    assert "The difference is not distinguishable at the 5% level" in result.comparison["headline"]
    assert "not distinguishable at the 5% level" in Path(result.summary_md).read_text()


def test_runs_without_test_predictions_are_compared_without_significance(tmp_path):
    cnn = write_run(tmp_path / "cnn", predictions=None)  # written before predictions were saved
    transfer = write_run(
        tmp_path / "transfer",
        model="inception_v3",
        display_name="InceptionV3",
        accuracy=0.9,
        pretrained=True,
    )
    result = compare(tmp_path, cnn, transfer)
    assert set(result.metrics) == STABLE_NAMES - SIGNIFICANCE_NAMES
    assert result.comparison["significance"]["computed"] is False
    assert result.comparison["headline"].endswith(
        "Significance could not be computed: no test predictions for cnn (an older run)."
    )
    summary = Path(result.summary_md).read_text()
    assert "could not be computed" in summary
    assert "could not be computed" in Path(result.report_html).read_text()
    assert result.comparison["champion"]["decision"] == "promote"


def test_an_arm_with_mirror_averaged_test_figures_is_named_in_the_notes(tmp_path):
    cnn, transfer = write_pair(tmp_path / "runs")
    result = compare(tmp_path, cnn, transfer)
    assert not any("mirror image" in note for note in result.comparison["notes"])
    raw = json.loads((cnn / "metrics.json").read_text())
    (cnn / "metrics.json").write_text(json.dumps({**raw, "mirror_averaged": True}))
    result = compare(tmp_path / "again", cnn, transfer)
    name = result.comparison["models"]["cnn"]["display_name"]
    [note] = [note for note in result.comparison["notes"] if "mirror image" in note]
    assert note.startswith(f"{name}: trained with random flips; test figures are of predictions")
    assert "averaged over each image and its mirror image" in Path(result.report_html).read_text()
