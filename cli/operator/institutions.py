"""`tracegate institutions put|list|import`.

`put` and `list` call the API (an operator's usual way in, and the API forgets its cached
copy of a changed institution at once); `import` writes PostgreSQL directly: a national list
of tens of thousands of institutions is one statement per thousand rows instead of a request
per row, checked whole before anything is written."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from cli.operator import environment, parsing, render
from cli.operator.api import ApiClient
from cli.operator.database import unit_of_work
from cli.operator.environment import OperatorError
from service.institutions import changes
from service.institutions.schemas import InstitutionIn
from service.institutions.service import InvalidInstitutionId, check_institution_id, put_many
from service.kit import event_loop
from service.kit.redis_client import build_redis
from service.settings import InstitutionKind, Settings

COLUMNS = ("institution_id", "name", "kind", "region", "go_live_override")
CHUNK = 1000
_MAX_ERRORS = 20
Row = tuple[str, InstitutionIn]


def put(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "kind": args.kind, "region": args.region,
                            "go_live_override": args.go_live_override}
    with ApiClient(environment.api_access(args)) as api:
        answer = api.call("PUT", f"/v1/institutions/{args.institution_id}", json=body)
    if args.json:
        render.json_document(answer)
    else:
        _show([answer])
    return 0


def list_all(args: argparse.Namespace) -> int:
    with ApiClient(environment.api_access(args)) as api:
        items = list(api.pages("/v1/institutions", {"limit": 1000}))
    if args.json:
        render.json_lines(items)
    else:
        _show(items)
    return 0


def _show(items: list[dict[str, Any]]) -> None:
    render.table(
        ([i["institution_id"], i["name"], i["kind"], i.get("region") or "",
          i.get("go_live_override") or "", render.local_time(i["effective_go_live"])]
         for i in items),
        ["institution", "name", "kind", "region", "go-live override", "effective go-live"])


def import_file(args: argparse.Namespace) -> int:
    rows = read_csv(args.file)
    settings = environment.settings(args)
    event_loop.run(write(settings, rows))
    render.out(f"imported {len(rows)} institutions from {args.file} (the API serves the "
               "changes within 5 s, its cache's lifetime)")
    return 0


def read_csv(path: Path) -> list[Row]:
    """Every row checked before anything is written; the first errors, each with its line."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return _checked(handle, path)
    except OSError as exc:
        raise OperatorError(f"cannot read {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise OperatorError(f"{path} is not UTF-8 text: {exc}") from exc


def _checked(handle: Any, path: Path) -> list[Row]:
    reader = csv.DictReader(handle)
    missing = {"institution_id", "name", "kind"} - set(reader.fieldnames or ())
    if missing:
        raise OperatorError(f"{path}: the header must name the columns {', '.join(COLUMNS)} "
                            f"(missing: {', '.join(sorted(missing))})")
    rows: list[Row] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for line, record in _numbered(reader):
        try:
            rows.append(_row(record, seen, line))
        except (ValidationError, InvalidInstitutionId, ValueError) as exc:
            errors.append(f"line {line}: {_message(exc)}")
    if errors:
        shown = "\n  ".join(errors[:_MAX_ERRORS])
        more = f"\n  … and {len(errors) - _MAX_ERRORS} more" if len(errors) > _MAX_ERRORS else ""
        raise OperatorError(f"{path}: {len(errors)} bad rows, nothing imported:\n  {shown}{more}")
    return rows


def _numbered(reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, str]]]:
    for record in reader:
        yield reader.line_num, record


def _row(record: dict[str, str], seen: dict[str, int], line: int) -> Row:
    institution_id = (record.get("institution_id") or "").strip()
    check_institution_id(institution_id)
    if institution_id in seen:
        raise ValueError(f"{institution_id} is already on line {seen[institution_id]}")
    seen[institution_id] = line
    data = InstitutionIn.model_validate({
        "name": (record.get("name") or "").strip(), "kind": (record.get("kind") or "").strip(),
        "region": (record.get("region") or "").strip() or None,
        "go_live_override": (record.get("go_live_override") or "").strip() or None,
    })
    return institution_id, data


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                         for e in exc.errors())
    if isinstance(exc, InvalidInstitutionId):
        return exc.message
    return str(exc)


async def write(settings: Settings, rows: list[Row]) -> None:
    """One transaction: the file is imported whole or not at all; then the gates hear of it
    (they keep institutions in memory until one changes: service/institutions/changes.py)."""
    async with unit_of_work(settings) as session:
        with tqdm(total=len(rows), unit=" institutions", desc="import", file=sys.stderr) as bar:
            for start in range(0, len(rows), CHUNK):
                await put_many(session, rows[start:start + CHUNK])
                bar.update(len(rows[start:start + CHUNK]))
    redis = build_redis(settings.redis_url, cluster=settings.redis_cluster)
    try:
        await changes.changed(redis)
    finally:
        await redis.aclose()


def register(sub: parsing.SubParsers) -> None:
    actions = parsing.group(sub, "institutions", "designated institutions (定点医药机构)")
    one = parsing.command(actions, "put", "register or update one institution (via the API)",
                          environment.API_VARIABLES, put)
    one.add_argument("institution_id", metavar="INSTITUTION_ID",
                     help="its 12-character fixmedins_code")
    one.add_argument("--name", required=True)
    one.add_argument("--kind", required=True, choices=[k.value for k in InstitutionKind])
    one.add_argument("--region", default=None, help="e.g. an administrative division code")
    one.add_argument("--go-live-override", default=None, metavar="YYYY-MM-DD",
                     help="its own go-live date (local midnight), instead of its kind's")
    one.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    listed = parsing.command(actions, "list", "every registered institution (via the API)",
                             environment.API_VARIABLES, list_all)
    listed.add_argument("--json", action="store_true", help="one JSON object a line")
    bulk = parsing.command(
        actions, "import", "register or update every institution of a CSV file, directly in "
        "PostgreSQL, in one transaction (a bad row imports nothing)",
        environment.IMPORT_VARIABLES, import_file)
    bulk.add_argument("file", type=Path, metavar="FILE.csv",
                      help=f"UTF-8 CSV with a header: {','.join(COLUMNS)} (region and "
                           "go_live_override may be empty)")
