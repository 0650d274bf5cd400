"""Hold a worker's task run in one phase, so a test can act (cancel, kill) at that exact point.

Test settings install `hold_in_phase` as `DICOM_TASK_PHASE_HOOK`. The worker process is told
what to hold through its environment: `ADIT_TEST_HOLD_PHASE_FILE` names a file holding the
name of a `Phase` (e.g. ``STORING``), read anew at every phase so one worker can serve several
holds; `ADIT_TEST_HOLD_SECONDS` says how long to hold (default 2). When a run enters that phase
the hook writes the task's label to `<file>.reached`, then sleeps in the entering thread. The
sleep does not look at aborts on purpose: it stands for a step that is busy when the abort
comes, and the code after it must notice the abort by itself.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from adit.core.processors import Phase


def hold_in_phase(phase: Phase, task_label: str) -> None:
    control = os.environ.get("ADIT_TEST_HOLD_PHASE_FILE")
    if not control:
        return
    try:
        wanted = Path(control).read_text().strip()
    except FileNotFoundError:
        return
    if wanted != phase.name:
        return
    Path(f"{control}.reached").write_text(task_label)
    time.sleep(float(os.environ.get("ADIT_TEST_HOLD_SECONDS", "2")))
