"""msgspec's validation errors in words a client can act on: the field as a path
(`lines[0].quantity`) and what it must be (`must be an integer`), not JSON-path and type
syntax. Domain-free: any typed body decoded with msgspec reports through here."""

from __future__ import annotations

import re

import msgspec

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_KINDS = {
    "int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
    "array": "a list", "object": "an object", "null": "null",
}
_NOT_ACCEPTED = "{value} is not one of the accepted values"
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$"),
     "must be {want}, not {got}"),
    (re.compile(r"^Expected `(?:int|float)` >= (?P<n>\S+)$"), "must be at least {n}"),
    (re.compile(r"^Expected `(?:int|float)` <= (?P<n>\S+)$"), "must be at most {n}"),
    (re.compile(r"^Expected `str` of length >= (?P<n>\d+)$"),
     "must be at least {n} characters long"),
    (re.compile(r"^Expected `str` of length <= (?P<n>\d+)$"),
     "must be at most {n} characters long"),
    (re.compile(r"^Expected `array` of length >= (?P<n>\d+)$"), "needs at least {n} items"),
    (re.compile(r"^Expected `array` of length <= (?P<n>\d+)$"), "takes at most {n} items"),
    (re.compile(r"^Invalid enum value (?P<value>.+)$"), _NOT_ACCEPTED),
    (re.compile(r"^Invalid value (?P<value>.+)$"), _NOT_ACCEPTED),
]
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def describe(error: msgspec.ValidationError | msgspec.DecodeError) -> str:
    """One sentence: `lines[0].quantity: must be an integer, not a string`."""
    if isinstance(error, msgspec.DecodeError) and not isinstance(error, msgspec.ValidationError):
        return f"the body is not valid JSON ({error})"
    match = _AT.match(str(error))
    what, path = (match["what"], match["path"] or "") if match else (str(error), "")
    missing = _MISSING.match(what)
    if missing:
        return f"{_field(path, missing['field'])}: is required"
    return f"{_field(path, None) or 'body'}: {_sentence(what)}"


def _field(path: str, child: str | None) -> str:
    dotted = path.lstrip(".")
    if child is not None:
        dotted = f"{dotted}.{child}" if dotted else child
    return dotted


def _kind(value: str) -> str:
    """`str | null` -> `a string or null`; anything else unchanged."""
    return " or ".join(_KINDS.get(part, part) for part in value.split(" | "))


def _sentence(what: str) -> str:
    for pattern, template in _RULES:
        found = pattern.match(what)
        if found:
            words = {key: _kind(value) for key, value in found.groupdict().items()}
            return template.format(**words)
    return what[0].lower() + what[1:] if what else what
