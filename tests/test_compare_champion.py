"""The champion gate: first run, better, worse, within margin, NaN, test split, corrupt, races."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from components.common import storage
from components.common.dataset import DataError
from components.compare.champion import champion_uri, decide, gate
from components.compare.compare import CompareConfig, run
from components.compare.stats import mcnemar_exact
from tests.fixtures_compare import TEST_SPLIT, write_run

MARGIN = 0.005


def record(accuracy, model="inception_v3", split=TEST_SPLIT):
    return {"model": model, "test_accuracy": accuracy, "test_split_sha256": split}


@pytest.mark.parametrize(
    ("accuracy", "current", "expected", "reason"),
    [
        (0.90, None, "promote", "first run"),
        (0.91, record(0.90), "promote", "beats it by more than the margin of 0.50 points"),
        (0.89, record(0.90), "keep", "not better"),
        (0.903, record(0.90), "keep", "better, but within the margin of 0.50 points"),
        (0.905, record(0.90), "keep", "within the margin"),  # exactly the margin: not more
        (float("nan"), record(0.90), "refuse", "no finite test accuracy"),
        (None, None, "refuse", "no finite test accuracy"),
        (0.99, record(0.90, split="f" * 64), "keep", "not comparable; not promoted"),
    ],
)
def test_decide(accuracy, current, expected, reason):
    decision, why = decide(record(accuracy), current, MARGIN)
    assert decision == expected
    assert reason in why


def test_decide_refuses_a_nan_test_loss():
    decision, reason = decide({**record(0.95), "test_loss": None}, record(0.9), MARGIN)
    assert decision == "refuse" and "no finite test loss" in reason


def test_decide_without_test_split_refuses():
    assert decide(record(0.9, split=None), None, MARGIN)[0] == "refuse"


def test_other_test_split_promotes_only_when_allowed():
    decision, reason = decide(record(0.8), record(0.9, split="f" * 64), MARGIN, True)
    assert decision == "promote"
    assert "promote_on_new_split" in reason


def test_gate_sequence_on_a_local_store(tmp_path):
    uri = champion_uri(str(tmp_path / "store"), "fashion_mnist")
    assert uri == str(tmp_path / "store" / "champion" / "fashion_mnist.json")

    first = gate(uri, record(0.90, model="seed_cnn"), MARGIN)
    assert (first.decision, first.promoted, first.previous) == ("promote", True, None)
    assert json.loads(Path(uri).read_text())["model"] == "seed_cnn"

    worse = gate(uri, record(0.85), MARGIN)
    within = gate(uri, record(0.904), MARGIN)
    nan = gate(uri, record(float("nan")), MARGIN)
    assert [d.decision for d in (worse, within, nan)] == ["keep", "keep", "refuse"]
    assert json.loads(Path(uri).read_text())["model"] == "seed_cnn"

    other_split = gate(uri, record(0.99, split="f" * 64), MARGIN)
    assert other_split.decision == "keep" and "not comparable" in other_split.reason
    assert json.loads(Path(uri).read_text())["model"] == "seed_cnn"

    better = gate(uri, record(0.92), MARGIN)
    assert better.promoted and better.previous["model"] == "seed_cnn"
    stored = json.loads(Path(uri).read_text())
    assert stored["test_accuracy"] == 0.92 and stored["model"] == "inception_v3"
    assert stored["previous"]["test_accuracy"] == 0.90
    assert stored["reason"] == better.reason and stored["promoted_at"]

    new_split = gate(uri, record(0.5, split="f" * 64), MARGIN, promote_on_new_split=True)
    assert new_split.promoted and "promote_on_new_split" in new_split.reason
    assert json.loads(Path(uri).read_text())["test_split_sha256"] == "f" * 64


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[1, 2]",
        b'{"model": "x"}',
        b'{"model": "x", "test_accuracy": "high", "test_split_sha256": "a"}',
        b"\xff\xfe",
        b'{"model": "x", "test_accuracy": 0.9, "test_split_sha256": "a", "test_predictions": '
        b'{"test_split_sha256": "a", "predictions": [1, "2"], "labels": [1, 2]}}',
        b'{"model": "x", "test_accuracy": 0.9, "test_split_sha256": "a", "test_predictions": '
        b'{"test_split_sha256": "a", "predictions": [1], "labels": [1, 2]}}',
        b'{"model": "x", "test_accuracy": 0.9, "test_split_sha256": "a", "test_predictions": '
        b'{"predictions": [1], "labels": [1]}}',
    ],
)
def test_corrupt_champion_file_is_a_clear_error_and_stays(tmp_path, content):
    uri = champion_uri(str(tmp_path), "fashion_mnist")
    Path(uri).parent.mkdir(parents=True)
    Path(uri).write_bytes(content)
    with pytest.raises(DataError, match=r"fashion_mnist.json: corrupt champion file"):
        gate(uri, record(0.99), MARGIN)
    assert Path(uri).read_bytes() == content


def test_concurrent_gates_lose_no_update(tmp_path):
    """Two gates read the same champion, both decide to promote, and then both write.

    A barrier makes both read before either writes; an event lets a chosen one write first. The
    other's conditional write fails, so it reads the new champion and decides again. In both
    orders, with and without an earlier champion, the better run ends up champion.
    """
    for round_number, (first, old_champion) in enumerate(
        [("better", False), ("worse", False), ("better", True), ("worse", True)]
    ):
        uri = champion_uri(str(tmp_path / f"store{round_number}"), "fashion_mnist")
        if old_champion:
            gate(uri, record(0.80, model="old"), MARGIN)
        both_read = threading.Barrier(2, timeout=30)
        first_done = threading.Event()
        results = {}

        def contender(
            name,
            accuracy,
            first=first,
            both_read=both_read,
            done=first_done,
            results=results,
            uri=uri,
        ):
            def before_write(attempt):
                if attempt == 1:
                    both_read.wait()
                    if name != first:
                        assert done.wait(30)

            try:
                results[name] = gate(
                    uri, record(accuracy, model=name), MARGIN, before_write=before_write
                )
            finally:
                if name == first:
                    done.set()

        threads = [
            threading.Thread(target=contender, args=("better", 0.93)),
            threading.Thread(target=contender, args=("worse", 0.90)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert set(results) == {"better", "worse"}
        final = json.loads(Path(uri).read_text())
        assert final["model"] == "better" and final["test_accuracy"] == 0.93
        second = "worse" if first == "better" else "better"
        assert results[first].attempts == 1 and results[first].promoted
        assert results[second].attempts == 2  # lost the race, re-read and re-decided
        assert results[second].previous["model"] == first
        if first == "better":  # worse re-read the better champion and kept it
            assert results["worse"].decision == "keep" and not results["worse"].promoted
        else:  # better re-read the worse champion and promoted over it
            assert results["better"].promoted and final["previous"]["model"] == "worse"


def test_gate_gives_up_when_the_file_keeps_changing(tmp_path):
    uri = champion_uri(str(tmp_path), "fashion_mnist")
    storage.write_text(uri, json.dumps(record(0.5)))

    def meddle(attempt):  # another writer changes the file before every write
        storage.write_text(uri, json.dumps(record(0.5 + attempt / 1000)))

    with pytest.raises(storage.StorageError, match="kept changing"):
        gate(uri, record(0.99), MARGIN, before_write=meddle)


def test_a_gate_run_again_after_its_write_recognises_its_own_promotion(tmp_path):
    uri = str(tmp_path / "champion" / "fashion_mnist.json")
    record = {"model": "cnn", "test_accuracy": 0.91, "test_loss": 0.3, "test_split_sha256": "s"}
    first = gate(uri, record, 0.005)
    again = gate(uri, dict(record), 0.005)  # e.g. the compare task retried after the write
    assert first.promoted and again.promoted
    assert "already promoted by this run" in again.reason
    other = gate(uri, {**record, "model": "transfer"}, 0.005)  # equal accuracy, another model
    assert not other.promoted and "not better" in other.reason


def with_predictions(entry, right: int, images: int = 200, split=TEST_SPLIT, start: int = 0):
    """`entry` with test predictions right on `right` of `images` (wrong ones from `start`)."""
    labels = [i % 4 for i in range(images)]
    wrong = set(range(start, start + images - right))
    predictions = [(t + 1) % 4 if i in wrong else t for i, t in enumerate(labels)]
    stored = {"test_split_sha256": split, "predictions": predictions, "labels": labels}
    return {**entry, "test_predictions": stored}


def test_a_gain_beyond_the_margin_that_is_noise_is_not_promoted():
    # 182/200 vs 180/200: one point, above the half-point margin, but 2 discordant images.
    champion = with_predictions(record(0.90), 180)
    challenger = with_predictions(record(0.91), 182)
    decision, reason = decide(challenger, champion, MARGIN)
    assert decision == "keep"
    assert "not significant at the 5% level" in reason
    assert f"p = {mcnemar_exact(0, 2):.3g} on 200 shared test images" in reason


def test_a_significant_gain_beyond_the_margin_is_promoted():
    champion = with_predictions(record(0.80), 160)
    challenger = with_predictions(record(0.95), 190)  # right on 30 the champion missed
    decision, reason = decide(challenger, champion, MARGIN)
    assert decision == "promote"
    assert f"significant (exact McNemar p = {mcnemar_exact(0, 30):.3g}" in reason


def test_a_champion_without_predictions_is_judged_on_the_margin_alone():
    decision, reason = decide(with_predictions(record(0.91), 182), record(0.90), MARGIN)
    assert decision == "promote" and "the margin alone decides" in reason
    # Predictions of another test split do not pair either.
    champion = with_predictions(record(0.90), 180, split="e" * 64)
    decision, reason = decide(with_predictions(record(0.91), 182), champion, MARGIN)
    assert decision == "promote" and "the margin alone decides" in reason


def test_compare_keeps_the_champions_predictions_and_tests_the_next_challenger(tmp_path):
    """End to end: the champion record holds plain integer lists; a noisy gain is kept out."""
    labels = np.repeat(np.arange(4), 25)

    def guesses(wrong: list[int]):
        out = labels.copy()
        out[wrong] = (labels[wrong] + 1) % 4
        return out

    def compare_runs(name: str, cnn_wrong: list[int], transfer_wrong: list[int]):
        runs = tmp_path / name
        cnn = write_run(runs / "cnn", accuracy=0.5, predictions=guesses(cnn_wrong))
        transfer = write_run(
            runs / "transfer",
            model="inception_v3",
            display_name="InceptionV3",
            pretrained=True,
            accuracy=1 - len(transfer_wrong) / 100,
            predictions=guesses(transfer_wrong),
        )
        config = CompareConfig(
            cnn_dir=str(cnn),
            transfer_dir=str(transfer),
            output_dir=str(runs / "out"),
            store=str(tmp_path / "store"),
        )
        return run(config)

    first = compare_runs("first", list(range(50)), list(range(10)))  # transfer: 0.90
    assert first.champion["decision"] == "promote"
    stored = json.loads(Path(first.champion["uri"]).read_text())["test_predictions"]
    assert stored["test_split_sha256"] == TEST_SPLIT
    assert stored["labels"] == labels.tolist()
    assert stored["predictions"] == guesses(list(range(10))).tolist()
    comparison = json.loads((tmp_path / "first" / "out" / "comparison.json").read_text())
    assert comparison["champion"]["record"]["test_predictions"]["images"] == 100

    # 0.92 beats 0.90 by 2 points (> margin), but on 2 discordant images of 100: kept.
    second = compare_runs("second", list(range(50)), list(range(8)))
    assert second.champion["decision"] == "keep"
    assert "not significant at the 5% level" in second.champion["reason"]
    assert json.loads(Path(first.champion["uri"]).read_text())["test_accuracy"] == 0.9
