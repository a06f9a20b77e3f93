"""The formula language: what it computes, and everything it must refuse."""

from __future__ import annotations

import math

import pytest

from backend.errors import FormulaRejected
from backend.formulas import MAX_LENGTH, compile_formula, credits_from

NAMES = ("steps", "width", "height", "image_area", "scale")


def evaluate(text: str, **values: float) -> float:
    return compile_formula(text, NAMES).evaluate(values)


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("steps * 2 + 1", {"steps": 20}, 41),
        ("width * height / 262144", {"width": 1024, "height": 512}, 2.0),
        ("7 // 2", {}, 3),
        ("-7 // 2", {}, -4),  # floor division, as in Python
        ("7 % 3", {}, 1),
        ("2 ** -1", {}, 0.5),
        ("-steps ** 2", {"steps": 3}, -9),  # '**' binds tighter than unary minus, as in Python
        ("min(steps, 10)", {"steps": 20}, 10),
        ("max(steps, 10, 30)", {"steps": 20}, 30),
        ("min(width, height, steps)", {"width": 5, "height": 3, "steps": 4}, 3),
        ("where(steps > 10, 2, 1)", {"steps": 11}, 2),
        ("2 if steps > 10 else 1", {"steps": 10}, 1),
        ("0 < scale <= 4", {"scale": 4}, 1.0),
        ("0 < scale <= 4", {"scale": 4.5}, 0.0),
        ("steps > 10 and not scale > 1", {"steps": 20, "scale": 1}, 1.0),
        ("steps > 10 or scale > 1", {"steps": 5, "scale": 1}, 0.0),
        ("where(scale, 5, 6)", {"scale": 0}, 6),  # a number as a condition means "not zero"
        ("(steps > 10) * 3", {"steps": 20}, 3),  # a condition as a number counts as 1
        ("True + 1", {}, 2),
        ("ceil(2.1) + floor(2.9)", {}, 5),
        ("sqrt(16) + abs(-2) + log(1) + log10(100) + exp(0)", {}, 9),
        ("12345678901234567890 / 1e19", {}, 1.2345678901234567),  # big ints become floats
    ],
)
def test_evaluates(text: str, values: dict[str, float], expected: float) -> None:
    assert evaluate(text, **values) == pytest.approx(expected)


def test_names_are_only_those_used() -> None:
    formula = compile_formula("steps * 2", NAMES, field="cost")
    assert formula.names == {"steps"}
    assert formula.evaluate({"steps": 3, "unrelated": 1e300}) == 6


def test_missing_value_is_named() -> None:
    formula = compile_formula("steps * width", NAMES, field="cost")
    with pytest.raises(FormulaRejected, match="no value for width"):
        formula.evaluate({"steps": 3})


def test_field_is_named_in_messages() -> None:
    with pytest.raises(FormulaRejected, match=r"^spec.toml: formulas.cost: unknown name 'stpes'") as info:
        compile_formula("stpes * 2", NAMES, field="spec.toml: formulas.cost")
    assert "stpes" in info.value.zh


@pytest.mark.parametrize(
    ("text", "values", "message"),
    [
        ("1 / 0", {}, "division by zero"),
        ("1 / (steps - 20)", {"steps": 20}, "not a finite number"),
        ("sqrt(scale)", {"scale": -1}, "not a finite number"),
        ("log(scale)", {"scale": 0}, "not a finite number"),
        ("10 ** steps", {"steps": 400}, "not a finite number"),
    ],
)
def test_non_finite_results_are_rejected(text: str, values: dict[str, float], message: str) -> None:
    with pytest.raises(FormulaRejected, match=message):
        evaluate(text, **values)


@pytest.mark.parametrize(
    ("value", "credits"),
    [
        (0.1 * 30, 3),  # 3.0000000000000004: float noise must not cost a 4th credit
        (0.7 * 10, 7),  # 7.000000000000001
        (3.0, 3),
        (3.000001, 4),
        (0.0, 0),
        (-5.0, 0),  # never negative
        (0.2, 1),
    ],
)
def test_credits_round_up_ignoring_float_noise(value: float, credits: int) -> None:
    assert credits_from(value) == credits


def test_credits_refuse_non_finite() -> None:
    with pytest.raises(FormulaRejected):
        credits_from(math.inf)


def test_cost_formula_with_noise_end_to_end() -> None:
    assert credits_from(evaluate("0.1 * steps", steps=30)) == 3


# Each payload, and a fragment its rejection message must contain (naming the bad part).
INJECTIONS = [
    ("steps.__class__", "attribute access '.__class__'"),
    ("(1).real", "attribute access '.real'"),
    ("steps.__class__.__bases__[0].__subclasses__()", "attribute access"),
    ("__import__('os').system('id')", "attribute access"),
    ("__import__('os')", "unknown function '__import__'"),
    ("__builtins__", "names starting with '_'"),
    ("_private", "names starting with '_'"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("eval('1')", "unknown function 'eval'"),
    ("exec('1')", "unknown function 'exec'"),
    ("getattr(steps, 'real')", "unknown function 'getattr'"),
    ("import os", "not a valid formula"),
    ("(lambda: 1)()", "not 'lambda: 1'"),
    ("lambda x: x", "lambda is not allowed"),
    ("steps[0]", "subscripts ('steps[0]')"),
    ("'abc'", "text ('abc')"),
    ("b'abc'", "text (b'abc')"),
    ("f'{steps}'", "f-strings"),
    ("[x for x in (1, 2)]", "comprehensions"),
    ("sum(x for x in (1, 2))", "unknown function 'sum'"),
    ("{1: 2}", "'{1: 2}' (Dict)"),
    ("[1, 2]", "(List)"),
    ("(1, 2)", "(Tuple)"),
    ("(y := 3)", "assignment ('y := 3')"),
    ("sqrt(x=4)", "keyword arguments"),
    ("max(*(1, 2))", "'*' arguments"),
    ("1; 2", "';'"),
    ("1\n+ 2", "'\\n'"),
    ("steps; import os", "';'"),
    ("unknown_name * 2", "unknown name 'unknown_name'"),
    ("os", "unknown name 'os'"),
    ("steps " + "+ 1 " * (MAX_LENGTH // 4), "characters long; the limit is"),
    ("(" * 30 + "1" + ")" * 30, "parentheses are nested"),
    ("-" * 60 + "1", "nested more than"),
    ("min(" * 12 + "steps" + ", steps)" * 12, "too complex"),
    ("ｓｔｅｐｓ * 2", "the character 'ｓ'"),  # fullwidth letters, folded to 'steps' by NFKC
    ("steps * ２", "the character '２'"),
    ("\u0455teps", "the character '\u0455'"),  # Cyrillic 's'
    ("steps\x00", "the character '\\x00'"),
    ("1 if True else __import__('os')", "unknown function '__import__'"),
    ("steps @ steps", "the operator in 'steps @ steps'"),
    ("steps << 2", "the operator in"),
    ("~steps", "the operator in"),
    ("steps is None", "the comparison in"),
    ("steps in (1, 2)", "the comparison in"),
    ("None", "'None'"),
    ("1j", "'1j'"),
    ("1e999", "too large"),
    ("...", "'...'"),
    ("await steps", "'await steps' (Await)"),
    ("yield steps", "not a valid formula"),
    ("steps if steps", "not a valid formula"),
    ("where(steps > 1, 2)", "where() takes 3 argument(s)"),
    ("min(steps)", "at least two arguments"),
    ("sqrt(1, 2)", "sqrt() takes 1 argument(s)"),
    ("", "empty"),
    ("   ", "empty"),
]


@pytest.mark.parametrize(("payload", "fragment"), INJECTIONS, ids=range(len(INJECTIONS)))
def test_injection_corpus_is_rejected(payload: str, fragment: str) -> None:
    with pytest.raises(FormulaRejected) as info:
        compile_formula(payload, NAMES)
    assert fragment in str(info.value)
    assert info.value.zh  # every rejection has a Chinese message too


#: Every operator Python parses, and whether the language has it (the allowlist, pinned:
#: a bitwise or shift operator slipped into the language must fail here).
OPERATORS = [
    ("steps + 2", True), ("steps - 2", True), ("steps * 2", True), ("steps / 2", True), ("steps // 2", True),
    ("steps % 2", True), ("steps ** 2", True), ("-steps", True), ("+steps", True), ("not steps", True),
    ("steps and 1", True), ("steps or 1", True),
    ("steps < 2", True), ("steps <= 2", True), ("steps > 2", True), ("steps >= 2", True), ("steps == 2", True),
    ("steps != 2", True),
    ("steps | 2", False), ("steps & 2", False), ("steps ^ 2", False), ("steps << 2", False), ("steps >> 2", False),
    ("steps @ 2", False), ("~steps", False),
    ("steps is 2", False), ("steps is not 2", False), ("steps in 2", False), ("steps not in 2", False),
]


@pytest.mark.parametrize(("text", "allowed"), OPERATORS, ids=[t for t, _ in OPERATORS])
def test_the_operator_allowlist(text: str, allowed: bool) -> None:
    if allowed:
        assert math.isfinite(evaluate(text, steps=3))
    else:
        with pytest.raises(FormulaRejected, match="(the operator|the comparison) in"):
            compile_formula(text, NAMES)


def test_corpus_is_large_enough() -> None:
    assert len(INJECTIONS) >= 30


def test_numexpr_receives_only_the_rendered_expression() -> None:
    formula = compile_formula("min(steps, 10) if scale > 1 else steps // 2", NAMES)
    # No author text survives verbatim: every operator and function is ours.
    assert formula.expression == (
        "where((scale > 1.0), where(steps < 10.0, steps, 10.0), floor(steps / 2.0))"
    )
