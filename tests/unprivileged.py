"""Running the command line in a process that respects file permissions, even when the tests run as root.

Root ignores permission bits (``CAP_DAC_OVERRIDE``), so a read-only folder is writable to it. The child drops that
capability (and ``CAP_DAC_READ_SEARCH``) from its bounding set before it starts, so the permissions of the folders
the test sets up apply to it as they would to any user.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def _drop_permission_override() -> None:
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_cli_respecting_permissions(argv: list[str], cwd=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs ``optimum-depth <argv>`` in a child process for which file permissions hold.

    Args:
        argv: The command-line arguments.
        cwd: Working folder of the child.
        timeout: Seconds before the child is killed.

    Returns:
        The completed process (``returncode``, ``stdout``, ``stderr`` as text).
    """
    command = [str(Path(sys.executable).with_name("optimum-depth")), *argv]
    return subprocess.run(
        command,
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_drop_permission_override,
    )
