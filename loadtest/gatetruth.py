"""The gate benchmark's workload and its ground truth: what every answer must say.

A run is a planned sequence of calls (seeded): mostly fresh settlements, whose answer must be
`pay`; a few re-using a code an earlier call of the run was paid for, at another institution,
whose answer must be `reject` with DUPLICATE_PAYMENT naming that first payment; a few replays
of an earlier body, whose answer must be the first one with `replayed: true`. A re-use or a
replay is made at its send time from calls already answered and checked (none yet: a fresh
one goes instead), so what is right never depends on which of two concurrent calls won.

The verify run asks for codes paid in the gate's runs (status `paid`) and codes never sold
(`unpaid`). Checking stays cheap (one orjson parse, a few comparisons): it runs in the load
generator, whose CPU shares the machine with the measured processes."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

FRESH, REUSE, REPLAY = "fresh", "reuse", "replay"
DRUG_CODE = "XC09AAL012A001010100543"
CODES_PER_CALL = 3
_SHANGHAI = dt.timezone(dt.timedelta(hours=8))


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of re-uses and replays in a run's plan; the rest are fresh settlements."""

    reuse: float = 0.02
    replay: float = 0.01


def plan(count: int, mix: Mix, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [REUSE if (roll := rng.random()) < mix.reuse else
            REPLAY if roll < mix.reuse + mix.replay else FRESH for _ in range(count)]


def fresh_codes(series: int, index: int, count: int = CODES_PER_CALL) -> list[str]:
    """cn20 codes no other call of the stack's life carries: `series` (10-88) is unique per
    run, `index` per call of the run."""
    return [f"8{series:02d}{index:013d}{k:04d}" for k in range(count)]


def settled_now() -> str:
    """A POS settles now: a settlement dated long ago would send the gate to the record to
    ask whether it was decided before (its recent answer may have expired)."""
    return dt.datetime.now(_SHANGHAI).replace(microsecond=0).isoformat()


def settlement_body(settlement_id: str, institution_id: str, settled_at: str,
                    codes: Sequence[str]) -> bytes:
    """One whole-pack line, a code a pack."""
    return orjson.dumps({
        "settlement_id": settlement_id, "institution_id": institution_id,
        "settled_at": settled_at,
        "lines": [{"line_no": 1, "drug_code": DRUG_CODE, "quantity": len(codes),
                   "split": False, "trace_codes": list(codes)}],
    })


@dataclass(frozen=True, slots=True)
class Call:
    """One call as made at its send time: its body, its kind and a label for the reports,
    and the check of a 200 answer (None if right, else what is wrong), which also teaches
    the truth what later calls may rely on."""

    body: bytes
    kind: str
    label: str
    check: Callable[[bytes], str | None]


@dataclass(frozen=True, slots=True)
class FirstPaid:
    """A code as a fresh call was paid for it."""

    code: str
    settlement_id: str
    institution_id: str


@dataclass(frozen=True, slots=True)
class Expect:
    """What one call's answer must say. `first`: the re-used code's first payment;
    `prior`: the answer a replay must repeat."""

    kind: str
    settlement_id: str
    institution_id: str
    codes: tuple[str, ...]
    first: FirstPaid | None = None
    prior: bytes | None = None


def check_answer(expect: Expect, answer: bytes) -> str | None:
    """None if a 200 answer is what the truth says, else what is wrong, in words."""
    try:
        got = orjson.loads(answer)
        if expect.prior is not None:
            return _check_replay(expect.prior, got)
        return _check_common(expect, got) or (
            _check_reuse(expect.first, got) if expect.first is not None else _check_fresh(got))
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
        return f"answer not of the contract's shape ({type(exc).__name__}: {exc})"


def _check_common(expect: Expect, got: dict[str, Any]) -> str | None:
    if got["settlement_id"] != expect.settlement_id:
        return f"settlement_id {got['settlement_id']!r}, expected {expect.settlement_id!r}"
    if got["enforced"] is not True or got["replayed"] is not False:
        return f"enforced {got['enforced']}, replayed {got['replayed']}: expected true, false"
    if [line["line_no"] for line in got["lines"]] != [1]:
        return f"lines {[line['line_no'] for line in got['lines']]}, expected [1]"
    return None


def _check_fresh(got: dict[str, Any]) -> str | None:
    line = got["lines"][0]
    if got["decision"] != "pay" or line["decision"] != "pay" or line["reasons"]:
        return (f"decision {got['decision']} (line {line['decision']}, reasons "
                f"{line['reasons']}), expected pay without reasons")
    return f"flags {got['flags']}, expected none" if got["flags"] else None


def _check_reuse(first: FirstPaid, got: dict[str, Any]) -> str | None:
    line = got["lines"][0]
    if got["decision"] != "reject" or line["decision"] != "reject":
        return f"decision {got['decision']} (line {line['decision']}), expected reject"
    wanted = {"code": "DUPLICATE_PAYMENT", "severity": "error", "trace_code": first.code,
              "settlement_id": first.settlement_id, "institution_id": first.institution_id}
    found = [{"code": r["code"], "severity": r["severity"], "trace_code": r.get("trace_code"),
              **{k: (r.get("first_payment") or {}).get(k)
                 for k in ("settlement_id", "institution_id")}} for r in line["reasons"]]
    if found != [wanted]:
        return f"reasons {found}, expected [{wanted}]"
    return f"flags {got['flags']}, expected one" if len(got["flags"]) != 1 else None


def _check_replay(prior: bytes, got: dict[str, Any]) -> str | None:
    wanted = {**orjson.loads(prior), "replayed": True}
    return None if got == wanted else f"replay answered {got}, expected {wanted}"


@dataclass
class SettleTruth:
    """Builds each call of the plan (`kinds`) at its send time and learns from each right
    answer: which codes are paid (`paid_codes`; `reusable` for re-use, each once) and which
    answers were given (for replay)."""

    series: int
    institutions: Sequence[str]
    run: str
    kinds: Sequence[str]
    seed: int = 0
    settled_at: str = field(default_factory=settled_now)
    reusable: list[FirstPaid] = field(default_factory=list)
    paid_codes: list[str] = field(default_factory=list)
    answered: list[tuple[bytes, Expect, bytes]] = field(default_factory=list)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def call(self, index: int) -> Call:
        body, expect = self.request(index, self.kinds[index])
        return Call(body, expect.kind, expect.settlement_id, partial(self._check, body, expect))

    def _check(self, body: bytes, expect: Expect, answer: bytes) -> str | None:
        problem = check_answer(expect, answer)
        if problem is None:
            self.learn(body, expect, answer)
        return problem

    def request(self, index: int, kind: str) -> tuple[bytes, Expect]:
        if kind == REUSE and self.reusable:
            return self._reuse(index)
        if kind == REPLAY and self.answered:
            body, first, answer = self.answered[self.rng.randrange(len(self.answered))]
            return body, Expect(REPLAY, first.settlement_id, first.institution_id,
                                first.codes, prior=answer)
        return self._fresh(index)

    def _fresh(self, index: int) -> tuple[bytes, Expect]:
        sid = f"G-{self.run}-{index}"
        institution = self.institutions[index % len(self.institutions)]
        codes = tuple(fresh_codes(self.series, index))
        return (settlement_body(sid, institution, self.settled_at, codes),
                Expect(FRESH, sid, institution, codes))

    def _reuse(self, index: int) -> tuple[bytes, Expect]:
        """Two fresh packs and one paid for by an earlier call, at another institution."""
        pool = self.reusable
        pick = self.rng.randrange(len(pool))
        pool[pick], pool[-1] = pool[-1], pool[pick]
        first = pool.pop()  # each paid code re-used once: the truth stays simple
        sid = f"G-{self.run}-{index}"
        institution = self._other_than(first.institution_id)
        codes = (*fresh_codes(self.series, index, CODES_PER_CALL - 1), first.code)
        return (settlement_body(sid, institution, self.settled_at, codes),
                Expect(REUSE, sid, institution, codes, first=first))

    def _other_than(self, institution_id: str) -> str:
        others = [i for i in self.institutions if i != institution_id]
        return self.rng.choice(others) if others else institution_id

    def learn(self, body: bytes, expect: Expect, answer: bytes) -> None:
        """A checked answer (never a wrong one) feeds later re-uses and replays."""
        if expect.kind == REPLAY:
            return
        self.answered.append((body, expect, answer))
        if expect.kind == FRESH:
            self.reusable += [FirstPaid(code, expect.settlement_id, expect.institution_id)
                              for code in expect.codes]
            self.paid_codes += expect.codes


@dataclass(frozen=True, slots=True)
class VerifyExpect:
    codes: tuple[str, ...]
    statuses: tuple[str, ...]


@dataclass
class VerifyTruth:
    """Each call asks for CODES_PER_CALL codes, each paid (in the gate's runs) or never
    sold, at random."""

    series: int
    paid: Sequence[str]
    institution_id: str
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def call(self, index: int) -> Call:
        body, expect = self.request(index)
        return Call(body, "verify", " ".join(expect.codes), partial(check_verify, expect))

    def request(self, index: int) -> tuple[bytes, VerifyExpect]:
        fresh = fresh_codes(self.series, index)
        picks = [(self.rng.choice(self.paid), "paid") if self.paid and self.rng.random() < 0.5
                 else (fresh[k], "unpaid") for k in range(CODES_PER_CALL)]
        codes = tuple(code for code, _ in picks)
        body = orjson.dumps({"institution_id": self.institution_id, "trace_codes": codes})
        return body, VerifyExpect(codes, tuple(status for _, status in picks))


def check_verify(expect: VerifyExpect, answer: bytes) -> str | None:
    try:
        results = orjson.loads(answer)["results"]
        got = [(r["trace_code"], r["valid"], r["status"]) for r in results]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return f"answer not of the contract's shape ({type(exc).__name__}: {exc})"
    wanted = [(code, True, status) for code, status in zip(expect.codes, expect.statuses,
                                                           strict=True)]
    return None if got == wanted else f"results {got}, expected {wanted}"
