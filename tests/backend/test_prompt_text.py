"""Prompts in real languages pass; controls, lone surrogates and bidi overrides do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.errors import InvalidParameter
from backend.workflows import Library, validate_params

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
LIBRARY = Library.load(WORKFLOWS)


@pytest.mark.parametrize(
    "prompt",
    [
        "a programmer 👩\u200d💻 at night",  # emoji ZWJ sequence
        "family 👨\u200d👩\u200d👧\u200d👦 portrait",
        "می\u200cخواهم یک گربه",  # Persian with a zero-width non-joiner
        "क्\u200dष temple",  # Devanagari with a zero-width joiner
        "flag 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # emoji tag sequence
        "heart ❤\ufe0f",  # variation selector
        "שלום\u200f world",  # right-to-left mark
        "no\u00a0break space, 中文，日本語",
        "a new emoji \U0001fae9",  # newer than some Unicode tables
        "two\nlines\twith a tab",
    ],
)
def test_real_text_is_accepted(prompt: str) -> None:
    values = validate_params(LIBRARY.get("txt2img-sd15"), {"prompt": prompt})
    assert values["prompt"] == prompt


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("nul\x00byte", "control character U\\+0000"),
        ("escape \x1b[31m", "control character U\\+001B"),
        ("invoice\u202egpj.exe", "text-direction override \\(U\\+202E\\)"),
        ("isolate \u2066x\u2069", "text-direction override"),
        ("lone \ud800 surrogate", "control character U\\+D800"),
    ],
)
def test_controls_and_overrides_are_refused(prompt: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message) as refused:
        validate_params(LIBRARY.get("txt2img-sd15"), {"prompt": prompt})
    assert refused.value.param == "prompt"
