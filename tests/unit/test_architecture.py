"""House rules that keep the core pure."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "routing_engine"
DOMAIN = sorted(str(p.relative_to(PACKAGE).with_suffix("")) for p in (PACKAGE / "domain").rglob("*.py"))
FORBIDDEN = {"redis", "psycopg", "KSR", "socket", "subprocess", "routing_engine.adapters", "routing_engine.calls",
             "routing_engine.entrypoints", "routing_engine.ops", "routing_engine.companion",
             "routing_engine.bootstrap", "routing_engine.metrics"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_domain_modules_import_no_io_libraries() -> None:
    assert len(DOMAIN) > 20, DOMAIN  # every module under routing_engine/domain is covered
    for module in DOMAIN:
        bad = {i for i in imports_of(PACKAGE / f"{module}.py")
               if any(i == f or i.startswith(f + ".") for f in FORBIDDEN)}
        assert not bad, f"routing_engine/{module}.py imports {bad}"


def test_domain_modules_read_no_hidden_clock() -> None:
    for module in DOMAIN:
        text = (PACKAGE / f"{module}.py").read_text()
        assert "datetime.now(" not in text and "time.time(" not in text, module


def test_money_is_never_a_float_in_the_domain() -> None:
    for module in DOMAIN:
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        floats = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "float"]
        assert not floats, f"{module}.py uses float at lines {floats}"


def import_graph() -> dict[str, set[str]]:
    """routing_engine module -> the routing_engine modules it imports, at any depth of the file
    (an import inside a function counts: it hides a cycle, it does not remove it)."""
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("routing_engine", *path.relative_to(PACKAGE).with_suffix("").parts))
        modules[name.removesuffix(".__init__")] = path

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                found = known(target) if target.startswith("routing_engine") else None
                # a module importing its own package's __init__ (for a sibling) is no cycle
                if found and found != module and not module.startswith(found + "."):
                    graph[module].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_sees_an_import_hidden_in_a_function() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    real = import_graph()
    api = "routing_engine.entrypoints.api"
    assert f"{api}.server" in real[f"{api}.__main__"]  # an import at module level
    assert "routing_engine.domain.media_plan" in real["routing_engine.adapters.packed"]  # one inside a function
