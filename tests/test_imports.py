"""The package's import graph has no cycle: every ``import`` of a ``sparse_rtrl`` module is
an edge, lazy ones inside functions included; the layers stay one-way."""

import ast
from pathlib import Path

import sparse_rtrl

ROOT = Path(sparse_rtrl.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = resolve(name, is_package, node)
                # "from pkg import sub" imports the submodule sub when there is one
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [target, *subs]
            for t in targets:
                if t in modules and t != name:
                    edges[name].add(t)
    return edges


def find_cycle(edges):
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_graph_is_read():
    edges = graph()
    assert "sparse_rtrl.learner" in edges["sparse_rtrl"]  # the parser sees the package's imports
    assert "sparse_rtrl.contract" in edges["sparse_rtrl.learner"]


def test_no_import_cycle_lazy_imports_included():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_the_library_never_imports_the_experiments_or_the_cli():
    edges = graph()
    library = [m for m in edges if not m.startswith(("sparse_rtrl.experiments", "sparse_rtrl.cli",
                                                     "sparse_rtrl.__main__"))]
    bad = {m: sorted(t for t in edges[m] if t.startswith(("sparse_rtrl.experiments", "sparse_rtrl.cli")))
           for m in library}
    assert not {m: t for m, t in bad.items() if t}


def test_the_report_does_not_import_the_sweep_driver():
    edges = graph()
    seen, todo = set(), ["sparse_rtrl.experiments.report"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(edges[m])
    assert "sparse_rtrl.experiments.runner" not in seen
    assert "sparse_rtrl.experiments.executors" not in seen
