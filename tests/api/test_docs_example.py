"""docs/api.md's Python example, run as written against the running studio."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from backend.config import REPO_ROOT

from .conftest import Studio, png_bytes


def example() -> str:
    text = (REPO_ROOT / "docs" / "api.md").read_text()
    section = text.split("## A whole job in 20 lines", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_example_is_twenty_lines() -> None:
    assert len(example().strip().splitlines()) <= 20


def test_the_example_runs(embedded: Studio, tmp_path: Path) -> None:
    api = embedded.user()
    (tmp_path / "example.py").write_text(example())
    (tmp_path / "photo.png").write_bytes(png_bytes(50, 40, (10, 200, 30)))
    env = {**os.environ, "STUDIO_URL": embedded.url, "STUDIO_TOKEN": api.token}
    run = subprocess.run([sys.executable, "example.py", "photo.png"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "state " and lines[-1] == "end succeeded", lines
    written = [p for p in tmp_path.glob("*.png") if p.name != "photo.png"]
    assert len(written) == 1 and written[0].read_bytes().startswith(b"\x89PNG")
