"""All workflows of a directory, loaded once and looked up by name."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from ..errors import NotFound, SpecError
from .loader import SPEC_FILE, load_spec
from .spec import WorkflowSpec

log = logging.getLogger(__name__)


def load_all(directory: Path) -> tuple[list[WorkflowSpec], list[SpecError]]:
    """Every workflow folder under ``directory`` (a folder with a spec.toml), and every failure."""
    directory = Path(directory)
    if not directory.is_dir():
        return [], [SpecError(f"{directory}: the workflows directory does not exist",
                              zh=f"{directory}：工作流目录不存在")]
    specs: list[WorkflowSpec] = []
    errors: list[SpecError] = []
    for folder in sorted(p for p in directory.iterdir() if (p / SPEC_FILE).is_file() and not p.name.startswith(".")):
        try:
            specs.append(load_spec(folder))
        except SpecError as exc:
            errors.append(exc)
        except Exception as exc:  # noqa: BLE001 - whatever a broken folder raises, it is that folder's problem
            errors.append(SpecError(f"{folder}: cannot be loaded ({type(exc).__name__}: {exc})",
                                    zh=f"{folder}：无法加载（{type(exc).__name__}: {exc}）"))
    return specs, errors


class Library:
    """The workflows a studio offers. Build it with :meth:`load`; it never changes afterwards."""

    def __init__(self, *, specs: list[WorkflowSpec], problems: tuple[SpecError, ...] = ()) -> None:
        self._specs = {spec.name: spec for spec in sorted(specs, key=lambda s: (s.category, s.name))}
        #: The folders that failed to load (and are not offered).
        self.problems = problems

    @classmethod
    def load(cls, directory: Path) -> "Library":
        """Load every workflow in ``directory``. A folder that fails to load is left out
        with an error in the log (one bad import must not keep the studio from starting;
        ``workflows check`` lists them all); a missing directory is an error."""
        directory = Path(directory)
        if not directory.is_dir():
            raise SpecError(f"{directory}: the workflows directory does not exist",
                            zh=f"{directory}：工作流目录不存在")
        specs, errors = load_all(directory)
        for error in errors:
            log.error("workflow skipped: %s (run 'python -m backend workflows check')", error)
        return cls(specs=specs, problems=tuple(errors))

    def get(self, name: str) -> WorkflowSpec:
        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(self._specs) or "none"
            raise NotFound(f"There is no workflow named {name!r} (available: {known})",
                           zh=f"没有名为 {name!r} 的工作流（可用：{known}）")
        return spec

    def names(self) -> list[str]:
        return list(self._specs)

    def __iter__(self) -> Iterator[WorkflowSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs
