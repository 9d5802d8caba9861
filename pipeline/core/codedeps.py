"""The project files a stage runs: the closure of its ``pipeline`` imports, read from the source.

A stage's code dependencies (in ``dvc.yaml`` and in its checkpoint fingerprint) are the files of
the project modules it imports, directly or through other project modules, at module level or
inside functions, together with the packages (``__init__.py``) that those imports execute.

Why a static closure over the source (:mod:`ast`) rather than a measurement in a fresh
interpreter (``sys.modules`` after importing the stage):

* it sees imports inside functions, which run only when ``run`` does: an import-time
  measurement misses them, and lazy imports are how this package keeps start-up light;
* it imports nothing (no torch, no subprocess), so ``dvc-yaml`` and the plan stay light control
  code, and its answer depends on the source text alone: ``dvc.yaml`` is generated the same
  way on every machine.

It errs towards more: an import in a branch the stage never takes still counts (a needless
re-run, never a missed one). Imports under ``if TYPE_CHECKING:`` are left out (they never run).
An import whose module name is computed at run time cannot be followed: it is an error
(:class:`DynamicImportError`) instead of a silent gap.

A module that decides how a stage is started, locked or described but never what it computes
(the CLI's parsing and help, the run lock, the torchrun launcher, the stage registry) says so
with a top-level ``NOT_A_STAGE_DEPENDENCY = "<why>"``: it is left out, and so is whatever only
it imports.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

NOT_A_STAGE_DEPENDENCY = "it chooses the files a stage depends on; a change shows in dvc.yaml"

MARK = "NOT_A_STAGE_DEPENDENCY"
PACKAGE = __name__.split(".")[0]
# The folder holding the package: what the stage runs is the imported package.
CODE_ROOT = Path(__file__).resolve().parents[2]
# Never read by a stage; the same as the project's .dvcignore, so a folder dep hashes alike.
IGNORED_NAMES = ("__pycache__",)
IGNORED_SUFFIXES = (".pyc",)


class DynamicImportError(RuntimeError):
    """A project module imports a module whose name is computed at run time."""


@dataclass(frozen=True)
class _Source:
    imports: frozenset[str]  # dotted names, some of them attributes rather than modules
    dynamic: tuple[str, ...]  # "file:line" of imports that cannot be followed
    exempt: bool


_PARSED: dict[tuple[str, int, int], _Source] = {}


def module_file(name: str, root: Path = CODE_ROOT) -> Path | None:
    """The file that defines module ``name`` under ``root``, or None (not a project module)."""
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, where: str):
        self.package = module if is_package else module.rpartition(".")[0]
        self.where = where
        self.found: set[str] = set()
        self.dynamic: list[str] = []

    def _add(self, name: str) -> None:
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            self.found.add(name)

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            module = f"{base}.{node.module}" if node.module else base
        else:
            module = node.module or ""
        self._add(module)
        for alias in node.names:  # ``from pkg import sub`` imports the submodule, if it is one
            self._add(f"{module}.{alias.name}")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self._add(arg.value)
            elif not (
                isinstance(arg, ast.JoinedStr)
                and arg.values
                and isinstance(arg.values[0], ast.Constant)
                and not str(arg.values[0].value).startswith(PACKAGE)
            ):  # an f-string that starts with another package's name is not ours
                self.dynamic.append(f"{self.where}:{node.lineno}")
        self.generic_visit(node)


def _parse(name: str, path: Path, root: Path) -> _Source:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        where = PurePosixPath(path.relative_to(root)).as_posix()
        visitor = _Imports(name, path.name == "__init__.py", where)
        tree = ast.parse(path.read_bytes(), filename=str(path))
        visitor.visit(tree)
        exempt = any(  # a top-level assignment only
            isinstance(n, ast.Assign) and any(getattr(t, "id", None) == MARK for t in n.targets)
            for n in tree.body
        )
        _PARSED[key] = _Source(frozenset(visitor.found), tuple(visitor.dynamic), exempt)
    return _PARSED[key]


def is_exempt(path: Path, root: Path = CODE_ROOT) -> bool:
    """Whether the module at ``path`` declares itself no stage's dependency."""
    rel = path.resolve().relative_to(root)
    name = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
    return _parse(name, path, root).exempt


def module_files(roots: Iterable[str], root: Path = CODE_ROOT) -> list[str]:
    """Sorted paths (relative to ``root``) of every project module that importing and running
    ``roots`` executes, exempt modules left out."""
    seen: set[str] = set()
    files: set[str] = set()
    todo = sorted(roots, reverse=True)
    while todo:
        parts = todo.pop().split(".")
        for name in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):  # parents first
            if name in seen:
                continue
            seen.add(name)
            path = module_file(name, root)
            if path is None:  # an attribute (``from pkg import function``) or not ours
                continue
            source = _parse(name, path, root)
            if source.exempt:
                continue
            if source.dynamic:
                raise DynamicImportError(
                    f"{', '.join(source.dynamic)}: a module imported by a name computed at run "
                    "time; stage dependencies cannot follow it, so import it by its name"
                )
            files.add(PurePosixPath(path.relative_to(root)).as_posix())
            todo.extend(sorted(source.imports, reverse=True))
    return sorted(files)


def _ignored(name: str) -> bool:
    return name in IGNORED_NAMES or name.endswith(IGNORED_SUFFIXES)


def collapse(files: Iterable[str], root: Path = CODE_ROOT) -> list[str]:
    """Sorted paths with a folder in place of its files when every file in it is listed (its
    sub-folders included); byte-code, which no stage reads, does not count."""
    listed = set(files)
    folders = {str(p) for f in listed for p in PurePosixPath(f).parents if str(p) != "."}
    for folder in sorted(folders, key=lambda f: (-f.count("/"), f)):  # deepest first
        entries = [f"{folder}/{e}" for e in sorted(os.listdir(root / folder)) if not _ignored(e)]
        if entries and all(e in listed for e in entries):
            listed.difference_update(entries)
            listed.add(folder)
    return sorted(listed)


_DERIVED: dict[tuple, tuple[tuple, list[str]]] = {}


def _stamp(paths: Iterable[str], root: Path) -> tuple:
    """What the answer was read from: each file's and folder's modification time and size."""
    try:
        return tuple((p, (s := os.stat(root / p)).st_mtime_ns, s.st_size) for p in paths)
    except FileNotFoundError:
        return ()


def code_deps(roots: Iterable[str], root: Path = CODE_ROOT) -> list[str]:
    """What a stage that imports and runs ``roots`` depends on: files, or whole folders.

    Remembered while none of the files it read and no folder holding them changes (the plan
    asks once per stage instance)."""
    key = (tuple(roots), str(root))
    if key in _DERIVED:
        stamp, answer = _DERIVED[key]
        if stamp and stamp == _stamp((p for p, *_ in stamp), root):
            return list(answer)
    files = module_files(key[0], root)
    answer = collapse(files, root)
    folders = sorted({str(p) for f in files for p in PurePosixPath(f).parents if str(p) != "."})
    _DERIVED[key] = (_stamp([*files, *folders], root), answer)
    return list(answer)
