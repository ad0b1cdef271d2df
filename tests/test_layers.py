"""The package's layers: product <- training <- lab <- command line, imports pointing one way.

Every ``import`` counts, also those inside functions. The product (``kefer``, its models and app)
imports only itself; ``kefer.train`` the product and itself; ``kefer.lab`` those and itself;
``kefer.cli`` anything. No module imports itself back through others (no cycle).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kefer"
ALLOWED = {"product": {"product"}, "train": {"product", "train"}, "lab": {"product", "train", "lab"},
           "cli": {"product", "train", "lab", "cli"}}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the kefer modules it imports}, from the source (function-level imports included);
    ``from pkg import name`` counts as importing ``pkg.name`` where that is a module, else ``pkg``."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                found = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in files else origin for a in node.names]
            else:
                continue
            for target in found:
                while target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in files and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("train", "lab", "cli"):
        return parts[1]
    return "cli" if module == "kefer.__main__" else "product"


def wrong_arrows(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({layer(a)}) -> {b} ({layer(b)})" for a, targets in graph.items() for b in targets
                  if layer(b) not in ALLOWED[layer(a)])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_imports_point_from_lab_to_training_to_product_only():
    assert wrong_arrows(import_graph()) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_checks_catch_a_wrong_arrow_and_a_cycle():
    graph = import_graph()
    graph["kefer.scoring"] = graph["kefer.scoring"] | {"kefer.train.losses"}
    assert wrong_arrows(graph) == ["kefer.scoring (product) -> kefer.train.losses (train)"]
    assert ["kefer.scoring", "kefer.train.losses"] in cycles(graph)
    graph = {"kefer.a": {"kefer.b"}, "kefer.b": {"kefer.c"}, "kefer.c": {"kefer.a"}, "kefer.lab.x": {"kefer.cli.y"}}
    assert cycles(graph) == [["kefer.a", "kefer.b", "kefer.c"]]
    assert wrong_arrows(graph) == ["kefer.lab.x (lab) -> kefer.cli.y (cli)"]


def test_function_level_imports_count(tmp_path):
    package = tmp_path / "kefer"
    (package / "train").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "train" / "__init__.py").write_text("")
    (package / "train" / "fit.py").write_text("X = 1\n")
    (package / "scoring.py").write_text("def f():\n    from .train.fit import X\n    return X\n")
    assert import_graph(package)["kefer.scoring"] == {"kefer.train.fit"}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_400_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 400, f"{path.name} has {lines} lines"
