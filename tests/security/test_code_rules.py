"""Issue 5 item 5, the rules that live in the code rather than in behaviour: SQL is only ever
parameterised (no statement is built from a value with an f-string, `%` or `.format`), and API
keys are compared in constant time. Each check runs on a positive control first, so a checker
that finds nothing because it looks at nothing fails."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from service.auth import service as auth_service
from service.kit import keyed_hash

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "consumers", "cli", "migrations")
# Calls that send SQL text: SQLAlchemy's text(), asyncpg's and SQLAlchemy's execute family.
SQL_CALLS = {"text", "execute", "executemany", "fetch", "fetchrow", "fetchval", "cursor",
             "exec_driver_sql"}


def _built_string(node: ast.expr) -> bool:
    """A string assembled at run time: f-string with values, `+`/`%` on strings, .format()."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return True
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format")


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return call.func.id if isinstance(call.func, ast.Name) else None


def _migration_ddl(call: ast.Call) -> bool:
    """Alembic's op.execute runs DDL (partitions named and bounded by month), which cannot
    take bind parameters; its values are constants of the migration, never input."""
    func = call.func
    return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id == "op")


def string_built_sql(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if (isinstance(node, ast.Call) and _called_name(node) in SQL_CALLS and node.args
                and _built_string(node.args[0]) and not _migration_ddl(node)):
            found.append(f"{filename}:{node.lineno}")
    return found


def test_the_checker_finds_string_built_sql() -> None:
    control = (
        "async def f(conn, session, value):\n"
        "    await conn.execute(f\"DELETE FROM t WHERE id = '{value}'\")\n"
        "    await session.execute(text('SELECT * FROM t WHERE a = ' + value))\n"
        "    await conn.fetch('SELECT %s' % value)\n"
        "    await conn.fetch('SELECT * FROM t WHERE a = $1', value)\n"
    )
    assert len(string_built_sql(control, "control.py")) == 3


def test_no_sql_is_built_from_values() -> None:
    files = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    assert len(files) > 50  # the packages are really there
    found = [hit for path in files
             for hit in string_built_sql(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == [], f"SQL assembled from strings at {found}; bind parameters instead"


def test_api_keys_are_compared_in_constant_time() -> None:
    # Positive control: the comparison really is hmac.compare_digest.
    assert keyed_hash.digests_equal(b"a" * 32, b"a" * 32)
    assert not keyed_hash.digests_equal(b"a" * 32, b"b" * 32)
    assert "hmac.compare_digest(" in inspect.getsource(keyed_hash.digests_equal)
    source = inspect.getsource(auth_service.authenticate)
    assert "digests_equal(" in source
    assert "==" not in source, "a key digest compared with == leaks timing"
