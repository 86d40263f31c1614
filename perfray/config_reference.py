"""The configuration reference, generated from the pydantic models the config is validated with: the Markdown
page ``docs/configuration.md`` (a test fails when it is stale or a field has no description) and the JSON Schema
``python -m perfray schema`` writes for editors (YAML completion and checks)."""

from __future__ import annotations

import inspect
import json
import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from perfray.config import SweepConfig

HEADER = """# Configuration reference

Generated from the config's pydantic models (`python -m perfray schema --markdown > docs/configuration.md`; a test
fails when this page is stale or a field has no description). A config is a *workload* plus a *sweep*: every
combination of the sweep's values is one cell. `--set PATH=VALUE` overrides any value by its dotted path under
`workload` (`load.target_qps`) or a unique leaf name (`target_qps`); `configs/` holds worked examples, and
`python -m perfray schema > perfray.schema.json` gives editors the same rules as JSON Schema. An unknown key is
refused, and every number must be finite (`.inf` and `.nan` are refused).
"""


def _models(annotation) -> list[type[BaseModel]]:
    """The models an annotation holds (through unions, optionals, tuples, Annotated)."""
    found, stack = [], [annotation]
    while stack:
        t = stack.pop(0)
        if inspect.isclass(t) and issubclass(t, BaseModel):
            found.append(t)
        stack.extend(typing.get_args(t))
    return found


def _type(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type(args[0])} to {_type(args[1])}" if args else "mapping"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "(section)" if isinstance(value, BaseModel) else f"`{json.dumps(value)}`"
    if field.default is PydanticUndefined:
        return "required"
    value = field.default
    return f"`{json.dumps(value if not isinstance(value, tuple) else list(value), default=str)}`"


def _order(root: type[BaseModel]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    stack = [root]
    while stack:
        model = stack.pop(0)
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            stack.extend(_models(field.annotation))
    return seen


def undescribed(root: type[BaseModel] = SweepConfig) -> list[str]:
    """``Model.field`` of every field without a description."""
    return [f"{m.__name__}.{name}" for m in _order(root) for name, f in m.model_fields.items() if not f.description]


def reference_markdown(root: type[BaseModel] = SweepConfig) -> str:
    lines = [HEADER]
    for model in _order(root):
        doc = inspect.cleandoc(model.__doc__ or "") if model.__doc__ and model.__doc__ != BaseModel.__doc__ else ""
        lines += [f"## {model.__name__}", ""]
        if doc:
            lines += [" ".join(doc.split()), ""]
        lines += ["| field | type | default | description |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            text = " ".join((field.description or "").split()).replace("|", "\\|")
            lines.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | {text} |")
        lines.append("")
    return "\n".join(lines)


def json_schema(root: type[BaseModel] = SweepConfig) -> dict:
    return root.model_json_schema()
