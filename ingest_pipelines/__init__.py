"""ingest_pipelines: a Dagster code location that moves objects out of S3 into the systems that need them."""

import os
import platform
import sys

__version__ = "0.1.0"

#: Arrow's memory pool for this project's processes, unless the environment names one (read once, when pyarrow
#: first allocates: only a process that imports this package before pyarrow gets it, as the code location's do).
#: jemalloc keeps freed pages for reuse for about a second where mimalloc, pyarrow's default, hands them back
#: and faults them in again: the inventory diff of 1M rows took 13% less time (10M rows: 10%), for 25-40 MiB
#: more at the peak (docs/inventory.md). Linux x86-64 only, where pyarrow's wheels are built with it.
ARROW_MEMORY_POOL = "jemalloc"
#: whether importing this package put ARROW_DEFAULT_MEMORY_POOL into this process's environment (not the user):
#: processes started from here inherit it (a benchmark that times bare pyarrow beside us takes it out)
ARROW_POOL_SET_HERE = False


def _choose_arrow_memory_pool() -> None:
    global ARROW_POOL_SET_HERE
    if "pyarrow" in sys.modules or sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = ARROW_MEMORY_POOL
        ARROW_POOL_SET_HERE = True


_choose_arrow_memory_pool()
