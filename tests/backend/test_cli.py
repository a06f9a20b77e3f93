"""``python -m backend``: the operator's commands, run in-process against the test database."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from backend import accounts
from backend.cli import main
from backend.db import Database
from backend.db.models import User
from backend.errors import AuthError

from .helpers import CHEAP_HASHER, PASSWORD, charged_job, make_user


@pytest.fixture
def cli(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("STUDIO_DATABASE_URL", db.url)
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))

    def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_user_credits_codes_and_verify(cli) -> None:
    assert cli("init")[0] == 0
    code, out, _ = cli("--json", "user", "add", "Root", "--admin", "--password-stdin", stdin="long enough pw\n")
    assert code == 0 and json.loads(out)["role"] == "admin"
    assert cli("credits", "grant", "root", "40", "--note", "launch")[0] == 0
    code, out, _ = cli("--json", "codes", "create", "3", "--credits", "5", "--expires-days", "30")
    first_code = json.loads(out)["codes"][0]
    assert cli("codes", "redeem", "root", first_code)[0] == 0
    code, out, _ = cli("--json", "credits", "show", "ROOT")
    shown = json.loads(out)
    assert shown["balance"] == 45 and [e["kind"] for e in shown["ledger"]] == ["redeem", "grant"]
    code, out, _ = cli("--json", "user", "list")
    assert [(u["name"], u["disabled"]) for u in json.loads(out)] == [("Root", False)]
    code, out, _ = cli("ledger", "verify")
    assert code == 0 and "ledger OK" in out


def test_user_disable_enable_and_passwd_take_effect(cli, db: Database) -> None:
    make_user(db, "ops")
    assert cli("user", "disable", "OPS")[0] == 0
    code, out, _ = cli("--json", "user", "list")
    assert [(u["name"], u["disabled"]) for u in json.loads(out)] == [("ops", True)]
    with pytest.raises(AuthError, match="disabled"):
        accounts.authenticate(db, "ops", PASSWORD, hasher=CHEAP_HASHER)
    assert cli("user", "enable", "ops")[0] == 0
    assert accounts.authenticate(db, "ops", PASSWORD, hasher=CHEAP_HASHER).name == "ops"
    assert cli("user", "passwd", "ops", "--password-stdin", stdin="a brand new pw\n")[0] == 0
    with pytest.raises(AuthError, match="Wrong user name or password"):
        accounts.authenticate(db, "ops", PASSWORD, hasher=CHEAP_HASHER)
    assert accounts.authenticate(db, "ops", "a brand new pw").name == "ops"


def test_errors_go_to_stderr_with_nonzero_exit(cli) -> None:
    code, out, err = cli("credits", "grant", "ghost", "5")
    assert code == 2 and out == "" and "No user named 'ghost'" in err
    code, _, err = cli("codes", "create", "0", "--credits", "5")
    assert code == 2 and "1–10000 codes" in err


def test_ledger_verify_fails_on_a_corrupted_ledger(cli, db: Database) -> None:
    user = make_user(db, "mo", credits=10)
    charged_job(db, user, 3)
    assert cli("ledger", "verify")[0] == 0
    with db.write() as s:
        s.execute(update(User).where(User.id == user.id).values(balance=8))
    code, out, _ = cli("--json", "ledger", "verify")
    report = json.loads(out)
    assert code == 1 and not report["ok"] and "user mo: balance 8 but ledger sums to 7" in report["problems"]


def test_module_entry_point_runs(tmp_path: Path) -> None:
    env = {"STUDIO_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "backend", "init"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "studio.db").exists() and "schema at revision" in result.stdout
