"""The config reference: every config class and field, its type, default and description, as markdown.

The descriptions are read from each class's numpydoc ``Parameters`` section (a field a class inherits is looked up
in its bases' docstrings), or from a ``Field(description=...)``; nothing is written twice. The documentation site
renders :func:`config_reference` at build time (``docs/reference/configs.md``), and ``neurofm init`` writes the
first sentence of each description as the comment of a starter's keys.
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .base import BaseConfig
from .data import DataConfig, MoabbConfig, PreprocessingConfig, RunConfig
from .experiment import CVConfig, ExecutionConfig, ExperimentConfig, SweepsConfig, WindowConfig
from .models import (
    AdaptationConfig,
    AttentiveProbeConfig,
    CheckpointConfig,
    ClassicalModelConfig,
    DeviceConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
    LoRAConfig,
    NeuralFineTuneConfig,
    QuantizationConfig,
    RidgeProbeConfig,
    ScratchModelConfig,
    TrainerConfig,
)

__all__ = [
    "MISSING",
    "config_classes",
    "config_reference",
    "field_descriptions",
    "first_sentence",
    "nested_config_class",
]

#: What the reference shows for a field no docstring describes (a test keeps it out of the reference).
MISSING = "**(no description)**"

_AS_IN = "as in "

#: Fields that several classes share and no single docstring owns.
_SHARED = {
    "kind": "The model's kind tag. A config file may leave it out when the keys tell the kind (``backbone``: "
    "frozen_backbone, ``train_mode``: neural_finetune, ``estimator``: classical, ``model``: scratch). A frozen backbone's head is "
    "classical unless it says ``kind: ridge_probe`` or ``kind: attentive_probe``.",
}

#: Minimal valid values of the classes that have required fields; the others' examples are their defaults.
EXAMPLES: dict[str, dict[str, Any]] = {
    "RunConfig": {
        "data": {"source": "recording", "path": "recordings/subject01.fif", "tmin": 0.0, "tmax": 2.0},
        "models": {"bandpower_lr": {"estimator": "bandpower_lr"}},
    },
    "DataConfig": {"source": "bids", "path": "path/to/bids_root", "tasks": ["motor"], "tmin": 0.0, "tmax": 4.0},
    "MoabbConfig": {"dataset": "BNCI2014_001", "paradigm": "LeftRightImagery"},
    "ExperimentConfig": {"models": {"bandpower_lr": {"estimator": "bandpower_lr"}}},
    "WindowConfig": {"tmin": -0.2, "tmax": 0.8},
    "SweepsConfig": {"train_fractions": [0.1, 0.25, 0.5], "channel_counts": [8, 16], "channel_draws": 3},
    "ClassicalModelConfig": {"estimator": "LogisticRegression", "params": {"max_iter": 1000}},
    "FoundationEmbeddingModelConfig": {"model_key": "cbramod", "pooling": "mean"},
    "FrozenBackboneDecoderConfig": {
        "kind": "frozen_backbone",
        "backbone": {"model_key": "cbramod"},
        "head": {"estimator": "LogisticRegression", "params": {"max_iter": 1000}},
    },
    "RidgeProbeConfig": {"kind": "ridge_probe", "inner_splits": 5},
    "AttentiveProbeConfig": {"kind": "attentive_probe", "n_queries": 1, "n_heads": 4},
    "NeuralFineTuneConfig": {
        "kind": "neural_finetune",
        "model_key": "cbramod",
        "train_mode": "lora",
        "lora": {"r": 8, "alpha": 16},
        "trainer": {"max_epochs": 10, "lr": 0.001},
    },
    "ScratchModelConfig": {
        "kind": "scratch",
        "model": "EEGNet",
        "trainer": {"max_epochs": 100, "lr": 0.001, "early_stopping_patience": 10},
    },
    "PretrainConfig": {"stage": "tokenizer", "corpus": {"paths": ["path/to/recordings"]}, "output_dir": "runs/tok"},
    "CorpusConfig": {"paths": ["path/to/recordings"], "window_seconds": 4.0},
}

_SECTIONS = (
    ("Running: `neurofm run`", (RunConfig, DataConfig, MoabbConfig, PreprocessingConfig)),
    ("The experiment", (ExperimentConfig, CVConfig, ExecutionConfig, WindowConfig, SweepsConfig)),
    (
        "Models",
        (
            ClassicalModelConfig,
            FrozenBackboneDecoderConfig,
            FoundationEmbeddingModelConfig,
            RidgeProbeConfig,
            AttentiveProbeConfig,
            NeuralFineTuneConfig,
            ScratchModelConfig,
            AdaptationConfig,
            LoRAConfig,
            QuantizationConfig,
            DeviceConfig,
            CheckpointConfig,
            TrainerConfig,
        ),
    ),
)


def _sections() -> list[tuple[str, tuple[type[BaseConfig], ...]]]:
    # heavy: importing neurofm.pretrain loads torch (its trainer), which `import neurofm` and --help do not
    from ..pretrain.config import CorpusConfig, OptimizerConfig, PretrainConfig, TokenizerConfig

    pretraining = (PretrainConfig, CorpusConfig, TokenizerConfig, OptimizerConfig)
    return [*_SECTIONS, ("Pretraining: `neurofm pretrain`", pretraining)]


def config_classes() -> list[type[BaseConfig]]:
    """Every public config class, in the reference's order."""
    return [cls for _, classes in _sections() for cls in classes]


def _parse_parameters(doc: str | None) -> dict[str, str]:
    """The ``Parameters`` section of a numpydoc docstring: field name to its description (one line)."""
    if not doc:
        return {}
    lines = doc.expandtabs().splitlines()
    out: dict[str, str] = {}
    inside, base, names, text = False, None, [], []

    def flush() -> None:
        for name in names:
            out[name] = " ".join(text).strip()

    for index, line in enumerate(lines):
        stripped = line.strip()
        underline = index + 1 < len(lines) and set(lines[index + 1].strip()) == {"-"}
        if underline:  # a section heading
            if inside:
                break
            inside = stripped == "Parameters"
            continue
        if not inside or set(stripped) == {"-"} or not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if base is None:
            base = indent
        if indent == base:  # "name : type" or "a, b : type"
            flush()
            head, _, kind = stripped.partition(" : ")
            names = [n.strip() for n in head.split(",") if n.strip()]
            # "a, b : as in OtherConfig": the other class's descriptions of the same fields
            text = [kind] if kind.startswith(_AS_IN) else []
        else:
            text.append(stripped)
    flush()
    return out


def field_descriptions(cls: type[BaseModel]) -> dict[str, str]:
    """Each field of ``cls`` and its description (``""`` where nothing describes it)."""
    documented: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a class's own docstring wins over its bases'
        if isinstance(klass, type) and issubclass(klass, BaseModel):
            documented.update({k: v for k, v in _parse_parameters(klass.__doc__).items() if v})
    out = {}
    for name, field in cls.model_fields.items():
        text = field.description or documented.get(name) or _SHARED.get(name, "")
        if text.startswith(_AS_IN):  # "as in FoundationEmbeddingModelConfig ...": that class's words
            other = getattr(sys.modules[cls.__module__], text.removeprefix(_AS_IN).split()[0], None)
            text = field_descriptions(other).get(name, "") if isinstance(other, type) and other is not cls else ""
        nested = nested_config_class(field.annotation)
        if not text and nested is not None:  # a nested config with no word of its own: its summary line
            text = first_sentence(nested.__doc__ or "")
        out[name] = text
    return out


def first_sentence(text: str) -> str:
    """The first sentence of a description (or docstring), as plain text."""
    text = _plain(" ".join(text.strip().split("\n\n")[0].split()))
    match = re.search(r"(?<!e\.g)(?<!i\.e)(?<!etc)\.(?=\s|$)", text)  # not the stop of "e.g."
    return text[: match.end()] if match else text


def _plain(text: str) -> str:
    """Docstring markup as markdown-free text: ``x`` and :func:`~a.b` become x and b."""
    text = re.sub(
        r":\w+:`~?([^`]*)`", lambda m: m.group(1).rsplit(".", 1)[-1] if "~" in m.group(0) else m.group(1), text
    )
    return text.replace("``", "")


def _markdown(text: str) -> str:
    """Docstring markup as markdown, on one line (for a table cell)."""
    text = " ".join(text.split())
    text = re.sub(r":\w+:`~?([^`]*)`", lambda m: f"`{m.group(1)}`", text)
    return text.replace("``", "`").replace("|", "\\|")


def nested_config_class(annotation: Any) -> type[BaseConfig] | None:
    """The config class a field holds (alone, or ``None``), else ``None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseConfig):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return nested_config_class(inner[0]) if len(inner) == 1 else None
    return None


def type_text(annotation: Any, *, link: bool = True) -> str:
    """A field's annotation as a reader writes its values: ``"a" | "b"``, ``list of str``, ``CVConfig``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is typing.Annotated:
        return type_text(args[0], link=link)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_text(a, link=link) for a in args))
    if origin in (list, tuple, set):
        inner = [type_text(a, link=link) for a in args if a is not Ellipsis]
        if origin is tuple and len(inner) > 1:
            return f"list of {len(inner)} {inner[0]}" if len(set(inner)) == 1 else f"[{', '.join(inner)}]"
        return f"list of {inner[0]}" if inner else "list"
    if origin is dict:
        key, value = (type_text(a, link=link) for a in args) if args else ("str", "any")
        return "dict" if value == "any" else f"dict of {key} to {value}"
    if isinstance(annotation, type) and issubclass(annotation, BaseConfig):
        name = annotation.__name__
        return f"[{name}](#{name.lower()})" if link else name
    if isinstance(annotation, type):
        return {"str": "str", "int": "int", "float": "float", "bool": "bool"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _constraints(field: FieldInfo) -> str:
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "at least", "max_length": "at most"}
    out = []
    for meta in field.metadata:
        for attribute, sign in signs.items():
            value = getattr(meta, attribute, None)
            if value is not None:
                out.append(f"{sign} {value}" + (" items" if "length" in attribute else ""))
    return ", ".join(out)


def _value_text(value: Any) -> str:
    if isinstance(value, BaseModel):
        return json.dumps(value.model_dump(mode="json", exclude_defaults=True)) or "{}"
    return json.dumps(value) if not isinstance(value, str) else value


def default_text(field: FieldInfo) -> str:
    """A field's default as YAML spells it (``null``, ``true``, ``[]``), or ``required``."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel) and not value.model_dump(exclude_defaults=True):
        return "its defaults"
    return f"`{_value_text(value)}`"


def example_yaml(cls: type[BaseConfig]) -> str:
    """A short valid YAML of ``cls``: a minimal example for a class with required fields, else its defaults.

    The example is validated, so a reference built from a stale example fails.
    """
    data = EXAMPLES.get(cls.__name__)
    if data is None:
        return cls().to_yaml()
    cls.model_validate(data)
    return yaml.safe_dump(data, sort_keys=False)


def class_reference(cls: type[BaseConfig]) -> str:
    """One class: its summary, a table of its fields, an example."""
    summary = _markdown((cls.__doc__ or "").strip().split("\n\n")[0])
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, text in field_descriptions(cls).items():
        field = cls.model_fields[name]
        kind = type_text(field.annotation).replace("|", "\\|")
        limits = _constraints(field)
        if limits:
            kind += f" ({limits})"
        rows.append(f"| `{name}` | {kind} | {default_text(field)} | {_markdown(text) if text else MISSING} |")
    example = example_yaml(cls)
    title = "Example" if cls.__name__ in EXAMPLES else "Defaults"
    return "\n".join(
        [f"### {cls.__name__}", "", summary, "", *rows, "", f"{title}:", "", "```yaml", example.rstrip(), "```", ""]
    )


def config_reference() -> str:
    """The whole reference as markdown: one section per group of classes, one table per class."""
    parts = []
    for title, classes in _sections():
        parts.append(f"## {title}\n")
        parts.extend(class_reference(cls) for cls in classes)
    return "\n".join(parts)
