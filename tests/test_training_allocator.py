"""The training process keeps freed memory: a freed large block is reused without page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.training.device import ALLOCATOR_ENV

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
pytestmark = pytest.mark.skipif(
    THP.exists() and "[always]" in THP.read_text(),
    reason="transparent huge pages always on: faults come per 2 MiB, not per page",
)
ROOT = Path(__file__).resolve().parents[1]

# Allocate, fill and free a 64 MiB block six times; count the page faults of each round.
SCRIPT = """
import json, resource
from components.training.device import keep_freed_memory
kept = keep_freed_memory()
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = bytearray(64 << 20)
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""
PAGES = (64 << 20) // os.sysconf("SC_PAGE_SIZE")


def _rounds(**env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout)


def test_a_freed_block_is_reused_instead_of_faulted_in_again():
    kept = _rounds()
    assert kept["kept"] is True
    assert kept["faults"][0] >= PAGES // 2  # the first round maps the memory in
    assert max(kept["faults"][1:]) < PAGES // 100  # later rounds reuse it


def test_glibc_default_on_request_faults_every_round():
    default = _rounds(**{ALLOCATOR_ENV: "1"})
    assert default["kept"] is False
    assert min(default["faults"]) >= PAGES // 2
