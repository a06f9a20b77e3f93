"""Cost, guard and estimate formulas: a small arithmetic language evaluated by numexpr.

numexpr's own sanitizer is not a security boundary (CVE-2023-39631 was "fixed" with a regex
that has since been bypassed), so every formula is parsed with :mod:`ast` and checked
against an allowlist *before* numexpr sees it. numexpr never receives the author's text: it
gets an expression we re-render from the checked tree, fully parenthesized, with every
number written as a float literal and every rewrite (min/max, ``a if c else b``, chained
comparisons, ``and``/``or``/``not``) already applied. It is evaluated with only the names
the formula uses (``local_dict``) and an empty ``global_dict``.

The language:

- numbers (``3``, ``0.5``, ``1e6``), ``True``/``False`` and the names passed as ``names``;
- ``+ - * / // % **``, unary ``-``/``+``, comparisons (also chained: ``0 < x <= 4``);
- ``and``, ``or``, ``not`` (numexpr's ``&``, ``|``, ``~``), ``a if cond else b``;
- functions ``where(cond, a, b)``, ``min(a, b, …)``, ``max(a, b, …)``, ``ceil``, ``floor``,
  ``sqrt``, ``log`` (natural), ``log10``, ``exp``, ``abs``.

Values are either numbers or conditions. Where a condition is expected a number means
"not zero" (as in Python); where a number is expected a condition counts as 1 or 0.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numexpr
import numpy as np

from .errors import FormulaRejected

#: Longest formula accepted, in characters. Real formulas are a line or two.
MAX_LENGTH = 500
#: Deepest expression tree accepted; bounds the recursion below and numexpr's compiler.
MAX_DEPTH = 40
#: Deepest parenthesis nesting accepted (parentheses leave no trace in the tree).
MAX_PARENS = 20
#: Longest expression handed to numexpr. min/max become nested 'where's that repeat their
#: arguments, so a short formula could otherwise expand exponentially.
MAX_RENDERED = 5000
#: Cost values are rounded to this many decimals before rounding up, so float noise such as
#: 0.1 * 30 == 3.0000000000000004 costs 3 credits, not 4.
COST_DECIMALS = 9

_UNARY_FUNCTIONS = {"ceil": "ceil", "floor": "floor", "sqrt": "sqrt", "log": "log", "log10": "log10", "exp": "exp", "abs": "abs"}
#: Names a formula may call; parameters may not use them as names.
FUNCTIONS = frozenset({"where", "min", "max", *_UNARY_FUNCTIONS})

_BINARY_OPS: dict[type, str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%", ast.Pow: "**"}
_COMPARE_OPS: dict[type, str] = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}

# What a sub-expression yields: numexpr keeps booleans and floats apart (``where`` wants a
# boolean condition, ``~`` only inverts booleans), so the checker tracks the kind and
# converts where needed instead of letting numexpr fail at evaluation time.
_NUM = "number"
_BOOL = "condition"


def _rejected(en: str, zh: str, field: str) -> FormulaRejected:
    return FormulaRejected(f"{field}: {en}", zh=f"{field}：{zh}")


@dataclass(frozen=True)
class Formula:
    """A checked formula, ready to evaluate any number of times."""

    text: str
    field: str
    #: The names the formula uses (a subset of the names it was compiled with).
    names: frozenset[str]
    #: The expression handed to numexpr (re-rendered from the checked tree).
    expression: str

    def evaluate(self, values: Mapping[str, float]) -> float:
        """The formula's value for ``values`` (which must hold every name it uses).

        A condition evaluates to 1.0 or 0.0. Division by zero and non-finite results are
        rejected, because a cost or estimate of infinity or NaN must never reach billing.
        """
        missing = sorted(self.names - values.keys())
        if missing:
            raise _rejected(f"no value for {', '.join(missing)}", f"缺少取值：{', '.join(missing)}", self.field)
        local = {name: np.float64(float(values[name])) for name in self.names}
        try:
            result = float(numexpr.evaluate(self.expression, local_dict=local, global_dict={}))
        except ZeroDivisionError:
            raise _rejected("division by zero", "除数为零", self.field) from None
        if not math.isfinite(result):
            raise _rejected(f"the result is not a finite number ({result})", f"结果不是有限数（{result}）", self.field)
        return result


def compile_formula(text: str, names: Collection[str], *, field: str = "formula") -> Formula:
    """Check ``text`` against the allowlist and prepare it for evaluation.

    ``names`` are the names the formula may use; ``field`` names the formula in messages
    (e.g. ``"spec.toml: formulas.cost"``). Raises :class:`FormulaRejected` naming the
    offending part.
    """
    if not isinstance(text, str) or not text.strip():
        raise _rejected("the formula is empty", "公式为空", field)
    if len(text) > MAX_LENGTH:
        raise _rejected(f"the formula is {len(text)} characters long; the limit is {MAX_LENGTH}",
                        f"公式长度为 {len(text)} 个字符，上限为 {MAX_LENGTH}", field)
    for char in text:
        # Python folds look-alike identifiers (NFKC: 'ｘ' → 'x', 'ℯ' → 'e') before we would
        # see them, so non-ASCII text is refused outright; '\n' and ';' would allow statements.
        if not (char.isascii() and (char.isprintable() or char == " ")):
            raise _rejected(f"the character {char!r} is not allowed in a formula (use plain ASCII on one line)",
                            f"公式中不允许字符 {char!r}（请使用单行 ASCII 字符）", field)
    if ";" in text:
        raise _rejected("';' (several statements) is not allowed in a formula", "公式中不允许 ';'（多条语句）", field)
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth > MAX_PARENS:
            raise _rejected(f"parentheses are nested more than {MAX_PARENS} levels deep",
                            f"括号嵌套超过 {MAX_PARENS} 层", field)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        detail = getattr(exc, "msg", None) or type(exc).__name__
        raise _rejected(f"not a valid formula ({detail})", f"不是有效的公式（{detail}）", field) from None
    checker = _Checker(text.strip(), frozenset(names), field)
    expression, _kind = checker.render(tree.body, depth=0)
    return Formula(text=text, field=field, names=frozenset(checker.used), expression=expression)


def credits_from(value: float) -> int:
    """Credits charged for a cost formula's value: rounded up to a whole credit, never negative.

    The value is first rounded to :data:`COST_DECIMALS` decimals so float noise does not
    add a credit (0.1 * 30 is 3.0000000000000004 in binary floating point).
    """
    if not math.isfinite(value):
        raise FormulaRejected(f"a cost must be a finite number, not {value}", zh=f"费用必须是有限数，而不是 {value}")
    return max(0, math.ceil(round(value, COST_DECIMALS)))


class _Checker:
    """Walks a parsed formula, rejecting anything off the allowlist and rendering the rest."""

    def __init__(self, source: str, names: frozenset[str], field: str) -> None:
        self.source = source
        self.names = names
        self.field = field
        self.used: set[str] = set()

    def part(self, node: ast.AST) -> str:
        segment = ast.get_source_segment(self.source, node) or type(node).__name__
        return segment if len(segment) <= 60 else segment[:57] + "..."

    def render(self, node: ast.AST, depth: int) -> tuple[str, str]:
        """``(numexpr text, kind)`` for ``node``."""
        if depth > MAX_DEPTH:
            raise self.error(f"the formula is nested more than {MAX_DEPTH} levels deep",
                            f"公式嵌套超过 {MAX_DEPTH} 层")
        text, kind = self.render_node(node, depth + 1)
        return self.capped(text), kind

    def capped(self, text: str) -> str:
        if len(text) > MAX_RENDERED:
            raise self.error("the formula is too complex (min/max nested too deeply)",
                            "公式过于复杂（min/max 嵌套过深）")
        return text

    def render_node(self, node: ast.AST, depth: int) -> tuple[str, str]:
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node, depth)
        if isinstance(node, ast.UnaryOp):
            return self.unaryop(node, depth)
        if isinstance(node, ast.Compare):
            return self.compare(node, depth)
        if isinstance(node, ast.BoolOp):
            joiner = " & " if isinstance(node.op, ast.And) else " | "
            parts = [self.as_bool(value, depth) for value in node.values]
            return "(" + joiner.join(parts) + ")", _BOOL
        if isinstance(node, ast.IfExp):
            return self.where(node.test, node.body, node.orelse, depth)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        raise self.unsupported(node)

    def unsupported(self, node: ast.AST) -> FormulaRejected:
        part = self.part(node)
        if isinstance(node, ast.Attribute):
            en, zh = f"attribute access '.{node.attr}' is not allowed in a formula", f"公式中不允许属性访问 '.{node.attr}'"
        elif isinstance(node, ast.Subscript):
            en, zh = f"subscripts ('{part}') are not allowed in a formula", f"公式中不允许下标（'{part}'）"
        elif isinstance(node, ast.Lambda):
            en, zh = "lambda is not allowed in a formula", "公式中不允许 lambda"
        elif isinstance(node, ast.NamedExpr):
            en, zh = f"assignment ('{part}') is not allowed in a formula", f"公式中不允许赋值（'{part}'）"
        elif isinstance(node, ast.JoinedStr):
            en, zh = "f-strings are not allowed in a formula", "公式中不允许 f 字符串"
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            en, zh = f"comprehensions ('{part}') are not allowed in a formula", f"公式中不允许推导式（'{part}'）"
        else:
            kind = type(node).__name__
            en, zh = f"'{part}' ({kind}) is not allowed in a formula", f"公式中不允许 '{part}'（{kind}）"
        return self.error(en, zh)

    def constant(self, node: ast.Constant) -> tuple[str, str]:
        value = node.value
        if isinstance(value, bool):
            return ("True" if value else "False"), _BOOL
        if isinstance(value, (int, float)):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise self.error(f"the number '{self.part(node)}' is too large", f"数字 '{self.part(node)}' 过大")
            # Always a float literal: numexpr would otherwise do integer arithmetic on
            # integer literals (and overflow on large ones).
            return repr(number), _NUM
        if isinstance(value, (str, bytes)):
            raise self.error(f"text ({self.part(node)}) is not allowed in a formula", f"公式中不允许文本（{self.part(node)}）")
        raise self.error(f"'{self.part(node)}' is not allowed in a formula", f"公式中不允许 '{self.part(node)}'")

    def error(self, en: str, zh: str) -> FormulaRejected:
        return _rejected(en, zh, self.field)

    def name(self, node: ast.Name) -> tuple[str, str]:
        ident = node.id
        if ident.startswith("_"):
            raise self.error(f"names starting with '_' ('{ident}') are not allowed in a formula",
                               f"公式中不允许以 '_' 开头的名称（'{ident}'）")
        if ident not in self.names:
            known = ", ".join(sorted(self.names)) or "none"
            raise self.error(f"unknown name '{ident}' (known names: {known})",
                               f"未知名称 '{ident}'（可用名称：{known}）")
        self.used.add(ident)
        return ident, _NUM

    def binop(self, node: ast.BinOp, depth: int) -> tuple[str, str]:
        left = self.as_num(node.left, depth)
        right = self.as_num(node.right, depth)
        if isinstance(node.op, ast.FloorDiv):  # numexpr has no '//'
            return f"floor({left} / {right})", _NUM
        op = _BINARY_OPS.get(type(node.op))
        if op is None:
            symbol = self.part(node)
            raise self.error(f"the operator in '{symbol}' is not allowed in a formula",
                               f"公式中不允许 '{symbol}' 中的运算符")
        return f"({left} {op} {right})", _NUM

    def unaryop(self, node: ast.UnaryOp, depth: int) -> tuple[str, str]:
        if isinstance(node.op, ast.Not):
            return f"(~{self.as_bool(node.operand, depth)})", _BOOL
        if isinstance(node.op, ast.USub):
            return f"(-{self.as_num(node.operand, depth)})", _NUM
        if isinstance(node.op, ast.UAdd):
            return self.as_num(node.operand, depth), _NUM
        raise self.error(f"the operator in '{self.part(node)}' is not allowed in a formula",
                           f"公式中不允许 '{self.part(node)}' 中的运算符")

    def compare(self, node: ast.Compare, depth: int) -> tuple[str, str]:
        # numexpr has no chained comparisons: 'a < b < c' becomes '(a < b) & (b < c)'.
        symbols = [_COMPARE_OPS.get(type(op)) for op in node.ops]
        if None in symbols:
            raise self.error(f"the comparison in '{self.part(node)}' is not allowed in a formula",
                               f"公式中不允许 '{self.part(node)}' 中的比较")
        operands = [self.as_num(item, depth) for item in (node.left, *node.comparators)]
        parts = [f"({operands[i]} {symbol} {operands[i + 1]})" for i, symbol in enumerate(symbols)]
        return (parts[0] if len(parts) == 1 else "(" + " & ".join(parts) + ")"), _BOOL

    def call(self, node: ast.Call, depth: int) -> tuple[str, str]:
        if not isinstance(node.func, ast.Name):
            if isinstance(node.func, ast.Attribute):
                raise self.unsupported(node.func)
            raise self.error(f"only the listed functions may be called, not '{self.part(node.func)}'",
                               f"只能调用列出的函数，不能调用 '{self.part(node.func)}'")
        fname = node.func.id
        if fname not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise self.error(f"unknown function '{fname}' (allowed: {allowed})",
                               f"未知函数 '{fname}'（可用函数：{allowed}）")
        if node.keywords:
            raise self.error(f"keyword arguments are not allowed in a formula ('{self.part(node)}')",
                               f"公式中不允许关键字参数（'{self.part(node)}'）")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise self.error(f"'*' arguments are not allowed in a formula ('{self.part(node)}')",
                               f"公式中不允许 '*' 参数（'{self.part(node)}'）")
        args = node.args
        if fname == "where":
            self.arity(node, fname, args, 3)
            return self.where(args[0], args[1], args[2], depth)
        if fname in ("min", "max"):
            if len(args) < 2:
                raise self.error(f"{fname}() needs at least two arguments", f"{fname}() 至少需要两个参数")
            # numexpr's min/max are array reductions; the two-argument form is a 'where'.
            result = self.as_num(args[0], depth)
            symbol = "<" if fname == "min" else ">"
            for arg in args[1:]:
                other = self.as_num(arg, depth)
                result = self.capped(f"where({result} {symbol} {other}, {result}, {other})")
            return result, _NUM
        self.arity(node, fname, args, 1)
        return f"{_UNARY_FUNCTIONS[fname]}({self.as_num(args[0], depth)})", _NUM

    def arity(self, node: ast.Call, fname: str, args: list[ast.expr], count: int) -> None:
        if len(args) != count:
            raise self.error(f"{fname}() takes {count} argument(s), not {len(args)}",
                            f"{fname}() 需要 {count} 个参数，而不是 {len(args)} 个")

    def where(self, test: ast.AST, body: ast.AST, orelse: ast.AST, depth: int) -> tuple[str, str]:
        condition = self.as_bool(test, depth)
        return f"where({condition}, {self.as_num(body, depth)}, {self.as_num(orelse, depth)})", _NUM

    def as_num(self, node: ast.AST, depth: int) -> str:
        text, kind = self.render(node, depth)
        return text if kind == _NUM else f"where({text}, 1.0, 0.0)"

    def as_bool(self, node: ast.AST, depth: int) -> str:
        text, kind = self.render(node, depth)
        return text if kind == _BOOL else f"({text} != 0.0)"
