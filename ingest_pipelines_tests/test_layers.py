"""The layering rule: domain modules import no Dagster; only defs/, components/ (dg Components), definitions.py
and the CLI glue may."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ingest_pipelines"
#: the Dagster layer (components/ wraps it for dg projects), and entry points that launch Dagster processes or runs
DAGSTER_ALLOWED = ("defs/", "components/", "definitions.py")


def dagster_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found += [f"{path.relative_to(PACKAGE)}:{node.lineno} imports {name}" for name in names if name.split(".")[0].startswith("dagster")]
    return found


def test_domain_modules_import_no_dagster() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(DAGSTER_ALLOWED):
            continue
        offenders += dagster_imports(path)
    assert offenders == []


def test_the_rule_sees_a_dagster_import(tmp_path: Path) -> None:
    sample = PACKAGE / "defs" / "resources.py"
    assert dagster_imports(sample), "the checker must find `import dagster` in defs/resources.py"
