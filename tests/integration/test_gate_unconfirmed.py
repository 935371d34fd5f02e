"""A settlement the gate decided but never confirmed sent (its process died, or lost Kafka,
between the claim and the acknowledgement) and the record does not hold: the next call for
it, once the entry's deadline has passed, sends the same decision again and replays its
answer (service/settlements/gate.py `_unconfirmed`). On topics of its own, with no consumer,
so that the record stays without it."""

from __future__ import annotations

import secrets

import orjson

from cli.devstack.servers import create_topics
from service.api.app import create_app
from service.settings import Settings
from service.settlements.recent import confirmed_key
from tests import factories as f
from tests.conftest import ADMIN_KEY
from tests.harness import redis_client
from tests.hostile.support import tolerant_client
from tests.waiting import eventually


async def test_an_unconfirmed_answer_is_sent_again_and_replayed(settings: Settings) -> None:
    run = secrets.token_hex(3)
    own = settings.model_copy(update={
        "topic_settlements": f"unc.{run}.settlements", "topic_flags": f"unc.{run}.flags",
        "topic_dlq": f"unc.{run}.dlq", "settlements_partitions": 1,
        "gate_publish_timeout_s": 0.5,  # the entry's deadline: 0.5 s + 2 s of margin
    })
    create_topics(own.kafka_bootstrap, own.topic_settlements, own.topic_flags, own.topic_dlq, 1)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    app = create_app(own)
    redis = redis_client(own)
    async with app.router.lifespan_context(app), tolerant_client(app) as api:
        try:
            institution = await f.register(api, admin)
            pos = await f.key_for(api, admin, "pos", institution)
            body = f.settlement(institution, [f.line(1, [f.cn20()])])
            first = await f.settle(api, pos, body)
            sid = body["settlement_id"]
            # as if the gate had died before confirming: the entry stays, its mark does not
            assert await eventually(lambda: redis.exists(confirmed_key(sid)), bool)
            await redis.delete(confirmed_key(sid))
            again = await api.post("/v1/settlements", json=body, headers=pos)
        finally:
            await redis.aclose()
    assert again.status_code == 200, again.text
    assert again.json() == {**first, "replayed": True}
    sent = await f.topic_records(own, own.topic_settlements, sid.encode())
    assert len(sent) == 2
    attempts = {orjson.loads(record.value)["attempt"] for record in sent}
    assert len(attempts) == 1, "the same decision, sent again"
