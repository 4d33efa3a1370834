"""Time and peak memory of work in this process (helpers of the benchmark scripts).

:func:`median_ms`: median wall time of repeated calls, synchronised around each call.
:class:`PeakMemory`, CPU: peak resident set size (``VmHWM``, reset just before the block through
``/proc/self/clear_refs``) minus the resident size at that point; CUDA:
``max_memory_allocated`` above the allocation before the block.
"""
import os
import resource
import statistics
import time
from typing import Callable


def median_ms(fn: Callable[[], object], repeats: int,
              sync: Callable[[], None] = lambda: None) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn``, with ``sync()`` (e.g. CUDA
    synchronisation) before and after each."""
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def peak_rss_bytes(reset_ok: bool) -> int:
    if reset_ok:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """``with PeakMemory(device) as peak: ...``; then ``peak.bytes``."""

    def __init__(self, device):
        self.device = device
        self.bytes = None

    def __enter__(self):
        import torch
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = rss_bytes()
            self._reset_ok = reset_peak_rss()
        return self

    def __exit__(self, *exc):
        import torch
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self._base
        else:
            self.bytes = peak_rss_bytes(self._reset_ok) - self._base
        return False
