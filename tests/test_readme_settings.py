"""The README's configuration table says what app/config.py declares: every variable, its default, its meaning."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.config import Settings, readme_rows, readme_table, shown_default

README = Path(__file__).resolve().parent.parent / "README.md"
ROW = re.compile(r"^\| `(?P<variable>[A-Z][A-Z0-9_]*)` \| (?P<default>.*?) \| (?P<meaning>.*) \|$")


def table_of(readme: str) -> dict[str, tuple[str, str]]:
    """variable -> (default, meaning), from the table of the README's Configuration section."""
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            rows[match["variable"]] = (match["default"], match["meaning"])
    return rows


def table_problems(readme: str) -> list[str]:
    documented = table_of(readme)
    declared = {field.validation_alias: (shown_default(field.default), field.description)
                for field in Settings.model_fields.values() if field.validation_alias}
    problems = [f"{name} is declared but missing from the README table" for name in declared if name not in documented]
    problems += [f"{name} is in the README table but not declared" for name in documented if name not in declared]
    for name in declared.keys() & documented.keys():
        (default, meaning), (shown, said) = declared[name], documented[name]
        if shown != default:
            problems.append(f"{name}: the README says the default is {shown}, the declaration {default}")
        if said != meaning:
            problems.append(f"{name}: the README's meaning differs from the declaration's")
    return problems


def test_the_readme_table_matches_the_declarations():
    problems = table_problems(README.read_text())
    assert not problems, "\n".join(problems) + "\n\nthe table as declared:\n" + readme_table()


def test_every_declared_setting_has_a_variable_and_a_meaning():
    for name, field in Settings.model_fields.items():
        if name != "extra":
            assert field.validation_alias and field.description, name


def _without_row(readme: str, variable: str) -> str:
    return "\n".join(line for line in readme.splitlines() if not line.startswith(f"| `{variable}` |"))


def test_a_declared_setting_missing_from_the_table_is_found():
    assert table_problems(_without_row(README.read_text(), "WEBHOOK_TIMEOUT")) == \
        ["WEBHOOK_TIMEOUT is declared but missing from the README table"]


def test_a_table_row_for_an_undeclared_variable_is_found():
    readme = README.read_text().replace(readme_rows()[0], readme_rows()[0] + "\n| `WEBHOOK_COLOUR` | blue | none |")
    assert table_problems(readme) == ["WEBHOOK_COLOUR is in the README table but not declared"]


@pytest.mark.parametrize("variable,declared,written", [
    ("MAX_BATCH_SIZE", "50000", "5000"), ("WORKER_ENABLED", "true", "false"),
    ("RATE_LIMIT_SYNC", "`100/minute`", "`100/hour`"),
])
def test_a_default_that_differs_from_the_declaration_is_found(variable, declared, written):
    readme = README.read_text()
    row = f"| `{variable}` | {declared} |"
    assert row in readme
    problems = table_problems(readme.replace(row, f"| `{variable}` | {written} |"))
    assert problems == [f"{variable}: the README says the default is {written}, the declaration {declared}"]


def test_defaults_are_shown_as_a_user_writes_them():
    assert [shown_default(v) for v in (None, "", (), True, 30.0, 0.1, 5, "memory://", 10 * 1024 * 1024)] == \
        ["—", "—", "—", "true", "30", "0.1", "5", "`memory://`", "10485760 (10 MiB)"]
