"""Benchmark: peak resident memory (RSS) of the steps that bench_training does not run.

Each step runs as its own process on real Fashion-MNIST; the peak RSS comes from the kernel's
accounting of that process (`wait4`, through `machine.run_peak_rss`). The training steps'
figures come from bench_training.

Run: python -m bench.bench_memory [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.bench_training import REPO, WORK, weights_file
from bench.machine import machine_info, print_table, run_peak_rss

STORE = WORK / "memory-store"


def peak_rss_gib(command: list[str]) -> float:
    """Run a command to completion; its peak RSS in GiB. A failure stops the benchmark."""
    code, mib = run_peak_rss(command, cwd=REPO, stdout=subprocess.DEVNULL)
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed with status {code}")
    return mib / 1024


def second_arm(run: Path, copy: Path) -> Path:
    """A copy of a CNN run folder labelled as a pretrained arm: compare's memory benchmark input."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics.update(
        arm="pretrained", model="inception_v3", pretrained=True,
        display_name="CNN run as a second arm (memory benchmark input)",
    )  # fmt: skip
    (copy / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return copy


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 2,000-image subset")
    parser.add_argument("--source", default="auto")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    shutil.rmtree(STORE, ignore_errors=True)
    python = [sys.executable, "-m"]
    limit = ["--limit", "2000"] if args.quick else []
    results = {"machine": machine_info()}
    results["data_prep_peak_rss_gib"] = peak_rss_gib(
        [*python, "components.data_prep", "--store", str(STORE), "--source", args.source, *limit]
    )
    path, sha256 = weights_file()
    results["weights_peak_rss_gib"] = peak_rss_gib(
        [*python, "components.weights", "--store", str(STORE), "--url", str(path),
         "--sha256", sha256, "--no-keras-cache"]
    )  # fmt: skip
    # bench_training's runs: the latest CNN run in bench/work. Its transfer run may be on a
    # subset (another test split, which compare rightly refuses), so compare gets the full-size
    # CNN run twice, the copy labelled as a second arm (compare refuses two runs of one arm):
    # the same figures, plots and report work as for two models. Only memory is measured.
    cnn_runs = sorted(WORK.glob("run-*/runs/cnn/metrics.json"), key=lambda p: p.stat().st_mtime)
    if cnn_runs:
        cnn = cnn_runs[-1].parent
        second = second_arm(cnn, WORK / "compare-input" / "second-arm")
        results["compare_peak_rss_gib"] = peak_rss_gib(
            [*python, "components.compare", "--cnn-dir", str(cnn), "--transfer-dir", str(second),
             "--output-dir", str(WORK / "compare"), "--store", str(STORE)]
        )  # fmt: skip
    results = {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}
    rows = [[key.removesuffix("_peak_rss_gib"), value] for key, value in results.items()
            if key.endswith("_peak_rss_gib")]  # fmt: skip
    print_table("Peak RSS per step (GiB; training steps: see training)", ["step", "GiB"], rows)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
