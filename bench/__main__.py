"""`make bench`: every benchmark side by side in one run, on the machine at hand.

Writes `bench/results/<machine>.json` and regenerates `docs/BENCHMARKS.md` from every results
file. `--quick` runs small versions (about 5 minutes on 2 cores, and 7 more for checkpoint,
sigterm and rerun on a loaded one); its figures prove the benchmarks run, they are not the
experiment's.

Every section records the machine's load before and during its run (`bench.machine.LoadMonitor`)
and is marked busy when other processes took a share of the cores. A busy section never
replaces a quiet one's figures in the results file (nor, therefore, in the report) unless
`--allow-busy` is given; its figures go to `results/refused/` instead and the run exits with
status 3.

Run: python -m bench [--quick] [--only data,training,reference,accuracy,transfer,memory,
                                       checkpoint,sigterm,rerun] [--allow-busy]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

from bench import bench_accuracy, bench_data, bench_memory, bench_training, bench_transfer
from bench.bench_checkpoint import main as checkpoint_main
from bench.bench_rerun import main as rerun_main
from bench.bench_sigterm import main as sigterm_main
from bench.machine import LoadMonitor, machine_info, refused_sections, run_is_busy
from bench.report import write_report
from bench.workdirs import path_free

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = {
    "data": bench_data.main,
    "training": bench_training.main,
    "reference": bench_training.reference_main,
    "accuracy": bench_accuracy.main,
    "transfer": bench_transfer.main,
    "memory": bench_memory.main,
    # Checkpoints, SIGTERM and reruns (issue 16): run with --only checkpoint,sigterm,rerun
    "checkpoint": checkpoint_main,
    "sigterm": sigterm_main,
    "rerun": rerun_main,
}


def machine_slug(machine: dict) -> str:
    """A file name for the machine: CPU model, cores and GPU."""
    name = f"{machine['cpu']}-{machine['cores']}c" + (
        f"-{machine['gpus'][0]}" if machine["gpus"] else ""
    )
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small versions (~5 min)")
    parser.add_argument("--source", default="auto", help="data source (default: Fashion-MNIST)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--results-dir", default=str(RESULTS))
    parser.add_argument("--report", default=None, help="Markdown report to regenerate")
    parser.add_argument(
        "--budget-s", default=None, help="time-to-accuracy budget per contender (seconds)"
    )
    parser.add_argument(
        "--allow-busy",
        action="store_true",
        help="let figures taken on a busy machine replace quiet ones",
    )
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {sorted(SECTIONS)}")
    machine = machine_info()
    command = "make bench" + (" QUICK=1" if args.quick else "")
    results = {
        "machine": machine,
        "quick": args.quick,
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sections": {},
    }
    folder = Path(args.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    path = folder / f"{machine_slug(machine)}{suffix}.json"
    old = json.loads(path.read_text()) if path.exists() else None
    if old:
        # Each section replaces its own figures as it is measured, and the others are kept: a
        # partial run (--only), or a full run that stops half-way, loses no earlier figures.
        known = {name: value for name, value in old.get("sections", {}).items() if name in SECTIONS}
        results["sections"] = known
    refused = []
    for name in wanted:
        print(f"== {name} ==", flush=True)
        section_argv = ["--source", args.source] + (["--quick"] if args.quick else [])
        if name == "accuracy" and args.budget_s:
            section_argv += ["--budget-s", args.budget_s]
        with LoadMonitor() as monitor:
            outcome = SECTIONS[name](section_argv)
        outcome.pop("machine", None)
        outcome = {**path_free(outcome), "load": monitor.record}
        print(f"load during {name}: {monitor.record}", flush=True)
        if refused_sections(old, {"sections": {name: outcome}}, args.allow_busy):
            refused.append(name)
            keep = folder / "refused" / path.name
            keep.parent.mkdir(parents=True, exist_ok=True)
            kept = json.loads(keep.read_text()) if keep.exists() else {**results, "sections": {}}
            kept["sections"][name] = outcome
            keep.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
            results["sections"][name] = old["sections"][name]
        else:
            results["sections"][name] = outcome
        results["busy"] = run_is_busy(results)
        # Saved after every section: a long run that stops keeps what it measured.
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"results: {path}")
    if refused:
        print(
            f"busy machine or slower host: the quiet figures of {refused} were kept; this "
            f"run's are in {folder / 'refused' / path.name} (--allow-busy replaces them)",
            file=sys.stderr,
        )
    if args.report or not args.quick:
        report = Path(args.report) if args.report else Path("docs/BENCHMARKS.md")
        write_report(folder, report)
        print(f"report: {report}")
    return 3 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
