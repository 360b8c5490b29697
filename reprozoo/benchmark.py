"""A job's benchmark file, as Snakemake's `benchmark:` writes one (the same TSV columns): what a job that
DVC runs writes (`--benchmark`), and what the Snakefile reads back into Snakemake's records of that job
(rules/dvc.smk), so that `snakemake --report` shows what DVC's jobs took."""
from __future__ import annotations

import contextlib
import resource
import time
from datetime import timedelta
from pathlib import Path
from typing import Iterator

from reprozoo.io import write_text

# The columns of Snakemake's benchmark files (its BenchmarkRecord.get_header(); tests/test_dvc.py compares).
BENCHMARK_COLUMNS = ("s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load",
                     "cpu_time")


@contextlib.contextmanager
def benchmark(path: str | Path) -> Iterator[None]:
    """The block measured into a benchmark file as Snakemake's `benchmark:` writes one, for a job that DVC
    runs (`--benchmark`): wall seconds, peak RSS, I/O and CPU seconds of this process and its children,
    from the kernel's accounting at the end; Snakemake's sampling thread is not safe beside tune's forked
    trial workers. What that accounting does not give (virtual, unique, proportional memory, the sampled
    load) is NA."""
    def usage():
        return [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]

    def spent(field):
        return sum(getattr(u, field) for u in after) - sum(getattr(u, field) for u in before)

    before, start = usage(), time.perf_counter()
    yield
    seconds, after = time.perf_counter() - start, usage()
    write_benchmark(path, {"s": f"{seconds:.4f}", "h:m:s": str(timedelta(seconds=int(seconds))),
                           "max_rss": f"{max(u.ru_maxrss for u in after) / 1024:.2f}",
                           "io_in": f"{spent('ru_inblock') * 512 / 2**20:.2f}",
                           "io_out": f"{spent('ru_oublock') * 512 / 2**20:.2f}",
                           "cpu_time": f"{spent('ru_utime') + spent('ru_stime'):.2f}"})


def write_benchmark(path: str | Path, values: dict | None = None) -> None:
    """A benchmark file of one row: `values` by column, NA for the rest (all NA: a job not run here)."""
    row = [str((values or {}).get(column, "NA")) for column in BENCHMARK_COLUMNS]
    write_text(path, "\t".join(BENCHMARK_COLUMNS) + "\n" + "\t".join(row) + "\n")


def benchmark_seconds(path: str | Path) -> float | None:
    """The wall seconds a benchmark file records; None where it records none (missing, NA, unreadable)."""
    try:
        return float(Path(path).read_text().splitlines()[1].split("\t")[0])
    except (OSError, IndexError, ValueError):
        return None
