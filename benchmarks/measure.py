"""Run a command; write its peak RSS, CPU seconds and exit code as JSON to a file.

    python -m benchmarks.measure OUT.json COMMAND [ARG ...]

The harness starts fastmigrate through this small process instead of directly. Linux carries a process's
RSS high-water mark through fork and exec: a child forked from the harness (which holds the oracle of a whole
fleet, 600 MB at 1M instances) reports the harness's peak through ``wait4``, not its own. Forked from this
process, which holds next to nothing, fastmigrate's peak is its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    out, *command = sys.argv[1:]
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    Path(out).write_text(json.dumps({"peak_rss_kb": usage.ru_maxrss, "exit_code": code,
                                     "cpu_seconds": usage.ru_utime + usage.ru_stime}))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
