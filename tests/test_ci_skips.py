"""The suite's own rule: in CI (``CI=true``) a skipped test is a failed one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIPS = '''
import pytest
from tests import services

def test_server_away():
    services.require("a server", "127.0.0.1", 1)

def test_tool_missing():
    services.require_tool("no-such-tool")

def test_bare_skip():
    pytest.skip("just skipped")

@pytest.mark.skipif(True, reason="a skipif mark")
def test_marked():
    pass
'''


def run_with(tmp_path: Path, source: str, ci: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_skipping.py").write_text(source)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def test_skips_are_skips_locally(tmp_path: Path) -> None:
    result = run_with(tmp_path, SKIPS, ci="")
    assert result.returncode == 0 and "4 skipped" in result.stdout, result.stdout


@pytest.mark.parametrize("source", [SKIPS, "import pytest\npytest.importorskip('no_such_module')\n"],
                         ids=["in-tests", "whole-module"])
def test_every_skip_fails_in_ci(tmp_path: Path, source: str) -> None:
    result = run_with(tmp_path, source, ci="true")
    assert result.returncode != 0 and "skipped" not in result.stdout.splitlines()[-1], result.stdout
    assert "CI=true runs every test, so a skip is a failure" in result.stdout
