"""The lines every benchmark prints under its table: the exact command, and the machine."""

from __future__ import annotations

import os
import platform
import shlex
import sys


def footer(module: str, extra: str = "") -> list[str]:
    """`command: ...` (this run's arguments included) and `machine: ...` (plus `extra`)."""
    command = f"python -m {module} " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}{extra}"
    return [f"command: `{command.strip()}`", machine]
