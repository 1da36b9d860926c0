"""Shared by the benchmarks: the machine they ran on, and their RESULTS.md sections."""

from __future__ import annotations

import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (or what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def append_section(section: str, text: str, path: Path = RESULTS) -> None:
    """Append ``text`` at the end of the ``section`` heading's part of RESULTS.md,
    creating the section (at the end of the file) when it is missing."""
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = current.splitlines(keepends=True)
    if section not in (line.rstrip("\n") for line in lines):
        sep = "" if current.endswith("\n\n") else ("\n" if current.endswith("\n") else "\n\n")
        path.write_text(f"{current}{sep}{section}\n\n{text}")
        return
    start = next(i for i, line in enumerate(lines) if line.rstrip("\n") == section)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    body = "".join(lines[:end]).rstrip("\n") + "\n\n" + text
    rest = "".join(lines[end:])
    path.write_text(body + ("\n" + rest if rest else ""))
