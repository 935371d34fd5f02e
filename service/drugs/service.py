"""The drug catalogue (药品目录): one entry per med_list_codg with the units in one pack, which
an NHSA split (拆零) sale row needs and does not carry."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import partial

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from service.drugs import repository
from service.drugs.models import Drug
from service.drugs.schemas import PACK_SIZE_MAX, CatalogueRow, DrugIn
from service.kit.errors import NotFound, Unprocessable
from service.kit.ttl_cache import TtlCache

_MED_LIST_CODE = re.compile(r"^[\x21-\x7e]{1,64}$")
COLUMNS = ("med_list_codg", "name", "pack_size")
COPY_BATCH = 10_000


class DrugNotFound(NotFound):
    code = "DRUG_NOT_FOUND"


class InvalidDrugCode(Unprocessable):
    code = "INVALID_DRUG_CODE"


def check_code(med_list_codg: str) -> None:
    if not _MED_LIST_CODE.match(med_list_codg):
        raise InvalidDrugCode(
            f"med_list_codg {med_list_codg!r} must be 1-64 printable ASCII characters")


async def put(session: AsyncSession, med_list_codg: str, data: DrugIn) -> Drug:
    check_code(med_list_codg)
    await repository.upsert(session, med_list_codg, data)
    return await get_existing(session, med_list_codg)


async def get_existing(session: AsyncSession, med_list_codg: str) -> Drug:
    row = await repository.get(session, med_list_codg)
    if row is None:
        raise DrugNotFound(f"drug {med_list_codg} is not in the catalogue")
    return row


async def pack_sizes(
    session: AsyncSession, cache: TtlCache[str, int], codes: Iterable[str]
) -> dict[str, int]:
    """Pack sizes of these drugs, from the in-process cache (seconds stale at most) or one
    query; a drug the catalogue lacks is absent (and asked again next time)."""
    return await cache.get_many_or_load(codes, partial(repository.pack_sizes, session))


@dataclass(slots=True)
class CatalogueFile:
    """A catalogue CSV read row by row: good rows by code (a later row of one code wins, as a
    later PUT would), refused rows with their line number and reason."""

    rows: dict[str, CatalogueRow] = field(default_factory=dict)
    refused: list[tuple[int, str]] = field(default_factory=list)
    read: int = 0


def read_catalogue(lines: Iterable[str], progress: Callable[[int], None]) -> CatalogueFile:
    """`lines` of a CSV with a header naming at least the columns med_list_codg, name,
    pack_size (in any order; other columns are ignored)."""
    result = CatalogueFile()
    reader = csv.DictReader(lines)
    missing = [name for name in COLUMNS if name not in (reader.fieldnames or [])]
    if missing:
        raise Unprocessable(f"the CSV header lacks the columns {', '.join(missing)}")
    for raw in reader:
        result.read += 1
        try:
            row = _row(raw)
        except ValueError as exc:  # the line the row ends on (a quoted name may span lines)
            result.refused.append((reader.line_num, str(exc)))
        else:
            result.rows[row.med_list_codg] = row
        if result.read % 1000 == 0:
            progress(1000)
    progress(result.read % 1000)
    return result


def _row(raw: dict[str | None, str | list[str] | None]) -> CatalogueRow:
    code, name, size = (str(raw.get(column) or "").strip() for column in COLUMNS)
    if not _MED_LIST_CODE.match(code):
        raise ValueError(f"med_list_codg {code!r} must be 1-64 printable ASCII characters")
    if not 1 <= len(name) <= 200:
        raise ValueError(f"name of {code} must be 1-200 characters")
    return CatalogueRow(code, name, _pack_size(code, size))


def _pack_size(code: str, text: str) -> int:
    """A whole number of units, as lists write it ("24", "24.0000")."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"pack_size of {code} is {text!r}, not a number") from None
    if value != value.to_integral_value() or not 1 <= value <= PACK_SIZE_MAX:
        raise ValueError(f"pack_size of {code} is {text!r}: a whole number 1-{PACK_SIZE_MAX}")
    return int(value)


async def import_catalogue(
    connection: asyncpg.Connection, rows: Iterable[CatalogueRow],
    progress: Callable[[int], None],
) -> int:
    """One transaction: every row is in the catalogue afterwards, or none is. Returns how many
    entries were new or changed (0 when the same file is imported again)."""
    async with connection.transaction():
        await repository.stage_import(connection)
        for batch in _batches(rows):
            await repository.copy_rows(connection, batch)
            progress(len(batch))
        return await repository.merge_import(connection)


def _batches(rows: Iterable[CatalogueRow]) -> Iterator[list[CatalogueRow]]:
    batch: list[CatalogueRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) == COPY_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
