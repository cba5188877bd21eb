"""What a config may make neurofm do: the allow-lists that keep a config plain data.

Configs travel between labs and sit on shared file systems, so a config is
treated as data from someone else: no value in it may run code, import a
module of its author's choosing, or make a library write or read at a path of
its choosing. Each config field that reaches a library call is checked here
against an allow-list when the config is made, before anything runs.

- Estimator import paths: only packages in :data:`ALLOWED_IMPORT_PACKAGES`
  (scikit-learn, pyriemann, MNE, neurofm), plus those the user allows from
  Python with :func:`allow_imports` (never from a YAML file alone). A refused
  path is never imported.
- Estimator parameters: only plain data (numbers, strings, booleans, ``None``
  and lists or mappings of them), and none of the parameters that make an
  estimator write, read or import at a path (:data:`REFUSED_ESTIMATOR_PARAMS`).
- submitit parameters: only resource requests (:data:`SUBMITIT_PARAMETERS`);
  set-up lines, ``srun`` arguments and free-form sbatch directives are shell
  commands and refused.
- YAML: at most :data:`MAX_YAML_ALIASES` aliases and :data:`MAX_YAML_VALUES`
  values once they are expanded, so a small file cannot stand for a huge one
  ("billion laughs").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import yaml

from .exceptions import ConfigError
from .utils.check import format_choices

__all__ = [
    "ALLOWED_IMPORT_PACKAGES",
    "MAX_YAML_ALIASES",
    "MAX_YAML_VALUES",
    "REFUSED_ESTIMATOR_PARAMS",
    "SUBMITIT_PARAMETERS",
    "allow_imports",
    "allowed_import_packages",
    "check_estimator_import",
    "check_estimator_params_are_data",
    "check_submitit_parameters",
    "load_yaml",
]

#: Top-level packages whose estimators a config may name by import path.
ALLOWED_IMPORT_PACKAGES = ("sklearn", "pyriemann", "mne", "neurofm")

_user_allowed: set[str] = set()


class allow_imports:  # noqa: N801 - used like a function; a class so that ``with`` can scope it
    """Let configs name estimators from these packages by import path.

    A config may name an estimator class by import path
    (``"mylab.decoders.MyDecoder"``) only from scikit-learn, pyriemann, MNE
    and neurofm: importing a module runs its code, so a config file alone
    must not choose one. Call this from Python (or pass ``--allow-import``
    to ``neurofm run``) to allow your own packages for the rest of the
    process, or use it in a ``with`` block to allow them inside it only.

    Parameters
    ----------
    packages : str | iterable of str
        Top-level package names, e.g. ``"mylab"`` or ``["mylab", "otherlab"]``.

    Examples
    --------
    >>> import neurofm
    >>> neurofm.allow_imports("mylab")                  # doctest: +SKIP
    >>> with neurofm.allow_imports(["mylab"]):          # doctest: +SKIP
    ...     config = ExperimentConfig.from_yaml("run.yaml")
    """

    def __init__(self, packages: str | Iterable[str]) -> None:
        names = [packages] if isinstance(packages, str) else list(packages)
        for name in names:
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(f"allow_imports takes top-level package names such as 'mylab', got {name!r}.")
        self.added = sorted(set(names) - _user_allowed - set(ALLOWED_IMPORT_PACKAGES))
        _user_allowed.update(self.added)

    def __enter__(self) -> allow_imports:
        return self

    def __exit__(self, *exc_info: object) -> None:
        _user_allowed.difference_update(self.added)


def allowed_import_packages() -> tuple[str, ...]:
    """The top-level packages configs may import estimators from, in this process."""
    return ALLOWED_IMPORT_PACKAGES + tuple(sorted(_user_allowed - set(ALLOWED_IMPORT_PACKAGES)))


def check_estimator_import(path: str) -> None:
    """Refuse, before importing anything, an estimator import path outside the allowed packages."""
    package = path.partition(".")[0]
    allowed = allowed_import_packages()
    if package not in allowed:
        raise ConfigError(
            f"Estimator {path!r} would import {package!r}, which a config may not do: importing a module runs its "
            f"code, and configs come from others. Configs may import estimators from {format_choices(allowed)}. "
            f"If {package!r} is your own package, allow it from Python with neurofm.allow_imports({package!r}) "
            f"before making the config (neurofm run: --allow-import {package})."
        )


#: Estimator parameters that make scikit-learn (through joblib.Memory) or another library write and later unpickle
#: files at a path, or read one: a config may not set them.
REFUSED_ESTIMATOR_PARAMS = frozenset(
    {
        "memory",
        "cachedir",
        "cache_dir",
        "location",
        "path",
        "filename",
        "file",
        "folder",
        "directory",
        "checkpoint",
        "log_dir",
        "logdir",
        "output_dir",
        "input",
    }
)  # input="filename": CountVectorizer opens each value as a file

_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _is_plain_data(value: Any) -> bool:
    if isinstance(value, _PLAIN_SCALARS) or (isinstance(value, np.generic) and value.dtype.kind in "biufU"):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain_data(item) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(key, _PLAIN_SCALARS) and _is_plain_data(item) for key, item in value.items())
    return False


def check_estimator_params_are_data(params: Mapping[str, Any]) -> None:
    """Refuse estimator parameters that are not plain data, or that name a path.

    ``step__param`` keys of a pipeline are checked by their last part, so
    ``pipeline__memory`` is refused like ``memory``.
    """
    for key, value in params.items():
        name = str(key).rpartition("__")[2]
        if name.lower() in REFUSED_ESTIMATOR_PARAMS:
            raise ConfigError(
                f"Estimator parameter {key!r} is refused: it makes the estimator write or read files at a path "
                "(scikit-learn's memory= caches pickles there and loads them back), which a config may not choose. "
                f"Remove {key!r}; neurofm caches what is worth caching in cache_dir."
            )
        if not _is_plain_data(value):
            raise ConfigError(
                f"Estimator parameter {key!r} is a {type(value).__name__}; a config holds plain data only (numbers, "
                "strings, booleans, None, and lists or mappings of them), so that it reads and writes as YAML and "
                "runs no code. Build the estimator in Python and use it in your own pipeline, or give the value as "
                "plain data."
            )


#: submitit parameters a config may set: resource requests, nothing that becomes a shell command or a path.
SUBMITIT_PARAMETERS = frozenset(
    {
        # every cluster (submitit.AutoExecutor)
        "name",
        "nodes",
        "tasks_per_node",
        "mem_gb",
        "timeout_min",
        "gpus_per_node",
        "cpus_per_task",
        "stderr_to_stdout",
        # Slurm resource requests
        "slurm_partition",
        "slurm_time",
        "slurm_qos",
        "slurm_account",
        "slurm_comment",
        "slurm_constraint",
        "slurm_exclude",
        "slurm_nodelist",
        "slurm_exclusive",
        "slurm_array_parallelism",
        "slurm_mem",
        "slurm_mem_per_cpu",
        "slurm_mem_per_gpu",
        "slurm_cpus_per_gpu",
        "slurm_cpus_per_task",
        "slurm_gpus_per_task",
        "slurm_gpus_per_node",
        "slurm_num_gpus",
        "slurm_gres",
        "slurm_job_name",
        "slurm_ntasks_per_node",
        "slurm_nodes",
        "slurm_signal_delay_s",
        "slurm_wckey",
        "slurm_use_srun",
    }
)

# A line break (or any control character) in a value would start a new line of the sbatch script: a shell command.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_submitit_parameters(parameters: Mapping[str, Any]) -> None:
    """Refuse submitit parameters other than resource requests, and values that could break a script line."""
    for key, value in parameters.items():
        if key not in SUBMITIT_PARAMETERS:
            why = (
                "its lines run as shell commands in every job"
                if "setup" in key or "teardown" in key
                else "it passes free text to srun/sbatch or picks an executable or a path"
            )
            raise ConfigError(
                f"submitit parameter {key!r} is refused: {why}, and a config may not run commands. "
                f"A config may request resources only: {format_choices(sorted(SUBMITIT_PARAMETERS))}. "
                "Put environment set-up in your job's shell profile or module system instead."
            )
        if not isinstance(value, _PLAIN_SCALARS) or (isinstance(value, str) and _CONTROL.search(value)):
            raise ConfigError(
                f"submitit parameter {key!r} must be a number, a boolean or a one-line string without control "
                f"characters, got {value!r}: a line break would add a line to the job script."
            )


#: At most this many aliases (``*name``) in a YAML config: more than any real config uses.
MAX_YAML_ALIASES = 50
#: At most this many values once every alias is expanded: aliases of aliases multiply, so a few lines can stand for
#: billions of values ("billion laughs"), which validating or saving the config would then walk one by one.
MAX_YAML_VALUES = 100_000


class _BoundedAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a document with more than ``MAX_YAML_ALIASES`` aliases."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_YAML_ALIASES:
                raise ConfigError(
                    f"The YAML text uses more than {MAX_YAML_ALIASES} aliases (*name); a config needs far fewer, "
                    "and aliases of aliases can stand for billions of values. Write the values out instead."
                )
        return super().compose_node(parent, index)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values ``node`` stands for once its aliases are expanded (an alias is the node it names, shared)."""
    if id(node) not in sizes:
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def load_yaml(text: str) -> Any:
    """Parse YAML as plain data: no tag builds a Python object, and aliases cannot blow it up.

    Raises
    ------
    ConfigError
        With more than :data:`MAX_YAML_ALIASES` aliases, or more than
        :data:`MAX_YAML_VALUES` values once they are expanded.
    yaml.YAMLError
        When the text is not YAML.
    """
    loader = _BoundedAliasLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_VALUES:
            raise ConfigError(
                f"The YAML text stands for {size} values once its aliases (*name) are expanded, more than the "
                f"{MAX_YAML_VALUES} a config may hold. Write the values out, or keep large data out of the config."
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()
