"""Pricing a job before it is submitted: cost, memory, duration and the guard's verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import GuardRejected, InvalidParameter
from ..formulas import credits_from
from .spec import FACTS_BY_TYPE, FILE_TYPES, NUMERIC_TYPES, Text, WorkflowSpec


@dataclass(frozen=True, kw_only=True)
class InputFacts:
    """What was measured about one uploaded file (pixels for images, length for audio/video)."""

    width: int = 0
    height: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Quote:
    """The price and predictions for one job. ``rejection`` is set when a guard refuses it."""

    cost: int
    memory_mb: float
    seconds: float
    rejection: Text | None = None

    @property
    def accepted(self) -> bool:
        return self.rejection is None

    def check(self) -> None:
        """Raise :class:`GuardRejected` with the guard's message if the job is refused."""
        if self.rejection is not None:
            raise GuardRejected(self.rejection.en, zh=self.rejection.zh)


def formula_values(spec: WorkflowSpec, values: Mapping[str, Any],
                   inputs: Mapping[str, InputFacts]) -> dict[str, float]:
    """The names a formula sees: numeric parameter values and ``<file param>_<fact>``."""
    result: dict[str, float] = {}
    for param in spec.params:
        if param.type in NUMERIC_TYPES:
            result[param.name] = float(values[param.name])
        elif param.type in FILE_TYPES:
            facts = inputs.get(param.name)
            if facts is None:
                raise InvalidParameter(f"{param.label.en} ({param.name}) has not been measured; upload the file first",
                                       zh=f"{param.label.zh}（{param.name}）尚未检测，请先上传文件", param=param.name)
            measured = {"width": facts.width, "height": facts.height, "area": facts.width * facts.height,
                        "seconds": facts.seconds}
            for fact in FACTS_BY_TYPE[param.type]:
                result[f"{param.name}_{fact}"] = float(measured[fact])
    return result


def quote(spec: WorkflowSpec, values: Mapping[str, Any], inputs: Mapping[str, InputFacts] | None = None) -> Quote:
    """Cost (whole credits), memory (MiB), predicted seconds and guard verdict for ``values``.

    ``values`` are validated parameter values; ``inputs`` the facts of each file parameter.
    The first guard whose ``reject_if`` is true decides the refusal message.
    """
    names = formula_values(spec, values, inputs or {})
    rejection = None
    for guard in spec.guards:
        if guard.reject_if.evaluate(names):
            figures = {name: formula.evaluate(names) for name, formula in guard.figures.items()}
            fill = {**names, **figures}
            rejection = Text(en=guard.message.en.format(**fill), zh=guard.message.zh.format(**fill))
            break
    return Quote(cost=credits_from(spec.cost.evaluate(names)),
                 memory_mb=max(0.0, spec.memory_mb.evaluate(names)),
                 seconds=max(0.0, spec.seconds.evaluate(names)),
                 rejection=rejection)
