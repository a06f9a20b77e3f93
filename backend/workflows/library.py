"""All workflows of a directory, loaded once and looked up by name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import NotFound, SpecError
from .loader import SPEC_FILE, load_spec
from .spec import WorkflowSpec


def load_all(directory: Path) -> tuple[list[WorkflowSpec], list[SpecError]]:
    """Every workflow folder under ``directory`` (a folder with a spec.toml), and every failure."""
    directory = Path(directory)
    if not directory.is_dir():
        return [], [SpecError(f"{directory}: the workflows directory does not exist",
                              zh=f"{directory}：工作流目录不存在")]
    specs: list[WorkflowSpec] = []
    errors: list[SpecError] = []
    for folder in sorted(p for p in directory.iterdir() if (p / SPEC_FILE).is_file()):
        try:
            specs.append(load_spec(folder))
        except SpecError as exc:
            errors.append(exc)
    return specs, errors


class Library:
    """The workflows a studio offers. Build it with :meth:`load`; it never changes afterwards."""

    def __init__(self, *, specs: list[WorkflowSpec]) -> None:
        self._specs = {spec.name: spec for spec in sorted(specs, key=lambda s: (s.category, s.name))}

    @classmethod
    def load(cls, directory: Path) -> "Library":
        """Load every workflow in ``directory``; any broken spec fails the whole load, loudly."""
        specs, errors = load_all(directory)
        if errors:
            raise SpecError("; ".join(str(e) for e in errors), zh="；".join(e.zh for e in errors))
        return cls(specs=specs)

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
