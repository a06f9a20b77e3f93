"""The house rules, checked rather than only written (docs/architecture.md): the import
contracts in ``.importlinter`` (no SQL in the studio, the CLI or the agent; the backend
never imports a front end; no package cycles) and ``mypy`` on backend, agent and studio
with no errors (``mypy.ini``; its cache in ``.mypy_cache`` keeps reruns quick)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_import_contracts_are_kept() -> None:
    result = _run(str(BIN / "lint-imports"))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_mypy_finds_no_errors() -> None:
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Success" in result.stdout
