"""`tracegate import nhsa FILE` against the embedded stack: a platform export's 3505/3505A
messages reach the settlements topic as stream settlements the consumers decide; rows that
cannot be sent are counted and listed with their reasons; an interrupted import resumes from
its checkpoint, and the chunk it re-sends doubles nothing in the record."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from cli.nhsa_checkpoint import ImportRefused, Paths
from cli.nhsa_import import ImportOptions, report, run_import
from service.settings import Settings
from tests import factories as f
from tests.hostile.support import flags_of, read_topic
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")


class Interrupted(Exception):
    """Stands for Ctrl-C or a crash part-way through."""


def _write(path: Path, messages: list[Any]) -> Path:
    path.write_bytes(b"".join(
        (m if isinstance(m, bytes) else orjson.dumps(m)) + b"\n" for m in messages))
    return path


async def _recorded(settings: Settings, ids: list[str]) -> Counter[str]:
    rows = await f.record_rows(settings.asyncpg_dsn, "SELECT settlement_id FROM settlements "
                               "WHERE settlement_id = ANY($1)", ids)
    return Counter(row[0] for row in rows)


async def test_an_export_is_decided_by_the_consumers_and_refusals_are_listed(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    shop, other = await f.register(api, admin_headers), await f.register(api, admin_headers)
    reused, receipt = f.cn20(), f.batch_no()
    sale = f.nhsa_sale(shop, f.nhsa_row([reused]))
    batch = f.nhsa_sales(other, [f.nhsa_row([reused], docno=receipt),
                                 f.nhsa_row([], docno=receipt),
                                 {**f.nhsa_row([], docno="BAD"), "sel_retn_time": "x"}])
    returned = f.nhsa_message("3506", shop, {"selinfo": f.nhsa_row([reused])})
    stranger = f.nhsa_sale("P99999999999", f.nhsa_row([f.cn20()]))
    path = _write(tmp_path / "export.jsonl", [sale, batch, b"", b"{oops", returned, stranger])
    paths = Paths.for_file(path, None)
    ordered = ImportOptions(ordered=True)  # decided in the file's order: the shop paid first
    checkpoint = await run_import(path, settings, paths, ordered, lambda n: None)
    summary = checkpoint.summary
    assert (summary.messages, summary.rows, summary.settlements, summary.codes,
            summary.refused_rows) == (5, 7, 2, 2, 4)
    refused = [orjson.loads(line) for line in paths.refused.read_bytes().splitlines()]
    assert [(r["line"], r["rows"]) for r in refused] == [(2, 1), (4, 1), (5, 1), (6, 1)]
    assert "input.selinfoDetail[2].sel_retn_time 'x' is not a time" in refused[0]["reason"]
    assert refused[1]["reason"].startswith("not JSON")
    assert "infno 3506 is not a sale" in refused[2]["reason"]
    assert "P99999999999 is not a registered institution" in refused[3]["reason"]
    text = report(path, settings.topic_settlements, paths, checkpoint)
    assert "5 messages, 7 rows -> 2 settlements (2 trace codes)" in text
    # decided by the consumers: the second payment of the code is flagged for claw-back,
    # the row without a code after go-live too (the money has moved: nothing is refused)
    flags = await eventually(lambda: flags_of(api, admin_headers, other),
                             lambda found: len(found) == 2)
    assert sorted(flag["kind"] for flag in flags) == ["duplicate_payment", "missing_code"]
    assert all(flag["settlement_id"] == f"3505A:{other}:{receipt}" for flag in flags)


async def test_an_interrupted_import_resumes_and_doubles_nothing(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    shop = await f.register(api, admin_headers)
    messages = [f.nhsa_sale(shop, f.nhsa_row([f.cn20()])) for _ in range(30)]
    ids = [f"3505:{shop}:{m['input']['selinfo']['fixmedins_bchno']}" for m in messages]
    path = _write(tmp_path / "export.jsonl", messages)
    paths = Paths.for_file(path, tmp_path / "state")
    confirmed: list[int] = []
    small = ImportOptions(chunk_codes=5)

    def crash_after_two_chunks(done: int) -> None:
        if done:
            confirmed.append(done)
        if len(confirmed) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        await run_import(path, settings, paths, small, crash_after_two_chunks)
    halfway = orjson.loads(paths.checkpoint.read_bytes())
    assert (halfway["line"], halfway["summary"]["settlements"]) == (10, 10)
    final = await run_import(path, settings, paths, small, lambda n: None)
    assert (final.line, final.offset, final.summary.settlements) == (
        30, path.stat().st_size, 30)
    again = await run_import(path, settings, paths, small, lambda n: None)
    assert again.summary.settlements == 30  # nothing new to send
    records = await read_topic(settings.kafka_bootstrap, settings.topic_settlements,
                               lambda rs: {r.key for r in rs} >= {i.encode() for i in ids})
    sent = Counter(r.key.decode() for r in records if r.key and r.key.decode() in ids)
    assert set(sent) == set(ids)
    # only the chunk in flight at the interruption (lines 11-15) went out twice
    assert {sid for sid, n in sent.items() if n > 1} <= set(ids[10:15])
    counted = await eventually(lambda: _recorded(settings, ids), lambda c: len(c) == 30)
    assert set(counted.values()) == {1}


async def test_a_file_changed_under_its_checkpoint_is_refused(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    shop = await f.register(api, admin_headers)
    path = _write(tmp_path / "export.jsonl", [f.nhsa_sale(shop, f.nhsa_row([f.cn20()]))])
    paths = Paths.for_file(path, None)
    await run_import(path, settings, paths, ImportOptions(), lambda n: None)
    _write(path, [f.nhsa_sale(shop, f.nhsa_row([f.cn20()]))])
    with pytest.raises(ImportRefused, match="--restart"):
        await run_import(path, settings, paths, ImportOptions(), lambda n: None)
    restarted = await run_import(path, settings, paths, ImportOptions(restart=True),
                                 lambda n: None)
    assert restarted.summary.settlements == 1


@pytest.mark.usefixtures("logging_restored")  # `main` sets up JSON logs on pytest's stderr
async def test_the_commands_as_an_operator_runs_them(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """`tracegate catalogue import` and `tracegate import nhsa`, configured by environment."""
    import asyncio

    from cli.main import main

    for name, value in (("DATABASE_URL", settings.database_url),
                        ("KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
                        ("TOPIC_SETTLEMENTS", settings.topic_settlements)):
        monkeypatch.setenv(f"TRACEGATE_{name}", value)
    drug = f"XD{f.batch_no()}"
    catalogue = tmp_path / "drugs.csv"
    catalogue.write_text(f"med_list_codg,name,pack_size\n{drug},布洛芬,24\n")
    assert await asyncio.to_thread(main, ["catalogue", "import", str(catalogue)]) == 0
    assert "1 rows read: 1 drugs, 1 new or changed, 0 rows refused" in capsys.readouterr().out
    shop = await f.register(api, admin_headers)
    pack = f.cn20()
    sale = f.nhsa_sale(shop, f.nhsa_row([pack], count="3.0000", split=True, drug=drug))
    path = _write(tmp_path / "export.jsonl", [sale])
    assert await asyncio.to_thread(main, ["import", "nhsa", str(path), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{path}: 1 messages, 1 rows -> 1 settlements (1 trace codes) on " \
           f"{settings.topic_settlements}" in out
    assert "refused: 0 rows" in out
    sid = f"3505:{shop}:{sale['input']['selinfo']['fixmedins_bchno']}"
    response = await eventually(lambda: api.get(f"/v1/settlements/{sid}", headers=admin_headers),
                                lambda r: r.status_code == 200)
    assert response.json()["decision"] == "pay"  # a split row, its pack size catalogued
