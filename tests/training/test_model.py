from __future__ import annotations

from pathlib import Path

import pytest

from retail_forecast.training.model import cpu_quota, training_threads


@pytest.mark.parametrize(
    ("line", "cpus"), [("max 100000\n", None), ("150000 100000\n", 1.5), ("400000 100000", 4.0)]
)
def test_a_cgroup_cpu_max_line_gives_its_quota(line: str, cpus: float | None) -> None:
    assert cpu_quota(line) == cpus


@pytest.mark.parametrize(
    ("affinity", "cpu_max", "omp", "threads"),
    [
        (8, "max 100000", None, 8),  # no quota: every CPU the process may run on
        (8, "200000 100000", None, 2),  # a quota of 2 CPUs on an 8-CPU host
        (8, "150000 100000", None, 1),  # a fractional quota rounds down: a throttled thread spins
        (2, "400000 100000", None, 2),  # affinity below the quota
        (8, "50000 100000", None, 1),  # less than one CPU still runs one thread
        (8, None, "3", 3),  # no cgroup file; the user's OMP_NUM_THREADS
        (2, None, "16", 2),  # OMP_NUM_THREADS never raises the count
        (4, None, "junk", 4),
    ],
)
def test_training_threads_follow_affinity_quota_and_omp_num_threads(
    tmp_path: Path, affinity: int, cpu_max: str | None, omp: str | None, threads: int
) -> None:
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max + "\n")
    environ = {} if omp is None else {"OMP_NUM_THREADS": omp}
    assert training_threads(affinity=affinity, cpu_max=path, environ=environ) == threads


def test_training_threads_default_to_this_process_affinity() -> None:
    import os  # noqa: PLC0415

    assert 1 <= training_threads() <= len(os.sched_getaffinity(0))
