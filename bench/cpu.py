"""CPU used by each component of the stack during a scenario, from /proc/<pid>/stat."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (its own threads), or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # After the ")" field 14 (utime) and 15 (stime) of proc(5) are at index 11 and 12.
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


@dataclass
class ComponentCpu:
    """Samples every recorded service's CPU time; ``stop()`` gives % of one core each."""

    pids: dict[str, int]
    _start: dict[str, float] = field(default_factory=dict)
    _started_at: float = 0.0

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> ComponentCpu:
        pids = {}
        for path in sorted((run_dir / "pids").glob("*.pid")):
            try:
                pids[path.stem] = int(path.read_text().strip())
            except ValueError:
                continue
        return cls(pids)

    def start(self) -> None:
        self._start = {
            name: seconds
            for name, pid in self.pids.items()
            if (seconds := cpu_seconds(pid)) is not None
        }
        self._started_at = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._started_at
        usage = {}
        for name, before in self._start.items():
            after = cpu_seconds(self.pids[name])
            if after is not None and wall > 0:
                usage[name] = round(100 * (after - before) / wall, 1)
        return usage
