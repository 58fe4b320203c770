"""--max_memory is a budget the run plans with: never more than the machine has free (a hostile run's 100 GB on a
23 GB machine planned one pass and failed mid-way with an allocator traceback)."""

from __future__ import annotations

import torch

from stylefusion.core.memory import available_memory, default_budget, memory_budget
from stylefusion.networks.transformer import TransformerNet
from stylefusion.run.stylizer import Stylizer

CPU = torch.device("cpu")


def test_a_budget_over_the_free_memory_is_brought_down_to_it():
    free = available_memory(CPU)
    assert free is not None and free > 0
    assert memory_budget(1 << 50, CPU) <= free  # 1 PB asked
    assert memory_budget(1 << 20, CPU) == 1 << 20  # a budget under the free memory stands
    assert memory_budget(None, CPU) == default_budget(CPU)


def test_a_stylizer_given_a_huge_budget_tiles_a_photo_that_does_not_fit_the_free_memory():
    stylizer = Stylizer(TransformerNet(), "cpu", "fp32", max_memory=1 << 50)
    assert stylizer.max_memory <= available_memory(CPU)
    # 400 MP: hundreds of GB in one pass, over any test machine's free memory: tiles (0 whole images at a time).
    assert stylizer.bytes_per_pixel * 20000 * 20000 > available_memory(CPU)
    assert stylizer.batch_limit(20000, 20000) == 0


def test_a_cgroup_v1_limit_counts_where_there_is_no_v2_one(tmp_path, monkeypatch):
    """A container limited through cgroup v1 (memory.limit_in_bytes) gets its headroom, not the host's free memory."""
    from stylefusion.core import memory

    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text(f"{3 << 30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{1 << 30}\n")
    v2 = (str(tmp_path / "memory.max"), str(tmp_path / "memory.current"))  # absent: no v2 controller
    monkeypatch.setattr(memory, "_CGROUP_FILES", (v2, (str(v1 / "memory.limit_in_bytes"),
                                                       str(v1 / "memory.usage_in_bytes"))))
    assert memory._cgroup_headroom() == 2 << 30
    assert available_memory(CPU) <= 2 << 30
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert memory._cgroup_headroom() is None


def test_format_bytes_reads_at_every_size():
    from stylefusion.core.memory import format_bytes

    assert [format_bytes(n) for n in (1, 1536, 5 * 1024 ** 3, 2.5 * 1024 ** 4)] == ["1 B", "1.5 KB", "5.0 GB", "2.5 TB"]
    assert format_bytes(240106601268053.1 * 1024 ** 4) == "240,106,601,268,053 TB"  # not "240106601268053.1 TB"
