"""The embedded Dask cluster shared by ``seqcirc grid`` and ``seqcirc run --all``: one single-threaded
worker process per core, and the thread environment each notebook kernel gets on it.

A worker runs one notebook at a time (one Dask thread); the notebook's kernel is a child process of
the worker and gets :func:`thread_environment` (``OMP_NUM_THREADS=1`` etc.), so ``n`` workers use
``n`` cores and do not oversubscribe them. Imports ``distributed`` only when a cluster is started.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from seqcirc_utils.core.errors import ParameterError

#: Environment variables that set a kernel's (torch, BLAS) thread count.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_environment(threads: int = 1) -> dict[str, str]:
    """``{OMP_NUM_THREADS: "1", ...}``: the environment that gives a kernel ``threads`` torch/BLAS threads."""
    if threads < 1:
        raise ParameterError(f"threads must be >= 1, got {threads}")
    return {name: str(threads) for name in THREAD_ENV_VARS}


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: Dask's nanny sets this in every worker's environment (``distributed.nanny.pre-spawn-environ``) so that
#: glibc hands freed memory back at once; our kernels inherit it, and torch's per-pass allocations then
#: fault their pages in again on every pass. Measured on 2 cores (chapters 06 and 12 on 2 workers): a third
#: of the kernels' CPU time was system time (11.5 s of 68 s) with it, ~1 s without. We unset it.
DASK_MALLOC_TRIM = "MALLOC_TRIM_THRESHOLD_"


def local_cluster(n_workers: int, resources: Mapping[str, float] | None = None):
    """An embedded ``LocalCluster``: ``n_workers`` processes (named ``0`` .. ``n_workers - 1``), one
    thread each, one BLAS/torch thread each; no dashboard, logs at ERROR only. The workers (and the
    kernels they start) keep glibc's default memory trimming (:data:`DASK_MALLOC_TRIM` is not set)."""
    import logging

    import dask
    from distributed import LocalCluster

    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{DASK_MALLOC_TRIM}": None}):
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            resources=dict(resources) if resources else None,
            silence_logs=logging.ERROR,
            env=thread_environment(1),
        )


def worker_name() -> str:
    """The name of the Dask worker running the caller (``"0"``, ``"1"``, ... on a :func:`local_cluster`),
    else ``""`` (not on a worker, or ``distributed`` not installed)."""
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except Exception:  # not on a Dask worker (a plain call), or no distributed
        return ""
