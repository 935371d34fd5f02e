"""`tracegate keys create|list|revoke`: API keys, through the API (admin key)."""

from __future__ import annotations

import argparse
from typing import Any

from cli.operator import environment, parsing, render
from cli.operator.api import ApiClient
from service.auth.schemas import Role


def create(args: argparse.Namespace) -> int:
    body = {"role": args.role, "institution_id": args.institution}
    with ApiClient(environment.api_access(args)) as api:
        minted = api.call("POST", "/v1/api-keys", json=body)
    if args.json:
        render.json_document(minted)
        return 0
    _show([minted])
    render.out(f"key: {minted['key']}")
    render.out("(shown this once: the service keeps only its keyed digest)")
    return 0


def list_all(args: argparse.Namespace) -> int:
    params = {"limit": 1000, "include_revoked": args.include_revoked}
    with ApiClient(environment.api_access(args)) as api:
        items = list(api.pages("/v1/api-keys", params))
    if args.json:
        render.json_lines(items)
    else:
        _show(items)
    return 0


def revoke(args: argparse.Namespace) -> int:
    with ApiClient(environment.api_access(args)) as api:
        revoked = api.call("DELETE", f"/v1/api-keys/{args.key_id}")
    render.out(f"key {revoked['key_id']} revoked at {render.local_time(revoked['revoked_at'])} "
               "(Asia/Shanghai); every API process refuses it within 10 s")
    return 0


def _show(items: list[dict[str, Any]]) -> None:
    render.table(
        ([k["key_id"], k["role"], k.get("institution_id") or "",
          render.local_time(k.get("created_at")), render.local_time(k.get("revoked_at"))]
         for k in items),
        ["key id", "role", "institution", "created", "revoked"])


def register(sub: parsing.SubParsers) -> None:
    actions = parsing.group(sub, "keys", "API keys (admin)")
    make = parsing.command(actions, "create", "mint a key; it is shown once",
                           environment.API_VARIABLES, create)
    make.add_argument("--role", required=True, choices=[role.value for role in Role])
    make.add_argument("--institution", default=None, metavar="INSTITUTION_ID",
                      help="the one institution a pos key acts for (pos keys only)")
    make.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    listed = parsing.command(actions, "list", "every key: id, role, institution, times "
                             "(never the key)", environment.API_VARIABLES, list_all)
    listed.add_argument("--include-revoked", action="store_true", help="revoked keys too")
    listed.add_argument("--json", action="store_true", help="one JSON object a line")
    gone = parsing.command(actions, "revoke", "revoke a key by its id",
                           environment.API_VARIABLES, revoke)
    gone.add_argument("key_id", type=int, metavar="KEY_ID")
