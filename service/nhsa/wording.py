"""`msgRslt` in words: what a vendor's cashier reads. Chinese, each finding followed by the
contract's English reason code in brackets (what the vendor's support and our logs search for),
and for a code paid before, which institution paid it first and when, in local time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from service.kit.errors import AppError
from service.nhsa.schemas import Sale
from service.nhsa.vendor import local_text

Answer = dict[str, Any]
REASON_WORDS = {
    "MISSING_TRACE_CODE": "缺少追溯码",
    "INVALID_TRACE_CODE": "追溯码无效",
    "QUANTITY_MISMATCH": "追溯码数量与销售数量不符",
    "DUPLICATE_IN_SETTLEMENT": "同一单据内追溯码重复",
    "DUPLICATE_PAYMENT": "追溯码已结算（重复结算）",
    "SPLIT_OVERUSE": "拆零销售超出包装剩余数量",
    "SPLIT_CROSS_INSTITUTION": "已拆零的包装在其他机构销售",
    "EXEMPT": "免追溯码",
}
REPLAYED = "重复报文，返回首次结果："


def first_payers(answers: Sequence[Answer | AppError]) -> set[str]:
    """The institutions named as first payers, whose names the answer gives."""
    return {reason["first_payment"]["institution_id"]
            for answer in answers if not isinstance(answer, AppError)
            for line in answer["lines"] for reason in line["reasons"]
            if reason.get("first_payment")}


def sale_result(
    outcomes: Sequence[tuple[Sale, Answer | AppError]], names: Mapping[str, str]
) -> dict[str, str]:
    refused, warned, not_taken = [], [], []
    for sale, answer in outcomes:
        if isinstance(answer, AppError):
            not_taken.append(f"{sale.settlement_id}：{answer.message} [{answer.code}]")
            continue
        lines = {line["line_no"]: line for line in sale.body["lines"]}
        for verdict in answer["lines"]:
            line = lines[verdict["line_no"]]
            texts = [reason_text(r, line, names) for r in verdict["reasons"]
                     if r["severity"] != "info"]
            place = f"{sale.label(verdict['line_no'])}：{'；'.join(texts)}"
            if verdict["decision"] == "reject":
                refused.append(place)
            elif texts:
                warned.append(place)
    return _result(outcomes, refused, warned, not_taken)


def _result(
    outcomes: Sequence[tuple[Sale, Answer | AppError]], refused: list[str], warned: list[str],
    not_taken: list[str],
) -> dict[str, str]:
    parts = []
    if refused:
        parts.append(f"拒付 {len(refused)} 行：" + " | ".join(refused))
    if not_taken:
        parts.append(f"未受理 {len(not_taken)} 张单据：" + " | ".join(not_taken))
    if warned:
        parts.append("已支付，提示：" + " | ".join(warned))
    ok = not refused and not not_taken
    if ok:
        count = f"（{len(outcomes)} 张单据）" if len(outcomes) > 1 else ""
        parts.insert(0, f"结算成功{count}")
    replayed = all(not isinstance(a, AppError) and a["replayed"] for _, a in outcomes)
    return {"retRslt": "1" if ok else "0",
            "msgRslt": (REPLAYED if replayed else "") + "；".join(parts)}


def reason_text(reason: Answer, line: Answer, names: Mapping[str, str]) -> str:
    code = reason["code"]
    text = f"{REASON_WORDS.get(code, code)} [{code}]"
    if reason.get("trace_code"):
        text += f" {reason['trace_code']}"
    detail = _detail(code, reason.get("message"), line)
    if detail:
        text += f"（{detail}）"
    first = reason.get("first_payment")
    if first:
        text += "，" + first_payment_text(first, names)
    return text


def _detail(code: str, message: str | None, line: Answer) -> str | None:
    if code == "QUANTITY_MISMATCH":
        if line["split"] and line.get("pack_size") is None:
            return (f"药品目录中没有 {line['drug_code']} 的拆零包装数量，拆零销售无法核对；"
                    "请维护药品目录后以新的批次号重新上传")
        if line["split"]:
            return "拆零销售须且仅须一个追溯码（所拆的那一盒）"
        return f"{len(line['trace_codes'])} 个追溯码，销售 {line['quantity']} 盒"
    if code == "SPLIT_OVERUSE" and message:
        return f"该盒剩余 {message.split()[0]} 个单位"
    return message


def first_payment_text(first: Answer, names: Mapping[str, str]) -> str:
    institution = first["institution_id"]
    name = names.get(institution)
    who = f"{institution}（{name}）" if name else institution
    paid_at = local_text(dt.datetime.fromisoformat(first["paid_at"]))
    return f"首次结算：{who} 于 {paid_at}（北京时间）结算，结算号 {first['settlement_id']}"


def return_refused(problems: Sequence[str]) -> dict[str, str]:
    return {"retRslt": "0", "msgRslt": "退货未受理：" + "；".join(problems)}


def return_result(answer: Answer) -> dict[str, str]:
    released = answer["released"]
    if released:
        text = f"退货成功，释放 {len(released)} 个追溯码"
    else:
        text = "退货已记录；原销售的这些行未支付或已退货，没有追溯码需要释放"
    return {"retRslt": "1", "msgRslt": (REPLAYED if answer["replayed"] else "") + text}
