"""House rules of the code's layout that a reader relies on: no import cycles, fast `import neurofm`,
and every import kept inside a function says why."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import neurofm

PACKAGE = Path(neurofm.__file__).parent

#: Loaded only where a backbone, a recording or a plot is needed: importing them costs seconds (torch about 2 s,
#: braindecode with torchaudio about 5 s on the 2-core machines), which `import neurofm`, `neurofm --help` and
#: every worker process that only fits heads would pay.
HEAVY = ("torch", "braindecode", "mne", "peft", "transformers", "bitsandbytes", "matplotlib")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(path): (path, ast.parse(path.read_text())) for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """The neurofm modules a ``from ... import ...`` at module level loads."""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if not base.startswith("neurofm"):
        return []
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _top_level_imports(tree: ast.Module):
    """Imports that run when the module is imported (not inside functions, nor under TYPE_CHECKING)."""
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
            if isinstance(inner, (ast.Import, ast.ImportFrom)):
                yield inner
        if isinstance(node, ast.ClassDef):
            yield from (n for n in node.body if isinstance(n, (ast.Import, ast.ImportFrom)))


def test_neurofm_modules_import_one_another_without_cycles():
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, tree) in modules.items():
        for node in _top_level_imports(tree):
            targets = (
                _resolve(name, path, node)
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names if a.name.startswith("neurofm")]
            )
            graph[name] |= {t for t in targets if t in modules and t != name}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_import_neurofm_loads_no_heavy_library():
    code = f"import sys, neurofm; print([m for m in {HEAVY!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", f"import neurofm loads {loaded.strip()}"


def test_every_import_inside_a_function_says_why():
    silent = []
    for name, (path, tree) in _modules().items():
        lines = path.read_text().splitlines()
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    said = "#" in lines[node.end_lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
                    if not said:
                        silent.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert not silent, f"{len(silent)} import(s) inside functions without a comment why:\n" + "\n".join(silent)
