"""How many torch threads one test process may use.

Alone, a test has the machine's cores; under pytest-xdist (the README's test command runs one worker
per core) each worker gets its share. A thread beyond a free core costs far more than it gives (20x
measured on this 2-core machine while another process computes), so every in-process scorer and
every engine process a test starts stays within its share.
"""

from __future__ import annotations

import os


def cores() -> int:
    """This test process's share of the cores: all of them, split evenly among xdist workers."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, len(os.sched_getaffinity(0)) // workers)
