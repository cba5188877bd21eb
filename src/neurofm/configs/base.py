"""The base of every config: unknown keys rejected, YAML in and out, errors that name the field."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ..exceptions import ConfigError
from ..policy import allow_imports as allow
from ..policy import load_yaml
from ..utils.files import atomic_write


class BaseConfig(BaseModel):
    """Base of all neurofm configs: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

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
            raise ConfigError(f"The config{where} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"The YAML config must be a mapping of keys to values, got {type(data).__name__}.")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or '(top level)'}: {error['msg']}" for error in exc.errors()
            )
            raise ConfigError(f"Invalid {cls.__name__}{where}: {problems}.") from exc


def _looks_like_path(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    return "\n" not in source and (source.endswith((".yaml", ".yml")) or Path(source).is_file())
