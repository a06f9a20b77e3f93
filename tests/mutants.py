"""Mutation spot-checks: plant a one-token bug, run the tests that must catch it, restore.

Each :class:`Plant` weakens one rule that guards money, access or a state change. The
check passes when the named tests FAIL with the plant in place (the bug is caught) and the
file is restored afterwards, whatever happens. docs/testing.md keeps the table.

    .venv/bin/python -m tests.mutants            # every plant
    .venv/bin/python -m tests.mutants debit      # plants whose name contains "debit"

Plants edit the working tree: run it on a clean checkout, not while editing the files.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plant:
    name: str
    path: str
    #: Text that occurs exactly once in ``path``, and what it becomes.
    old: str
    new: str
    #: pytest node ids or ``-k`` free arguments; at least one test must fail.
    tests: tuple[str, ...]


DISPATCH = "tests/backend/test_dispatch.py"

PLANTS: tuple[Plant, ...] = (
    # ---- state changes: dispatch ------------------------------------------------------
    Plant("dispatch: a pass that lost a job does not run again", "backend/dispatcher.py",
          "self._lost_race = True\n", "pass\n", (DISPATCH,)),
    Plant("dispatch: a stale copy may reuse an attempt", "backend/dispatcher.py",
          "expect_attempts=job.attempts, ", "", (DISPATCH,)),
)


def run(plant: Plant) -> str | None:
    """The first test that caught the plant, or None if it survived."""
    path = ROOT / plant.path
    original = path.read_text()
    if original.count(plant.old) != 1:
        raise SystemExit(f"{plant.name}: {plant.old!r} occurs {original.count(plant.old)} times in {plant.path}")
    try:
        path.write_text(original.replace(plant.old, plant.new))
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *plant.tests],
            cwd=ROOT, capture_output=True, text=True,
        )
    finally:
        path.write_text(original)
    if result.returncode != 1:  # 0: all passed; 2-5: pytest could not run them
        return None
    failed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return failed[0] if failed else "?"


def main(argv: list[str]) -> int:
    chosen = [p for p in PLANTS if not argv or any(word in p.name for word in argv)]
    survived = []
    for plant in chosen:
        caught = run(plant)
        print(f"{'caught  ' if caught else 'SURVIVED'} {plant.name}" + (f"  <- {caught}" if caught else ""), flush=True)
        if not caught:
            survived.append(plant.name)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} plants caught")
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
