"""The base of every config: unknown keys rejected, YAML in and out, errors that name the field."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from ..exceptions import ConfigError
from ..policy import allow_imports as allow
from ..policy import load_yaml
from ..utils.files import atomic_write


class BaseConfig(BaseModel):
    """Base of all neurofm configs: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @model_validator(mode="wrap")
    @classmethod
    def _suggest_close_keys(cls, data: Any, handler: Any) -> Any:
        """An unknown key close to a field of this config gets "did you mean 'metrics'?" in its error.

        Each config suggests among its own fields, so a typo nested at any
        depth is matched against the fields at its location; errors of any
        other kind pass unchanged.
        """
        try:
            return handler(data)
        except ValidationError as exc:
            errors, suggested = exc.errors(), False
            for error in errors:
                if (
                    error["type"] == "extra_forbidden"
                    and len(error["loc"]) == 1
                    and _DID_YOU_MEAN not in error.get("ctx", {})
                ):
                    close = difflib.get_close_matches(str(error["loc"][0]), list(cls.model_fields), n=1)
                    if close:
                        error["ctx"] = {_DID_YOU_MEAN: repr(close[0])}
                        suggested = True
            if not suggested:
                raise
            raise ValidationError.from_exception_data(exc.title, [_error_details(e) for e in errors]) from None

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Serialise to YAML; write it to ``path`` when given."""
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        if path is not None:
            atomic_write(path, lambda tmp: tmp.write_text(text))
        return text

    @classmethod
    def from_yaml(cls, source: str | Path, *, allow_imports: str | Sequence[str] = ()) -> Any:
        """Load from a YAML file path or a YAML string.

        YAML is read as plain data (no tag can build a Python object, and a
        few aliases cannot stand for billions of values: see
        :mod:`neurofm.policy`). Whatever is wrong with the file raises a
        :class:`~neurofm.exceptions.ConfigError` naming each bad field.

        Parameters
        ----------
        source : str | Path
            A file path, or the YAML text itself.
        allow_imports : str | sequence of str
            Your own top-level packages whose estimators the config may name
            by import path, as :func:`neurofm.allow_imports` allows them (for
            this process). A config file alone can never allow an import.
        """
        if allow_imports:
            allow(allow_imports)
        where = f" in {source}" if isinstance(source, Path) or _looks_like_path(source) else ""
        try:
            text = Path(source).read_text() if where else str(source)
            data = load_yaml(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read the config{where}: {exc}.") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"The config{where} is not valid YAML{_yaml_position(exc, text)}") from exc
        except ConfigError as exc:  # load_yaml's own refusals (alias bombs) name no file
            raise ConfigError(f"The config{where}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"The YAML config{where} must be a mapping of keys to values, got {type(data).__name__}.")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            root = yaml.compose(text, Loader=yaml.SafeLoader)  # nodes only, to tell each error's line
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or '(top level)'}: {error['msg']}{_line_of(root, error['loc'])}"
                for error in exc.errors()
            )
            end = "" if problems.endswith((".", "?")) else "."
            raise ConfigError(f"Invalid {cls.__name__}{where}: {problems}{end}") from exc


# The context key, and the message, of an unknown key's error that carries a suggestion.
_DID_YOU_MEAN = "did_you_mean"
_EXTRA_WITH_SUGGESTION = "Extra inputs are not permitted; did you mean {did_you_mean}?"
_KNOWN_ERROR_TYPES = frozenset(typing.get_args(core_schema.ErrorType))


def _error_details(error: dict[str, Any]) -> InitErrorDetails:
    """One error of a caught ``ValidationError`` as it is raised again, its message unchanged."""
    ctx = error.get("ctx")
    if error["type"] == "extra_forbidden" and ctx and _DID_YOU_MEAN in ctx:
        kind: Any = PydanticCustomError("extra_forbidden", _EXTRA_WITH_SUGGESTION, ctx)
    elif error["type"] in _KNOWN_ERROR_TYPES:  # pydantic's own kinds render their message from ctx again
        if ctx:
            return InitErrorDetails(type=error["type"], loc=error["loc"], input=error["input"], ctx=ctx)
        return InitErrorDetails(type=error["type"], loc=error["loc"], input=error["input"])
    else:  # a custom error: its rendered message, taken as it is
        kind = PydanticCustomError(error["type"], error["msg"])
    return InitErrorDetails(type=kind, loc=error["loc"], input=error["input"])


def _line_of(root: Any, loc: tuple) -> str:
    """``" (line 7)"``: where the YAML text holds the key an error's location ends at; ``""`` if not found."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    node, line = value, key.start_mark.line
                    break
            # else: a part the text does not hold (the tag of a union member, 'frozen_backbone'): stay here
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
    return "" if line is None else f" (line {line + 1})"


def _yaml_position(exc: yaml.YAMLError, text: str) -> str:
    """``" at line 3, column 9: mapping values are not allowed here; line 3 reads 'cv: n_splits: 3'."``"""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:  # a reader error (a byte YAML does not allow) has no line
        return f": {exc}"
    # PyYAML counts lines and columns from 0; editors, and users, from 1.
    out = f" at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None:
        out += f" ({context} started at line {start.line + 1}, column {start.column + 1})"
    lines = text.splitlines()
    if mark.line < len(lines) and lines[mark.line].strip():
        out += f"; line {mark.line + 1} reads {lines[mark.line].strip()!r}"
    return out + "."


def _looks_like_path(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    return "\n" not in source and (source.endswith((".yaml", ".yml")) or Path(source).is_file())
