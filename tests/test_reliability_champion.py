"""Two champion gates racing on fake-gcs-server, which enforces generation preconditions."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from components.common import storage
from components.compare.champion import gate


def candidate(name: str, accuracy: float) -> dict:
    return {"model": name, "test_accuracy": accuracy, "test_loss": 0.3, "test_split_sha256": "s1"}


@pytest.fixture
def champion_on_gcs(fake_gcs: str, monkeypatch) -> str:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs)
    bucket = f"champ-{uuid.uuid4().hex[:10]}"
    storage.client().create_bucket(bucket)
    return f"gs://{bucket}/ml/champion/fashion_mnist.json"


def race(uri: str, candidates: list[dict]) -> list:
    """Every gate decides against the same state, then all write at once."""
    barrier = threading.Barrier(len(candidates), timeout=30)
    decisions, errors = [], []

    def before_write(attempt: int) -> None:
        if attempt == 1:
            barrier.wait()

    def run_gate(record: dict) -> None:
        try:
            decisions.append(gate(uri, record, 0.005, before_write=before_write))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run_gate, args=(c,)) for c in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    return decisions


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_concurrent_first_runs_keep_the_better(champion_on_gcs: str, order):
    records = {"a": candidate("cnn", 0.90), "b": candidate("transfer", 0.93)}
    decisions = race(champion_on_gcs, [records[k] for k in order])
    final = json.loads(storage.read_text(champion_on_gcs))
    assert final["model"] == "transfer" and final["test_accuracy"] == 0.93
    # Both decided "first run" against an empty store; one write lost the precondition and
    # that gate re-read and re-decided instead of overwriting.
    assert sorted(d.attempts > 1 for d in decisions) == [False, True]
    loser = next(d for d in decisions if d.attempts > 1)
    if loser.promoted:  # the worse one wrote first, the better one then beat it
        assert loser.previous["model"] == "cnn" and loser.record["model"] == "transfer"
    else:
        assert loser.previous["model"] == "transfer" and "not better" in loser.reason


def test_concurrent_gates_against_existing_champion(champion_on_gcs: str):
    storage.write_text(champion_on_gcs, json.dumps(candidate("old", 0.91)), if_generation_match=0)
    # Both beat the champion by more than the margin, so both try to write at once.
    decisions = race(champion_on_gcs, [candidate("x", 0.95), candidate("y", 0.94)])
    final = json.loads(storage.read_text(champion_on_gcs))
    assert final["model"] == "x" and final["test_accuracy"] == 0.95
    assert max(d.attempts for d in decisions) >= 2
    # A later gate within the margin of the new champion changes nothing.
    later = gate(champion_on_gcs, candidate("z", 0.952), 0.005)
    assert not later.promoted and "within the margin" in later.reason
    assert json.loads(storage.read_text(champion_on_gcs))["model"] == "x"
