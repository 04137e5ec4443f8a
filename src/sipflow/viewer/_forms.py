"""Stage parameter forms, as plain data: one :class:`FieldSpec` per pydantic field (no Qt).

The "Run" widget draws a form from :func:`field_specs` and checks what the user typed with
:func:`parse_values` before anything runs, so invalid values are refused with the model's
own message.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class FieldSpec:
    """How to draw and check one parameter.

    Attributes
    ----------
    name : str
    kind : {"bool", "int", "float", "choice", "text"}
        ``text`` fields take YAML (a number, a list ``[0.1, 0.2]``, ``null``...).
    default : Any
        The model's default (what an untouched field gives).
    minimum, maximum : float or None
        Bounds; `exclusive_minimum` / `exclusive_maximum` say whether they are strict.
    choices : tuple
        Allowed values of a ``choice`` field.
    optional : bool
        None is allowed.
    description : str
        The field's description (units included), shown as tooltip and help.
    """

    name: str
    kind: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[Any, ...] = ()
    optional: bool = False
    description: str = ""

    def bounds_text(self) -> str:
        """``"0 < x ≤ 1"``-like text of the bounds, or ``""``."""
        lo = hi = ""
        if self.minimum is not None:
            lo = f"{self.minimum:g} {'<' if self.exclusive_minimum else '≤'} "
        if self.maximum is not None:
            hi = f" {'<' if self.exclusive_maximum else '≤'} {self.maximum:g}"
        return f"{lo}{self.name}{hi}" if lo or hi else ""


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return args[0], optional
        return annotation, optional
    return annotation, False


def field_specs(model: type[BaseModel]) -> list[FieldSpec]:
    """One :class:`FieldSpec` per field of `model`, in declaration order."""
    specs = []
    for name, info in model.model_fields.items():
        annotation, optional = _strip_optional(info.annotation)
        kind, choices = "text", ()
        if annotation is bool:
            kind = "bool"
        elif annotation is int:
            kind = "int"
        elif annotation is float:
            kind = "float"
        elif typing.get_origin(annotation) is Literal:
            kind, choices = "choice", typing.get_args(annotation)
        lo = hi = None
        xlo = xhi = False
        for m in info.metadata:
            for attr, strict, is_lo in (("ge", False, True), ("gt", True, True),
                                        ("le", False, False), ("lt", True, False)):
                value = getattr(m, attr, None)
                if value is None:
                    continue
                if is_lo:
                    lo, xlo = float(value), strict
                else:
                    hi, xhi = float(value), strict
        default = info.get_default(call_default_factory=True)
        specs.append(FieldSpec(name, kind, default, lo, hi, xlo, xhi, tuple(choices), optional,
                               info.description or ""))
    return specs


def parse_text(text: str) -> Any:
    """A ``text`` field's value: YAML, so ``[0.1, 0.2]``, ``null`` and ``3`` mean what they say."""
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def parse_values(model: type[BaseModel], values: dict[str, Any]
                 ) -> tuple[BaseModel | None, list[str]]:
    """Validate `values` (field name → value, ``text`` fields already parsed) with `model`.

    Returns
    -------
    params : model instance or None
        None when a value is invalid.
    errors : list of str
        ``"field: message"`` per invalid field, in the model's words.
    """
    try:
        return model(**values), []
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "parameters"
            errors.append(f"{where}: {err.get('msg', 'invalid')}")
        return None, errors


def changed(model: type[BaseModel], params: BaseModel) -> dict[str, Any]:
    """The fields of `params` that differ from the model's defaults (JSON-compatible).

    Required fields (no default) are always included.
    """
    try:
        reference = model().model_dump(mode="json")
    except ValidationError:
        reference = {}
    missing = object()
    return {k: v for k, v in params.model_dump(mode="json").items()
            if reference.get(k, missing) != v}


def dump_text(value: Any) -> str:
    """A value as the one-line YAML that :func:`parse_text` reads back."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix(
        "\n...").removesuffix("...").strip()
