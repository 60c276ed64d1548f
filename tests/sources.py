"""Read the packages' source without importing it: files, modules, and every import statement (AST)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Import package -> its folder.
PACKAGES = {"pom_common": ROOT / "common" / "pom_common", "pom_inference": ROOT / "inference" / "pom_inference",
            "pom_training": ROOT / "training" / "pom_training", "pom_tools": ROOT / "tools" / "pom_tools"}


@dataclass(frozen=True)
class Import:
    """One import in a module: what it names (absolute), where, and whether inside a function or class."""

    module: str  # e.g. "pom_training.data.stacks", "tensorflow"
    line: int
    local: bool


def modules(package: str) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file of ``package`` (``__init__`` as the package itself)."""
    folder = PACKAGES[package]
    out = {}
    for path in sorted(folder.rglob("*.py")):
        parts = [package, *path.relative_to(folder).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports(module: str, path: Path) -> list[Import]:
    """Every import of ``module``, including those inside functions and ``importlib.import_module("x")`` calls.

    ``from . import a`` names ``<package>.a``; ``from .x import y`` names ``<package>.x`` (and
    ``<package>.x.y`` when that is a module too: both are listed).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(alias.name, child.lineno, local) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, is_package, child.level, child.module)
                found.append(Import(target, child.lineno, local))
                found.extend(Import(f"{target}.{alias.name}", child.lineno, local) for alias in child.names)
            elif isinstance(child, ast.Call) and child.args and isinstance(child.args[0], ast.Constant) \
                    and isinstance(child.args[0].value, str):
                func = child.func
                name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                if name in ("import_module", "__import__"):
                    found.append(Import(child.args[0].value, child.lineno, True))
            visit(child, inner)

    visit(tree, False)
    return found


def string_constants(path: Path) -> list[tuple[str, int]]:
    """Every string constant in a module's source, with its line (docstrings included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [(node.value, node.lineno) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]
