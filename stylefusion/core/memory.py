"""How much memory a device has free, to refuse sizes that cannot fit before allocating anything."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import ConfigError


# (limit, usage) files of a cgroup v2 and of a cgroup v1 memory controller; v1 says "no limit" with a huge number.
_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))
_NO_LIMIT = 1 << 60


def _cgroup_headroom() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2, else v1), or None when there is no limit."""
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= _NO_LIMIT:
                return None
            return int(limit) - int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new allocations on `device` (host RAM for the CPU), or None when it cannot be told."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    free: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    headroom = _cgroup_headroom()
    return free if headroom is None else min(free, max(headroom, 0))


# The share of the memory free now that a run may use when no budget is given (--max_memory).
DEFAULT_BUDGET_SHARE = 0.5


def default_budget(device: torch.device) -> int:
    """A safe share of the memory free now: what a run may use when --max_memory is not given."""
    free = available_memory(device)
    return 4 << 30 if free is None else int(free * DEFAULT_BUDGET_SHARE)


def memory_budget(requested: float | None, device: torch.device) -> int:
    """The bytes a run may plan with: `requested` (--max_memory), but never more than `device` has free now (a larger
    budget would let a plan allocate what is not there, and the run fail mid-way); None: default_budget."""
    if requested is None:
        return default_budget(device)
    free = available_memory(device)
    return int(requested if free is None else min(requested, free))


def format_bytes(count: float) -> str:
    """1536 -> '1.5 KB' (powers of 1024, one decimal; whole TB with thousands marked past 1000 TB)."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB" if count < 1000 else f"{count:,.0f} TB"


def check_fits(needed: int, device: torch.device, what: str, hint: str) -> None:
    """Raise ConfigError when `needed` bytes are more than `device` has free (nothing is allocated)."""
    free = available_memory(device)
    if free is not None and needed > free:
        raise ConfigError(f"{what} needs at least {format_bytes(needed)} of memory, but only {format_bytes(free)} "
                          f"is available on {device}: {hint}")
