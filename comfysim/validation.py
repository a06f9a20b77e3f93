"""Prompt validation with ComfyUI's rules, error types and messages (execution.py).

Quirks kept on purpose because clients depend on them: literals are coerced in place (a
string "24" for an INT is queued as 24); every failing node is reported at once; a node that
fails only because an upstream node failed is not listed; when some outputs validate, the
prompt is queued with those and the others come back in ``node_errors`` with HTTP 200.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

from .config import SimConfig
from .files import Folders
from .nodes import REGISTRY
from .schema import class_info, input_specs

PRIMITIVE_TYPES = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
# ComfyUI omits the option list from errors when a combo has more entries than this.
LONG_COMBO = 20


@dataclass
class ValidationResult:
    ok: bool
    error: dict[str, Any] | None
    outputs: list[str]
    node_errors: dict[str, Any] = field(default_factory=dict)


def _prompt_error(kind: str, message: str, details: str = "") -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def full_type_name(exc: BaseException) -> str:
    """``module.Class`` except for builtins, as ComfyUI reports exception types."""
    reported = getattr(exc, "reported_type", None)
    if reported:
        return reported
    module = type(exc).__module__
    name = type(exc).__qualname__
    return name if module == "builtins" else f"{module}.{name}"


class _Validator:
    def __init__(self, prompt: dict[str, Any], config: SimConfig, folders: Folders) -> None:
        self.prompt = prompt
        self.config = config
        self.folders = folders
        self.validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
        self._infos: dict[str, dict[str, Any]] = {}

    def info(self, class_type: str) -> dict[str, Any]:
        if class_type not in self._infos:
            info = class_info(class_type, self.config, self.folders)
            assert info is not None  # unknown classes were rejected before
            self._infos[class_type] = info
        return self._infos[class_type]

    def validate(self, node_id: str) -> tuple[bool, list[dict[str, Any]]]:
        if node_id in self.validated:
            return self.validated[node_id]
        node = self.prompt[node_id]
        inputs = node["inputs"]
        class_type = node["class_type"]
        definition = REGISTRY[class_type]
        info = self.info(class_type)
        errors: list[dict[str, Any]] = []
        valid = True
        for name, category, kind, options in input_specs(info):
            if name not in inputs:
                if category == "required":
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": name,
                            "extra_info": {"input_name": name},
                        }
                    )
                continue
            value = inputs[name]
            config = [kind, options]
            if isinstance(value, list):
                link_ok = self._check_link(node_id, name, value, kind, config, errors)
                valid = valid and link_ok
            else:
                self._check_literal(inputs, name, value, kind, options, config, definition, errors)
        if definition.validator is not None:
            reason = definition.validator(self.folders, inputs)
            if reason is not True:
                for name in definition.validated_inputs:
                    details = name if reason is False else f"{name} - {reason}"
                    errors.append(
                        {
                            "type": "custom_validation_failed",
                            "message": "Custom validation failed for node",
                            "details": details,
                            "extra_info": {"input_name": name},
                        }
                    )
        result = (not errors and valid, errors)
        self.validated[node_id] = result
        return result

    def _check_link(
        self, node_id: str, name: str, value: list[Any], kind: Any, config: list[Any], errors: list[dict[str, Any]]
    ) -> bool:
        """Check a ``[node_id, slot]`` link; False when the linked node is invalid."""
        if len(value) != 2:
            errors.append(
                {
                    "type": "bad_linked_input",
                    "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    "details": name,
                    "extra_info": {"input_name": name, "input_config": config, "received_value": value},
                }
            )
            return True
        source_id, slot = value
        # A missing or integer node id raises KeyError here, reported by the caller as an
        # exception during validation, like ComfyUI.
        source_class = self.prompt[source_id]["class_type"]
        received = self.info(source_class)["output"][slot]
        if not _types_match(received, kind):
            errors.append(
                {
                    "type": "return_type_mismatch",
                    "message": "Return type mismatch between linked nodes",
                    "details": f"{name}, received_type({received}) mismatch input_type({kind})",
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "received_type": received,
                        "linked_node": value,
                    },
                }
            )
            return True
        try:
            ok, _ = self.validate(source_id)
            return ok
        except Exception as exc:  # noqa: BLE001 - reported to the client, as ComfyUI does
            self.validated[source_id] = (
                False,
                [
                    {
                        "type": "exception_during_inner_validation",
                        "message": "Exception when validating inner node",
                        "details": str(exc),
                        "extra_info": {
                            "input_name": name,
                            "input_config": config,
                            "exception_message": str(exc),
                            "exception_type": full_type_name(exc),
                            "traceback": traceback.format_tb(exc.__traceback__),
                            "linked_node": value,
                        },
                    }
                ],
            )
            return False

    def _check_literal(
        self,
        inputs: dict[str, Any],
        name: str,
        value: Any,
        kind: Any,
        options: dict[str, Any],
        config: list[Any],
        definition: Any,
        errors: list[dict[str, Any]],
    ) -> None:
        if isinstance(value, dict) and "__value__" in value:
            value = inputs[name] = value["__value__"]
        convert = PRIMITIVE_TYPES.get(kind) if isinstance(kind, str) else None
        if convert is not None:
            try:
                value = inputs[name] = convert(value)
            except Exception as exc:  # noqa: BLE001 - any conversion failure is a client error
                errors.append(
                    {
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {kind} value",
                        "details": f"{name}, {value}, {exc}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": config,
                            "received_value": value,
                            "exception_message": str(exc),
                        },
                    }
                )
                return
        if name in definition.validated_inputs:
            return  # the node's own validator decides (LoadImage checks the file exists)
        if "min" in options and value < options["min"]:
            errors.append(_range_error("value_smaller_than_min", "smaller than min", name, value, options["min"], config))
            return
        if "max" in options and value > options["max"]:
            errors.append(_range_error("value_bigger_than_max", "bigger than max", name, value, options["max"], config))
            return
        combo = kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
        if combo is not None and value not in combo:
            long = len(combo) > LONG_COMBO
            errors.append(
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": f"{name}: '{value}' not in {f'(list of length {len(combo)})' if long else combo}",
                    "extra_info": {"input_name": name, "input_config": None if long else config, "received_value": value},
                }
            )


def _range_error(kind: str, words: str, name: str, value: Any, limit: Any, config: list[Any]) -> dict[str, Any]:
    return {
        "type": kind,
        "message": f"Value {value} {words} of {limit}",
        "details": name,
        "extra_info": {"input_name": name, "input_config": config, "received_value": value},
    }


def _types_match(received: str, expected: Any) -> bool:
    """ComfyUI's validate_node_input: '*' matches anything, comma lists match any member."""
    if not isinstance(expected, str) or expected == "COMBO":
        return received == "COMBO" or isinstance(expected, list)
    if received == expected or "*" in (received, expected):
        return True
    return bool(set(received.split(",")) & set(expected.split(",")))


def validate_prompt(
    prompt: Any, partial_targets: list[str] | None, config: SimConfig, folders: Folders
) -> ValidationResult:
    """Validate an API-format prompt; may raise TypeError for garbage (the server answers 500)."""
    outputs: list[str] = []
    for node_id in prompt:
        node = prompt[node_id]
        if "class_type" not in node:
            error = _prompt_error(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'",
            )
            return ValidationResult(False, error, [])
        class_type = node["class_type"]
        if class_type not in REGISTRY:
            error = _prompt_error(
                "invalid_prompt", f"Cannot execute because node {class_type} does not exist.", f"Node ID '#{node_id}'"
            )
            return ValidationResult(False, error, [])
        is_output = class_info(class_type, config, folders)["output_node"]
        if is_output and (partial_targets is None or node_id in partial_targets):
            outputs.append(node_id)
    if not outputs:
        return ValidationResult(False, _prompt_error("prompt_no_outputs", "Prompt has no outputs"), [])

    validator = _Validator(prompt, config, folders)
    good: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for output_id in outputs:
        try:
            ok, reasons = validator.validate(output_id)
        except Exception as exc:  # noqa: BLE001 - reported to the client, as ComfyUI does
            ok = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(exc),
                    "extra_info": {
                        "exception_type": full_type_name(exc),
                        "traceback": traceback.format_tb(exc.__traceback__),
                    },
                }
            ]
            validator.validated[output_id] = (False, reasons)
        if ok:
            good.append(output_id)
            continue
        failed.append((output_id, reasons))
        # ComfyUI walks every validated node here, so a failing node is credited to each
        # failing output, even one that does not depend on it; kept for fidelity.
        for node_id, (node_ok, node_reasons) in validator.validated.items():
            if node_ok or not node_reasons:
                continue
            entry = node_errors.setdefault(
                node_id,
                {"errors": node_reasons, "dependent_outputs": [], "class_type": prompt[node_id]["class_type"]},
            )
            entry["dependent_outputs"].append(output_id)
    if not good:
        details = "\n".join(f"{r['message']}: {r['details']}" for _, reasons in failed for r in reasons)
        error = _prompt_error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
        return ValidationResult(False, error, [], node_errors)
    return ValidationResult(True, None, good, node_errors)
