"""`tracegate catalogue import FILE.csv`: the drug catalogue (med_list_codg,name,pack_size) in
one transaction, with a progress bar. Importing the same file again changes nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import asyncpg
from tqdm import tqdm

from service.drugs import service as drugs
from service.drugs.service import CatalogueFile
from service.kit import event_loop
from service.kit.errors import Unprocessable
from service.settings import Settings

SHOWN_REFUSALS = 20


def import_catalogue(path: Path, settings: Settings, encoding: str) -> int:
    """0: every row imported; 1: some rows refused (the others imported); 2: nothing was."""
    try:
        catalogue = _read(path, encoding)
    except (UnicodeDecodeError, Unprocessable, OSError) as exc:
        sys.stderr.write(f"cannot read {path}: {_reason(exc, encoding)}\n")
        return 2
    changed = event_loop.run(_store(settings, catalogue))
    sys.stdout.write(f"{catalogue.read} rows read: {len(catalogue.rows)} drugs, {changed} new "
                     f"or changed, {len(catalogue.refused)} rows refused\n")
    for line, reason in catalogue.refused[:SHOWN_REFUSALS]:
        sys.stdout.write(f"  line {line}: {reason}\n")
    if len(catalogue.refused) > SHOWN_REFUSALS:
        sys.stdout.write(f"  ... and {len(catalogue.refused) - SHOWN_REFUSALS} more\n")
    return 1 if catalogue.refused else 0


def _read(path: Path, encoding: str) -> CatalogueFile:
    # utf-8-sig: a spreadsheet's UTF-8 export starts with a byte-order mark.
    with path.open(encoding=encoding, newline="") as handle, \
            tqdm(desc="read", unit=" rows", file=sys.stderr) as bar:
        return drugs.read_catalogue(handle, bar.update)


def _reason(exc: Exception, encoding: str) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not {encoding} text ({exc.reason}); lists from some systems need --encoding gbk"
    return exc.message if isinstance(exc, Unprocessable) else str(exc)


async def _store(settings: Settings, catalogue: CatalogueFile) -> int:
    connection = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        with tqdm(total=len(catalogue.rows), desc="import", unit=" rows",
                  file=sys.stderr) as bar:
            return await drugs.import_catalogue(connection, catalogue.rows.values(),
                                                bar.update)
    finally:
        await connection.close()
