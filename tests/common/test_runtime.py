"""`--part K/N` parsing, shared by curate and redundancy (explicit, or from the launcher's environment)."""
from __future__ import annotations

import pytest

from facesift.common.runtime import parse_part


def test_part_parsing(monkeypatch):
    assert parse_part("") is None and parse_part("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_part(bad)
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"):
        monkeypatch.delenv(name, raising=False)
    assert parse_part("auto") is None
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert parse_part("auto") == (2, 8)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert parse_part("auto") == (1, 3)


def test_cpu_has_bf16_reads_the_flags(tmp_path):
    from facesift.common.runtime import cpu_has_bf16
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert cpu_has_bf16(str(with_bf16)) and not cpu_has_bf16(str(without))
    assert not cpu_has_bf16(str(tmp_path / "missing"))
