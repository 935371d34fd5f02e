"""The drug catalogue (CONTRACT §8): PUT/GET /v1/drugs/{med_list_codg} and
`tracegate catalogue import FILE.csv`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cli.catalogue import import_catalogue
from service.settings import Settings
from tests import factories as f

Headers = dict[str, str]


def _code() -> str:
    return f"XC{f.batch_no()}"[:23]


async def test_put_then_get_and_who_may(api: httpx.AsyncClient, admin_headers: Headers) -> None:
    code = _code()
    body = {"name": "缬沙坦胶囊 80mg*7粒", "pack_size": 7}
    put = await api.put(f"/v1/drugs/{code}", json=body, headers=admin_headers)
    assert put.status_code == 200, put.text
    assert {k: put.json()[k] for k in ("med_list_codg", "name", "pack_size")} == {
        "med_list_codg": code, **body}
    regulator = await f.key_for(api, admin_headers, "regulator")
    got = await api.get(f"/v1/drugs/{code}", headers=regulator)
    assert got.json()["pack_size"] == 7
    assert (await api.put(f"/v1/drugs/{code}", json=body, headers=regulator)).status_code == 403
    ops = await f.key_for(api, admin_headers, "ops")
    assert (await api.get(f"/v1/drugs/{code}", headers=ops)).status_code == 403
    missing = await api.get(f"/v1/drugs/{_code()}", headers=admin_headers)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "DRUG_NOT_FOUND")
    bad = await api.put(f"/v1/drugs/{code}", json={**body, "pack_size": 0}, headers=admin_headers)
    assert bad.status_code == 422


async def test_a_code_that_is_not_printable_ascii_is_refused(
    api: httpx.AsyncClient, admin_headers: Headers
) -> None:
    response = await api.put("/v1/drugs/缬沙坦", json={"name": "x", "pack_size": 1},
                             headers=admin_headers)
    assert (response.status_code, response.json()["error"]["code"]) == (422, "INVALID_DRUG_CODE")


async def test_catalogue_import_is_one_idempotent_transaction(
    api: httpx.AsyncClient, admin_headers: Headers, settings: Settings, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    codes = [_code() for _ in range(2500)]
    rows = [f"{code},布洛芬缓释胶囊 {n},{n % 50 + 1}.0000" for n, code in enumerate(codes)]
    path = tmp_path / "catalogue.csv"
    # a spreadsheet's export: byte-order mark, columns in its own order and one more
    text = "pack_size_unit,med_list_codg,name,pack_size\n" + "\n".join(
        f"粒,{row}" for row in rows) + "\n粒,,无编码,3\n粒,XBAD,半盒,0.5\n"
    path.write_text(text, encoding="utf-8-sig")
    assert await _import(path, settings) == 1  # two rows refused, the rest imported
    out = capsys.readouterr().out
    assert "2502 rows read: 2500 drugs, 2500 new or changed, 2 rows refused" in out
    assert "line 2502: med_list_codg '' must be 1-64 printable ASCII characters" in out
    assert "line 2503: pack_size of XBAD is '0.5': a whole number" in out
    got = await api.get(f"/v1/drugs/{codes[7]}", headers=admin_headers)
    assert (got.json()["name"], got.json()["pack_size"]) == ("布洛芬缓释胶囊 7", 8)
    assert await _import(path, settings) == 1
    assert "2500 drugs, 0 new or changed" in capsys.readouterr().out


async def test_catalogue_import_says_what_is_wrong_with_a_file(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("med_list_codg,name,pack_size\nX1,阿莫西林,24\n".encode("gbk"))
    assert await _import(gbk, settings) == 2
    assert "--encoding gbk" in capsys.readouterr().err
    header = tmp_path / "header.csv"
    header.write_text("code,name\nX1,a\n")
    assert await _import(header, settings) == 2
    assert "lacks the columns med_list_codg, pack_size" in capsys.readouterr().err


async def _import(path: Path, settings: Settings) -> int:
    """The command runs its own event loop; here it runs beside the session's."""
    import asyncio

    return await asyncio.to_thread(import_catalogue, path, settings, "utf-8-sig")
