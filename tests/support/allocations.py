"""Measure what given source files keep allocated (CPython), blind to other threads.

`tracemalloc.get_traced_memory()` counts every thread; under pytest-xdist the worker's execnet
thread allocates while a test runs, so a plain before/after difference is noise-prone. Here only
the allocations made from the named files count.
"""

import tracemalloc


def allocated_by(files, action):
    """Net bytes allocated by code in `files` (paths) while `action()` runs, and its result."""
    only_these = [tracemalloc.Filter(True, str(path)) for path in files]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(only_these)
        result = action()
        after = tracemalloc.take_snapshot().filter_traces(only_these)
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown, result
