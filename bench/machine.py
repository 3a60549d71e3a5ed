"""Describe the machine a benchmark ran on, and print result tables."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def gpu_names() -> list[str]:
    """GPU names from nvidia-smi; empty without one."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


# Starts the measured command and writes its peak RSS (KiB) to argv[1]. Linux carries the
# high-water RSS of the memory image a process replaces at exec into that process's ru_maxrss;
# Python starts children with vfork, whose image is the parent's, so wait4 on a direct child of
# the bench reports at least the bench's own peak RSS (a 1 GiB parent: 1038 MiB for
# `python -c pass`). This launcher is a small process of its own (about 14 MiB).
_PEAK_RSS_LAUNCHER = """
import os, sys
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_peak_rss(command: list[str], *, cwd: Path, stdout=None) -> tuple[int, float]:
    """Run `command` to completion: its exit status and peak RSS in MiB (not floored by ours).

    A status of 128 + N: the command was killed by signal N.
    """
    with tempfile.TemporaryDirectory(prefix="peak-rss-") as folder:
        report = Path(folder) / "maxrss_kib"
        launcher = [sys.executable, "-c", _PEAK_RSS_LAUNCHER, str(report), *command]
        code = subprocess.run(launcher, cwd=cwd, stdout=stdout, check=False).returncode
        kib = int(report.read_text()) if report.exists() else 0
    return code, kib / 1024


def machine_info() -> dict:
    """CPU model, cores, memory, GPUs, and the TF and Python versions."""
    import tensorflow as tf

    memory_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        memory_gib = round(kib / 2**20, 1)
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "gpus": gpu_names(),
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }


def print_table(title: str, header: list[str], rows: list[list[object]]) -> str:
    """Print (and return) a Markdown table."""
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    return text


# --- Contention: how busy the machine was while a section ran -----------------------------

# A section counts as busy when, on average over its run, processes other than the benchmark
# used more than BUSY_OTHER_CORES cores (from /proc/stat's busy time minus the benchmark's own
# CPU time, its waited-for children included), or, where /proc/stat is missing, when the mean
# 1-minute load average exceeded the core count by more than BUSY_LOAD_MARGIN (the benchmark
# alone keeps about one runnable thread per core; one more whole runnable process is contention).
BUSY_OTHER_CORES = 0.25
BUSY_LOAD_MARGIN = 1.0
SAMPLE_S = 5.0  # load average sampling period during a section
# A virtual machine's host can slow it without any sign in /proc/stat (steal stays at 0 on some
# hypervisors). The CPU probe times a fixed single-threaded workload before and after each
# section; a section whose probe took SLOWER_HOST times the kept quiet figures' probe ran on a
# slower host, and does not replace them either.
SLOWER_HOST = 1.25
PROBE_LOOPS = 200_000
PROBE_REPEATS = 7


def cpu_probe_ms(loops: int = PROBE_LOOPS, repeats: int = PROBE_REPEATS) -> float:
    """Milliseconds one core takes for a fixed pure-Python loop: the median of `repeats`.

    Taken when the benchmark itself is idle (at a section's edges), it measures what a core gives
    this process at the time; a host busy with other guests shows as a longer time.
    """
    import statistics
    import time

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for i in range(loops):
            total += i * i
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def _proc_stat_busy_s() -> float | None:
    """Seconds of CPU time all processes spent busy since boot (None without /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...
    values = [int(v) for v in fields[1:]]
    busy = sum(values[:8]) - values[3] - values[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its children that were waited for."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def judge(load: dict, cores: int) -> bool:
    """Whether the figures of a load record (see `LoadMonitor.record`) count as busy."""
    other = load.get("other_cores")
    if other is not None:
        return other > BUSY_OTHER_CORES
    during = load.get("loadavg_during_mean")
    return during is not None and during > cores + BUSY_LOAD_MARGIN


class LoadMonitor:
    """Record the machine's load before and during a section (a context manager).

    Before: the 1/5/15-minute load averages. During: load averages sampled every SAMPLE_S
    seconds (mean and max), and the cores used on average by processes other than this one
    and its children. Before and after: the CPU probe (`cpu_probe_ms`), for the host's speed.
    """

    def __init__(self, sample_s: float = SAMPLE_S):
        import threading

        self.sample_s = sample_s
        self.cores = os.cpu_count() or 1
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.record: dict = {}

    def _sample(self) -> None:
        while not self._stop.wait(self.sample_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadMonitor:
        import time

        self._probe_before = cpu_probe_ms()
        self._before = os.getloadavg()
        self._wall = time.perf_counter()
        self._busy = _proc_stat_busy_s()
        self._own = _own_cpu_s()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import time

        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self._wall
        self.samples.append(os.getloadavg()[0])
        busy = _proc_stat_busy_s()
        own = _own_cpu_s() - self._own
        other = None
        if busy is not None and self._busy is not None and wall > 0:
            other = max(0.0, (busy - self._busy - own) / wall)
        self.record = {
            "cores": self.cores,
            "loadavg_before": [round(v, 2) for v in self._before],
            "loadavg_during_mean": round(sum(self.samples) / len(self.samples), 2),
            "loadavg_during_max": round(max(self.samples), 2),
            "own_cores": round(own / wall, 2) if wall > 0 else None,
            "other_cores": None if other is None else round(other, 2),
            "seconds": round(wall, 1),
            "cpu_probe_ms": [self._probe_before, cpu_probe_ms()],
        }
        self.record["busy"] = judge(self.record, self.cores)


def run_is_busy(result: dict) -> bool | None:
    """Whether any section of a results file was taken on a busy machine; None: not recorded."""
    loads = [s.get("load") for s in result.get("sections", {}).values()]
    if not loads or any(load is None for load in loads):
        return None
    return any(load["busy"] for load in loads)


def refused_sections(old: dict | None, new: dict, allow_busy: bool) -> list[str]:
    """Sections of `new` that must not replace `old`'s: busy figures over quiet ones.

    A section of `old` counts as quiet only when its load was recorded and not busy; figures
    with no load record (older runs) may be replaced. New figures that are quiet inside the
    machine are refused too when their CPU probe shows a slower host than the old figures' (see
    `slower_host`). `allow_busy` lifts the refusal.
    """
    if allow_busy or not old:
        return []
    refused = []
    for name, section in new.get("sections", {}).items():
        previous = old.get("sections", {}).get(name)
        old_load = (previous or {}).get("load")
        new_load = section.get("load") or {}
        if old_load is None or old_load.get("busy"):
            continue
        if new_load.get("busy", True) or slower_host(old_load, new_load):
            refused.append(name)
    return refused


def slower_host(old_load: dict, new_load: dict) -> bool:
    """Whether the new load record's CPU probe took SLOWER_HOST times the old one's or more.

    Each record's slowest probe (before or after its section) counts; without a probe in both
    records nothing can be said (False).
    """
    old_probe, new_probe = old_load.get("cpu_probe_ms"), new_load.get("cpu_probe_ms")
    if not old_probe or not new_probe:
        return False
    return max(new_probe) >= SLOWER_HOST * max(old_probe)
