"""Fixtures shared by several test modules."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest


def mount_tmpfs(where: Path, options: str) -> bool:
    """Mount a tmpfs of its own at ``where`` (root only): a real filesystem that can really fill up."""
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return proc.returncode == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB filesystem of its own (tmpfs), unmounted afterwards."""
    fs = tmp_path / "fs"
    if not mount_tmpfs(fs, "size=1m,mode=0755"):
        pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN); see the max_page_count test")
    yield fs
    subprocess.run(["umount", "-l", str(fs)], check=True)
