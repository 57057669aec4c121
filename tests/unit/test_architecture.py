"""House rules that keep the core pure."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "routing_engine"
DOMAIN = ["numbers", "auth", "lcr", "decision", "cdr", "snapshot", "lrn", "jurisdiction", "translation", "failover",
          "registrar", "inbound", "credentials", "media",
          "strategies/__init__", "strategies/least_cost", "strategies/priority", "strategies/weighted"]
FORBIDDEN = {"redis", "psycopg", "KSR", "routing_engine.adapters", "socket", "subprocess"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_domain_modules_import_no_io_libraries() -> None:
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
