"""The layout keeps its promises: packages say what they are for, dependencies point one way, and
modules do not reach into each other's private names."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE = ("events", "projections", "services", "bench")


def python_files(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py") if ".venv" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize(
    "package",
    sorted({module_name(p) for p in python_files(*CODE) if p.name == "__init__.py"}),
)
def test_every_package_says_in_one_line_what_it_is_for(package: str) -> None:
    init = ROOT / package.replace(".", "/") / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text()))
    assert docstring, f"{init.relative_to(ROOT)} has no docstring: say in one line what it is for"
    first = docstring.splitlines()[0]
    assert first.endswith((".", ")")), f"{package}: the first line is not a sentence: {first!r}"
    assert len(first) <= 110, f"{package}: the first line is {len(first)} characters: one line"


def private_imports(path: Path) -> list[str]:
    """``from x import _name`` where x is another module of ours."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        if node.module.split(".")[0] not in (*CODE, "tests"):
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                found.append(f"{where}:{node.lineno} imports {alias.name} from {node.module}")
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    offences = [o for p in python_files(*CODE, "tests") for o in private_imports(p)]
    assert not offences, "a name used by another module is public (no leading _):\n" + "\n".join(
        offences
    )


def test_the_private_import_check_catches_one(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom services.intake.committer import _Unit, Committer\n")
    assert private_imports(sample) == ["sample.py:2 imports _Unit from services.intake.committer"]


def test_dependencies_point_one_way() -> None:
    """The contracts in pyproject.toml ([tool.importlinter]): events/ imports nothing of ours,
    projections/ and services/domain/ import events/ only, services are layered, no cycles."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is a dev dependency: uv sync"
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
