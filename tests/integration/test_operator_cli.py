"""The operator CLI against the real API (a uvicorn socket), PostgreSQL and Kafka, configured as
an operator would: a stack.env naming them. Each command runs in a thread (its HTTP client
blocks, and the API it calls runs on this test's event loop)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from cli.main import _parser
from service.settings import Settings
from tests import factories as f
from tests.conftest import ADMIN_KEY
from tests.hostile.support import isolated_stack, produce, read_topic, stream_event
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")
Headers = dict[str, str]


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def stack_env(tmp_path: Path, live_api: str, settings: Settings) -> Path:
    return write_stack_env(tmp_path / "stack.env", settings, live_api, ADMIN_KEY)


def write_stack_env(path: Path, settings: Settings, api_url: str, key: str) -> Path:
    values = {
        "TRACEGATE_API_URL": api_url, "TRACEGATE_API_KEY": key,
        "TRACEGATE_DATABASE_URL": settings.database_url, "TRACEGATE_REDIS_URL": settings.redis_url,
        "TRACEGATE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TRACEGATE_TOPIC_SETTLEMENTS": settings.topic_settlements,
        "TRACEGATE_TOPIC_DLQ": settings.topic_dlq,
        "TRACEGATE_CONSUMER_GROUP": settings.consumer_group,
    }
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


async def cli(capsys: pytest.CaptureFixture[str], stack_env: Path, *argv: str) -> Ran:
    """`tracegate ARGV --stack-env FILE`, as main() dispatches it (without its logging set-up,
    which would take over this process's handlers)."""
    args = _parser().parse_args([*argv, "--stack-env", str(stack_env)])
    capsys.readouterr()
    code = await asyncio.to_thread(args.command, args)
    out, err = capsys.readouterr()
    return Ran(code, out, err)


async def test_institutions_put_list_and_import(
    capsys: pytest.CaptureFixture[str], stack_env: Path, api: httpx.AsyncClient,
    admin_headers: Headers, tmp_path: Path,
) -> None:
    one = f.institution_id()
    put = await cli(capsys, stack_env, "institutions", "put", one, "--name", "东城药店",
                    "--kind", "retail_pharmacy", "--go-live-override", "2025-04-15")
    assert put.code == 0, put.err
    assert "2025-04-15 00:00:00" in put.out  # effective go-live, local midnight
    many = [f.institution_id("I") for _ in range(1500)]  # more than one statement's worth
    csv = tmp_path / "institutions.csv"
    csv.write_text("institution_id,name,kind,region,go_live_override\n" + "".join(
        f"{iid},clinic {iid},primary,110105,\n" for iid in many), encoding="utf-8")
    imported = await cli(capsys, stack_env, "institutions", "import", str(csv))
    assert imported.code == 0, imported.err
    assert "imported 1500 institutions" in imported.out
    answer = await api.get(f"/v1/institutions/{many[-1]}", headers=admin_headers)
    assert answer.json()["kind"] == "primary"
    listed = await cli(capsys, stack_env, "institutions", "list", "--json")
    ids = {orjson.loads(line)["institution_id"] for line in listed.out.splitlines()}
    assert {one, *many} <= ids


async def test_an_import_with_bad_rows_imports_nothing(
    capsys: pytest.CaptureFixture[str], stack_env: Path, api: httpx.AsyncClient,
    admin_headers: Headers, tmp_path: Path,
) -> None:
    good = f.institution_id()
    csv = tmp_path / "bad.csv"
    csv.write_text("institution_id,name,kind\n"
                   f"{good},fine,secondary\n"
                   "short,bad id,primary\n"
                   f"{f.institution_id()},bad kind,hospital\n"
                   f"{good},twice,secondary\n")
    ran = await cli(capsys, stack_env, "institutions", "import", str(csv))
    assert ran.code == 1
    assert "3 bad rows, nothing imported" in ran.err
    assert "line 3: institution_id 'short'" in ran.err
    assert "line 4: kind" in ran.err
    assert f"line 5: {good} is already on line 2" in ran.err
    assert (await api.get(f"/v1/institutions/{good}", headers=admin_headers)).status_code == 404


async def test_keys_create_list_and_revoke(
    capsys: pytest.CaptureFixture[str], stack_env: Path, api: httpx.AsyncClient,
    admin_headers: Headers,
) -> None:
    pharmacy = await f.register(api, admin_headers)
    made = await cli(capsys, stack_env, "keys", "create", "--role", "pos", "--institution",
                     pharmacy, "--json")
    assert made.code == 0, made.err
    minted = orjson.loads(made.out)
    key = {"Authorization": f"Bearer {minted['key']}"}
    assert (await api.get("/v1/flags", headers=key)).status_code == 403  # a pos key, known
    listed = await cli(capsys, stack_env, "keys", "list")
    assert pharmacy in listed.out
    assert minted["key"] not in listed.out
    revoked = await cli(capsys, stack_env, "keys", "revoke", str(minted["key_id"]))
    assert revoked.code == 0, revoked.err
    assert (await api.get("/v1/flags", headers=key)).status_code == 401
    active = await cli(capsys, stack_env, "keys", "list", "--json")
    assert minted["key_id"] not in {orjson.loads(line)["key_id"] for line in
                                    active.out.splitlines()}
    everything = await cli(capsys, stack_env, "keys", "list", "--include-revoked", "--json")
    [row] = [orjson.loads(line) for line in everything.out.splitlines()
             if orjson.loads(line)["key_id"] == minted["key_id"]]
    assert row["revoked_at"] is not None
    again = await cli(capsys, stack_env, "keys", "create", "--role", "pos")
    assert again.code == 1
    assert "422" in again.err  # in words, from the API


async def _flagged_code(api: httpx.AsyncClient, admin: Headers) -> tuple[str, str, str]:
    """A code paid at one pharmacy at 10:15 Shanghai time, then again at another (a flag),
    both recorded; (code, second pharmacy, its flag id)."""
    a, b = await f.register(api, admin), await f.register(api, admin)
    code = f.cn20()
    await f.settle(api, admin, f.settlement(a, [f.line(1, [code])],
                                            settled_at="2025-07-01T02:15:00Z"))
    second = await f.settle(api, admin, f.settlement(b, [f.line(1, [code])]))
    found = await eventually(lambda: f.history(api, admin, code),
                             lambda h: h is not None and bool(h["flags"]))
    assert found is not None
    return code, b, second["flags"][0]


async def test_code_show_in_shanghai_time(
    capsys: pytest.CaptureFixture[str], stack_env: Path, api: httpx.AsyncClient,
    admin_headers: Headers,
) -> None:
    code, _, flag = await _flagged_code(api, admin_headers)
    shown = await cli(capsys, stack_env, "code", "show", code)
    assert shown.code == 0, shown.err
    assert f"{code}  format cn20  status paid" in shown.out
    assert "2025-07-01 10:15:00" in shown.out  # 02:15 UTC, read in Asia/Shanghai
    assert flag in shown.out
    unseen = await cli(capsys, stack_env, "code", "show", f.cn20())
    assert unseen.code == 1
    assert "404 CODE_NOT_SEEN" in unseen.err


async def test_flags_tail_filters_by_kind_institution_and_status(
    capsys: pytest.CaptureFixture[str], stack_env: Path, api: httpx.AsyncClient,
    admin_headers: Headers,
) -> None:
    _, institution, flag = await _flagged_code(api, admin_headers)
    await eventually(lambda: api.get(f"/v1/flags?institution_id={institution}",
                                     headers=admin_headers),
                     lambda r: bool(r.json()["items"]))
    base = ("flags", "tail", "--institution", institution, "--since", "1h")
    assert flag in (await cli(capsys, stack_env, *base)).out
    assert flag in (await cli(capsys, stack_env, *base, "--kind", "duplicate_payment")).out
    assert flag not in (await cli(capsys, stack_env, *base, "--kind", "split_overuse")).out
    assert flag in (await cli(capsys, stack_env, *base, "--status", "new")).out
    assert flag not in (await cli(capsys, stack_env, *base, "--status", "closed")).out


async def test_flags_set_works_a_case_through_its_triage(
    capsys: pytest.CaptureFixture[str], stack_env: Path, api: httpx.AsyncClient,
    admin_headers: Headers,
) -> None:
    _, _, flag = await _flagged_code(api, admin_headers)
    await eventually(lambda: api.get(f"/v1/flags/{flag}", headers=admin_headers),
                     lambda r: r.status_code == 200)
    looking = await cli(capsys, stack_env, "flags", "set", flag, "investigating")
    assert looking.code == 0, looking.err
    closed = await cli(capsys, stack_env, "flags", "set", flag, "closed", "--resolution",
                       "legitimate", "--note", "a return not yet recorded")
    assert closed.code == 0, closed.err
    case = (await api.get(f"/v1/flags/{flag}", headers=admin_headers)).json()
    assert (case["status"], case["resolution"]) == ("closed", "legitimate")
    assert [step["status"] for step in case["history"]] == ["investigating", "closed"]
    refused = await cli(capsys, stack_env, "flags", "set", flag, "escalated")
    assert refused.code == 1
    assert "409 INVALID_TRANSITION" in refused.err


async def test_partitions_ensure_is_idempotent(
    capsys: pytest.CaptureFixture[str], stack_env: Path, settings: Settings,
) -> None:
    first = await cli(capsys, stack_env, "partitions", "ensure", "--months", "60")
    assert first.code == 0, first.err
    again = await cli(capsys, stack_env, "partitions", "ensure", "--months", "60")
    assert again.code == 0, again.err
    said = re.search(r"nothing to create; (\d+) months ahead", again.out)
    assert said is not None, again.out
    assert int(said[1]) >= 60
    names = await f.record_rows(settings.asyncpg_dsn, "SELECT c.relname FROM pg_inherits i "
                                "JOIN pg_class c ON c.oid = i.inhrelid "
                                "WHERE i.inhparent = 'code_events'::regclass")
    local = dt.datetime.now(dt.timezone(dt.timedelta(hours=8)))
    assert f"code_events_y{local.year + 4}m{local.month:02d}" in {row[0] for row in names}


async def test_dlq_list_and_replay_after_the_cause_is_mended(
    capsys: pytest.CaptureFixture[str], settings: Settings, live_api: str, tmp_path: Path,
    producer: Any,
) -> None:
    """Two events dead-lettered: one for an institution not registered yet, one with a bad
    quantity. The institution is registered, the quantity mended in the listing's JSON, and a
    replay records both; a second replay re-publishes nothing."""
    async with isolated_stack(settings) as stack:
        own = stack.settings
        env = write_stack_env(tmp_path / "own.env", own, live_api, ADMIN_KEY)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        missing = f.institution_id()
        late = f.settlement(missing, [f.line(1, [f.cn20()])])
        known = await f.register(stack.api, admin)
        broken = f.settlement(known, [f.line(1, [f.cn20()])])
        await produce(producer, own.topic_settlements, stream_event(late), late["settlement_id"])
        await produce(producer, own.topic_settlements,
                      stream_event({**broken, "lines": [{**broken["lines"][0], "quantity": "x"}]}),
                      broken["settlement_id"])
        await read_topic(own.kafka_bootstrap, own.topic_dlq, lambda records: len(records) >= 2)

        listed = await cli(capsys, env, "dlq", "list", "--json")
        letters = [orjson.loads(line) for line in listed.out.splitlines()]
        assert [letter["key"] for letter in letters] == [late["settlement_id"],
                                                          broken["settlement_id"]]
        assert "unknown institution" in letters[0]["error"]
        mended = {**letters[1], "raw": orjson.dumps(stream_event(broken)).decode()}
        (tmp_path / "mended.jsonl").write_text(orjson.dumps(mended).decode() + "\n")
        await f.register(stack.api, admin, institution=missing)

        dry = await cli(capsys, env, "dlq", "replay", "--dry-run")
        assert "would re-publish 2 events" in dry.out
        done = await cli(capsys, env, "dlq", "replay", "--mended", str(tmp_path / "mended.jsonl"))
        assert done.code == 0, done.err
        assert "re-published 2 events" in done.out
        assert "(1 mended)" in done.out
        for body in (late, broken):
            code = body["lines"][0]["trace_codes"][0]
            found = await eventually(partial(f.history, stack.api, admin, code),
                                     lambda h: h is not None)
            assert found is not None, f"{body['settlement_id']} was never recorded"
        again = await cli(capsys, env, "dlq", "replay")
        assert "re-published 0 events" in again.out
        assert (await cli(capsys, env, "dlq", "list")).out.strip().endswith(
            "0 dead letters not replayed yet (" + own.topic_dlq + ")")
        everything = await cli(capsys, env, "dlq", "list", "--all", "--json")
        assert len(everything.out.splitlines()) == 2


async def test_dlq_replay_refuses_a_mended_file_that_is_not_one(
    capsys: pytest.CaptureFixture[str], stack_env: Path, tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"dlq_partition": 0, "dlq_offset": 1, "raw": "{not json"}\n')
    ran = await cli(capsys, stack_env, "dlq", "replay", "--mended", str(bad))
    assert ran.code == 1
    assert "line 1: raw is not JSON" in ran.err


@pytest.fixture(scope="module")
async def producer(settings: Settings) -> Any:
    from aiokafka import AIOKafkaProducer

    kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await kafka.start()
    yield kafka
    await kafka.stop()

