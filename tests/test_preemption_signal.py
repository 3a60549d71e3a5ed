"""The SIGTERM handler itself: it may run inside any log call, so it must not log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# stdout whose first write sends SIGTERM to the process: Python runs the handler at the next
# bytecode, inside the log call, while the log's write lock is held. A checkpoint's log line
# right after LATEST.json is written is where a preemption's SIGTERM lands most often.
SIGTERM_DURING_A_LOG_LINE = """
import json, os, signal, sys
from components.common.logging import configure, get_logger
configure(json=True)
from components.training.checkpoint import Preemption

class SignalsWhileWriting:
    def __init__(self, out):
        self.out, self.sent = out, False
    def write(self, text):
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return self.out.write(text)
    def flush(self):
        self.out.flush()

preemption = Preemption()
preemption.install()
preemption.in_fit = True
sys.stdout = SignalsWhileWriting(sys.__stdout__)
get_logger("training").info("checkpoint_saved", epoch=1)
sys.stdout = sys.__stdout__
print(json.dumps({"requested": preemption.requested, "noticed": preemption.noticed()}))
preemption.uninstall()
"""


def test_sigterm_inside_a_log_call_sets_the_flag_and_is_logged_afterwards():
    done = subprocess.run(
        [sys.executable, "-c", SIGTERM_DURING_A_LOG_LINE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,  # a handler that logs waits on the held write lock forever
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    events = [line for line in lines if line.startswith('{"component"')]
    # The interrupted line is whole, then the signal is logged once, from ordinary code.
    assert '"checkpoint_saved"' in events[0]
    assert [line for line in events if '"sigterm_received"' in line] == [events[1]]
    assert lines[-1] == '{"requested": true, "noticed": true}'
