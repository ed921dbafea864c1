"""A few seconds of coverage-guided fuzzing of the decode path (tests/checks/fuzz_decode.py, in its
own process: libFuzzer owns the process it runs in). Nothing but `ApiError` may escape, and no
input may crash the process; `make fuzz` runs the same harness for minutes."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).with_name("fuzz_decode.py")
SECONDS = 5


def test_the_decode_path_refuses_with_api_errors_only(tmp_path: Path) -> None:
    # libFuzzer's RSS limit reads the process's peak RSS, and Linux carries the peak of the
    # process that spawned it into the child across exec: the harness starts at this pytest
    # process's size (gigabytes, with every model loaded). The limit is 2 GB above that.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    result = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            str(tmp_path / "corpus"),
            "-seed=1",
            f"-max_total_time={SECONDS}",
            f"-rss_limit_mb={inherited_mb + 2048}",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
    )
    report = (result.stdout + result.stderr)[-6000:]
    findings = sorted(path.name for path in tmp_path.glob("crash-*"))
    assert result.returncode == 0 and not findings, f"{findings}\n{report}"
    runs = re.search(r"Done (\d+) runs", result.stderr)
    assert runs and int(runs.group(1)) > 0, report
