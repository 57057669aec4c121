"""README's layout table agrees with the tree: every folder and module it names exists, and every
module of the package is named by it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "routing_engine"


def _layout_rows() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| (.+) \|$", section, re.M)
    assert len(rows) > 10, "README's layout table not found"
    return rows


def test_every_path_the_layout_table_names_exists() -> None:
    for path, _ in _layout_rows():
        assert (ROOT / path.split(",")[0].strip()).exists(), f"README names {path}, which is not in the tree"


def test_every_module_of_the_package_is_in_the_layout_table() -> None:
    rows = dict(_layout_rows())
    for module in sorted(PACKAGE.rglob("*.py")):
        if module.name in ("__init__.py", "__main__.py"):
            continue
        folder = module.parent.relative_to(ROOT).as_posix() + "/"
        if folder.endswith("/strategies/") or folder.endswith("/api/"):
            continue  # named as a folder
        described = rows.get(folder, "")
        assert f"`{module.stem}`" in described, f"{module.relative_to(ROOT)} is not in README's layout table"
