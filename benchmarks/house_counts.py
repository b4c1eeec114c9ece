"""Counts of what makes the code hard to follow, for a tree of the project (default: this one):

- the names a grid column (the perceptors guiding one run together) goes by, per package;
- functions longer than 40 lines;
- module-level mutable state (lowercase or `_` names bound to a dict, list, set or cache);
- import cycles between the project's modules (imports inside functions included).

    python benchmarks/house_counts.py [TREE]
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PACKAGES = ("engine", "experiments", "dashboard")
LONG = 40
#: Spellings of a grid column seen in the project's history, as regexes over source text.
COLUMN_NAMES = {
    "perceptor_set": r"\bperceptor_set\b",
    "generator (column or field)": r"[\"'.]generator\b|\bgenerator[\"']",
    "perceptor_key": r"\bperceptor_key\b",
    "perceptor entry": r"perceptor entr(y|ies)",
    "'+'-joined perceptors": r"\"\+\"\.join\([^)]*perceptors",
}
MUTABLE_CALLS = {"dict", "list", "set", "OrderedDict", "defaultdict", "WeakValueDictionary"}


def sources(tree: Path) -> dict[str, Path]:
    """module name → file, for the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((tree / package).rglob("*.py")):
            parts = path.relative_to(tree).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def column_names(tree: Path) -> dict[str, dict[str, int]]:
    """name → {package: occurrences in its source}."""
    counts: dict[str, dict[str, int]] = {}
    for module, path in sources(tree).items():
        text = path.read_text(encoding="utf-8")
        for name, pattern in COLUMN_NAMES.items():
            hits = len(re.findall(pattern, text))
            if hits:
                package = module.split(".")[0]
                counts.setdefault(name, {}).setdefault(package, 0)
                counts[name][package] += hits
    return counts


def long_functions(tree: Path) -> list[tuple[str, int]]:
    """(module.function, lines) of every function over `LONG` lines."""
    out = []
    for module, path in sources(tree).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONG:
                    out.append((f"{module}.{node.name}", lines))
    return sorted(out, key=lambda x: -x[1])


def _mutable(value: ast.expr) -> bool:
    if isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)):
        return True
    return isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", "")) in MUTABLE_CALLS


def module_state(tree: Path) -> list[str]:
    """module.name of each module-level binding of a mutable object to a non-constant name."""
    out = []
    for module, path in sources(tree).items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) and node.value is not None else []
            for target in targets:
                name = getattr(target, "id", "")
                if name and not name.isupper() and name != "__all__" and _mutable(node.value):
                    out.append(f"{module}.{name}")
    return out


def imports(tree: Path) -> dict[str, set[str]]:
    """module → the project's modules it imports, anywhere in its source."""
    modules = sources(tree)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            graph[module] |= {n for n in names if n in modules and n != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), ignoring a package's imports of
    its own submodules (an `__init__` re-exporting them is no cycle)."""
    edges = {m: {n for n in targets if not n.startswith(m + ".")} for m, targets in graph.items()}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main(argv: list[str] | None = None) -> int:
    tree = Path((argv or sys.argv[1:] or ["."])[0]).resolve()
    print(f"tree: {tree}")
    print("names of a grid column (occurrences per package):")
    for name, per_package in column_names(tree).items():
        print(f"  {name:<30} {', '.join(f'{p} {n}' for p, n in sorted(per_package.items()))}")
    long = long_functions(tree)
    print(f"functions over {LONG} lines: {len(long)}")
    for name, lines in long:
        print(f"  {lines:4d}  {name}")
    state = module_state(tree)
    print(f"module-level mutable state: {len(state)}")
    for name in state:
        print(f"  {name}")
    found = cycles(imports(tree))
    print(f"import cycles: {len(found)}")
    for group in found:
        print(f"  {' <-> '.join(group)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
