"""Checking a creator's parameter values against a spec.

:func:`validate_params` turns what a form, the CLI or an API client sent (strings or JSON
values) into the complete, typed set of values a job records and the prompt is built
from: defaults filled in, presets applied, seeds resolved. Every refusal is an
:class:`InvalidParameter` naming the parameter and what is allowed, in English and Chinese.
"""

from __future__ import annotations

import math
import random
import unicodedata
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidParameter
from .spec import FILE_TYPES, Param, WorkflowSpec

#: Default length caps: a one-line string and a multi-line text (prompts).
STRING_MAX_LENGTH = 200
TEXT_MAX_LENGTH = 2000
#: The absolute cap a spec's ``max_length`` may not exceed.
HARD_MAX_LENGTH = 10_000
#: A file parameter's value is a reference (asset id or content hash), never a path.
FILE_REF_MAX_LENGTH = 200
#: A seed of -1 asks for a random seed.
RANDOM_SEED = -1
#: Random seeds stay below 2**53 so they survive a round trip through JSON in a browser.
RANDOM_SEED_LIMIT = 2**53 - 1
#: No whole-number input of ComfyUI goes beyond this (seeds reach 2**64 - 1).
MAX_WHOLE_NUMBER = 2**64

#: Bidirectional embeddings, overrides and isolates: they reorder how text is shown, so
#: "abc<U+202E>gpj.exe" reads differently from what it is. Directional *marks* (LRM,
#: RLM), which Persian, Arabic and Hebrew text uses, stay allowed.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def validate_params(spec: WorkflowSpec, raw: Mapping[str, Any], *, expert: bool = False,
                    rng: random.Random | None = None) -> dict[str, Any]:
    """The complete, typed values for a job of ``spec`` from ``raw``.

    In beginner mode (``expert=False``) only beginner parameters and presets may be given;
    every expert parameter comes from its default or a preset. In expert mode presets
    apply first and explicit values win. A seed of -1 is replaced by a concrete random
    seed (from ``rng`` if given) so the job records what actually ran. The result also
    records each preset's chosen option, so validating it again reproduces it.
    """
    for key in raw:
        param = spec.param(key)
        if param is None and spec.preset(key) is None:
            known = ", ".join([p.name for p in spec.params] + [p.name for p in spec.presets])
            raise InvalidParameter(f"Workflow '{spec.name}' has no parameter '{key}' (known: {known})",
                                   zh=f"工作流 '{spec.name}' 没有参数 '{key}'（可用参数：{known}）", param=key)
        if param is not None and not expert and not param.beginner:
            raise InvalidParameter(f"{_label(param)} is an expert setting; switch to expert mode to change it",
                                   zh=f"{_label_zh(param)}是专家设置，请切换到专家模式后再修改", param=key)

    values: dict[str, Any] = {p.name: p.default for p in spec.params}
    chosen: dict[str, str] = {}
    for preset in spec.presets:
        name = raw.get(preset.name, preset.default)
        option = preset.option(str(name))
        if option is None:
            allowed = ", ".join(o.name for o in preset.options)
            raise InvalidParameter(f"{preset.label.en} ({preset.name}) must be one of {allowed}, not {name!r}",
                                   zh=f"{preset.label.zh}（{preset.name}）必须是以下之一：{allowed}，而不是 {name!r}",
                                   param=preset.name)
        chosen[preset.name] = option.name
        values.update(option.values)  # preset values were validated when the spec loaded

    for key, value in raw.items():
        param = spec.param(key)
        if param is not None:
            values[key] = coerce(param, value)

    for param in spec.params:
        value = values[param.name]
        # Spaces alone say nothing: a prompt of blanks is as missing as an empty one.
        if param.required and (value is None or (isinstance(value, str) and not value.strip())):
            raise InvalidParameter(f"{_label(param)} is required", zh=f"{_label_zh(param)}为必填项", param=param.name)
        if param.type == "seed" and value == RANDOM_SEED:
            values[param.name] = _random_seed(param, rng or random.SystemRandom())
    return {**values, **chosen}


def coerce(param: Param, value: Any) -> Any:
    """``value`` converted to ``param``'s type and checked against its limits."""
    if param.type in ("int", "seed"):
        return _check_range(param, _to_int(param, value))
    if param.type == "float":
        return _check_range(param, _to_float(param, value))
    if param.type == "bool":
        return _to_bool(param, value)
    if param.type == "choice":
        text = value if isinstance(value, str) else _format(value) if _is_number(value) else None
        if text not in param.options:
            allowed = ", ".join(param.options)
            raise InvalidParameter(f"{_label(param)} must be one of {allowed}, not {value!r}",
                                   zh=f"{_label_zh(param)}必须是以下之一：{allowed}，而不是 {value!r}", param=param.name)
        return text
    if param.type in FILE_TYPES:
        if not isinstance(value, str) or not value or len(value) > FILE_REF_MAX_LENGTH:
            raise InvalidParameter(f"{_label(param)} needs an uploaded file", zh=f"{_label_zh(param)}需要上传文件",
                                   param=param.name)
        return value
    return _to_text(param, value)


def max_length(param: Param) -> int:
    """The length cap of a string or text parameter."""
    if param.max_length is not None:
        return param.max_length
    return TEXT_MAX_LENGTH if param.type == "text" else STRING_MAX_LENGTH


def _to_int(param: Param, value: Any) -> int:
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value.strip()) if any(c in value for c in ".eE") else int(value.strip())
        except ValueError:
            number = None
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or abs(number) > MAX_WHOLE_NUMBER:
        raise InvalidParameter(f"{_label(param)} must be a whole number, not {_shown(value)}",
                               zh=f"{_label_zh(param)}必须是整数，而不是 {_shown(value)}", param=param.name)
    return number


def _to_float(param: Param, value: Any) -> float:
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not _finite(number):
        raise InvalidParameter(f"{_label(param)} must be a number, not {_shown(value)}",
                               zh=f"{_label_zh(param)}必须是数字，而不是 {_shown(value)}", param=param.name)
    return float(number)


def _finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an int too large for a float
        return False


def _shown(value: Any) -> str:
    """A value as a message quotes it: at most 40 characters of it."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _to_bool(param: Param, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidParameter(f"{_label(param)} must be true or false, not {value!r}",
                           zh=f"{_label_zh(param)}必须是 true 或 false，而不是 {value!r}", param=param.name)


def _to_text(param: Param, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidParameter(f"{_label(param)} must be text, not {value!r}",
                               zh=f"{_label_zh(param)}必须是文本，而不是 {value!r}", param=param.name)
    limit = max_length(param)
    if len(value) > limit:
        raise InvalidParameter(f"{_label(param)} is {len(value)} characters long; the limit is {limit}",
                               zh=f"{_label_zh(param)}长度为 {len(value)} 个字符，上限为 {limit}", param=param.name)
    multiline = param.type == "text"
    bad = next((c for c in value if _refused(c, multiline)), None)
    if bad is not None:
        code = f"U+{ord(bad):04X}"
        if bad in BIDI_CONTROLS:
            raise InvalidParameter(f"{_label(param)} contains a text-direction override ({code}), which can disguise "
                                   "what the text says; please remove it",
                                   zh=f"{_label_zh(param)}包含文字方向覆盖字符（{code}），它会掩盖文字的真实内容，请删除",
                                   param=param.name)
        raise InvalidParameter(f"{_label(param)} contains the control character {code}; please remove it",
                               zh=f"{_label_zh(param)}包含控制字符 {code}，请删除", param=param.name)
    return value


def _refused(ch: str, multiline: bool) -> bool:
    """Control characters (NUL, escapes, ...), lone surrogates and bidi overrides.

    Format characters real text needs are allowed: the zero-width joiner of emoji
    sequences (👩‍💻) and of Persian/Indic words, the zero-width non-joiner, variation
    selectors, emoji tag sequences, directional marks. So are unassigned code points
    (emoji newer than this Python's Unicode tables). Line breaks only in multi-line texts.
    """
    if ch in "\n\t" or ch in "\u2028\u2029":
        return not multiline
    category = unicodedata.category(ch)
    if category == "Cf":
        return ch in BIDI_CONTROLS
    return category in ("Cc", "Cs")


def _check_range(param: Param, number: int | float) -> int | float:
    if param.type == "seed" and number == RANDOM_SEED:
        return number
    low, high = param.min, param.max
    if (low is not None and number < low) or (high is not None and number > high):
        if low is not None and high is not None:
            en, zh = f"between {_format(low)} and {_format(high)}", f"在 {_format(low)} 到 {_format(high)} 之间"
        elif low is not None:
            en, zh = f"at least {_format(low)}", f"不小于 {_format(low)}"
        else:
            assert high is not None  # one of the bounds was passed
            en, zh = f"at most {_format(high)}", f"不大于 {_format(high)}"
        if param.type == "seed":
            en, zh = en + " (or -1 for a random seed)", zh + "（或 -1 表示随机）"
        raise InvalidParameter(f"{_label(param)} must be {en}, not {_format(number)}",
                               zh=f"{_label_zh(param)}必须{zh}，而不是 {_format(number)}", param=param.name)
    # Steps are enforced for whole numbers only (e.g. sizes in multiples of 8); for
    # decimals they are a hint to the form, since 0.1 steps cannot be checked exactly.
    if param.type == "int" and param.step:
        base = param.min or 0
        if (number - base) % param.step:
            raise InvalidParameter(
                f"{_label(param)} must go in steps of {_format(param.step)} from {_format(base)}, not {number}",
                zh=f"{_label_zh(param)}必须从 {_format(base)} 起以 {_format(param.step)} 为步长，而不是 {number}",
                param=param.name)
    return number


def _random_seed(param: Param, rng: random.Random) -> int:
    low = max(int(param.min or 0), 0)
    high = min(int(param.max) if param.max is not None else RANDOM_SEED_LIMIT, RANDOM_SEED_LIMIT)
    return rng.randint(low, high)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _format(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def _label(param: Param) -> str:
    return f"{param.label.en} ({param.name})"


def _label_zh(param: Param) -> str:
    return f"{param.label.zh}（{param.name}）"
