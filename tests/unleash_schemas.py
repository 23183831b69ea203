"""The JSON Schemas Unleash 8.2 validates client-metrics bodies with, as test fixtures.

Unleash ships them only as compiled modules in its npm package (no openapi.json), so they are
exported once with `npm pack` + Node and committed under tests/fixtures/unleash-8.2/; the tests
need neither the network nor Node. To export them again (after changing VERSION and INTEGRITY):

    .venv/bin/python -m tests.unleash_schemas            # writes tests/fixtures/unleash-8.2/
    .venv/bin/python -m tests.unleash_schemas --offline  # only from the local npm cache

Two checks. errors() is the strict one, for the bodies the proxy sends: the dialect the schemas
are written in, OpenAPI 3.0 Schema Objects (Unleash builds an `openapi: 3.0.3` document of them),
so `nullable` counts and sibling keywords of a `$ref` do not; `format: date-time` is RFC 3339 with
a zone; nothing is coerced. unleash_errors() models what Unleash itself accepts: its validator
coerces types (null becomes "" for a string field) and takes a date-time without a zone.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from openapi_schema_validator import OAS30Validator
from referencing import Registry
from referencing.jsonschema import DRAFT4

PACKAGE = "unleash-server"
VERSION = "8.2.0"
# `npm view unleash-server@8.2.0 dist.integrity`; the export refuses a tarball that differs.
INTEGRITY = "sha512-Fw7n3zsp1/B8Vjz7hvTFFzRmDZzxMqI9hbpGGMfU9wksAIu1ofKTx2HK6XBwd2DgEqy3me4xVGjknngyxRIdPA=="
FIXTURE_DIR = Path(__file__).parent / "fixtures" / "unleash-8.2"
EXPORT_SCRIPT = FIXTURE_DIR / "export.mjs"
SPEC_DIR = "package/dist/lib/openapi/spec/"

BASE_URI = f"urn:{PACKAGE}:{VERSION}:components"
SCHEMA_NAMES = (
    "clientMetricsSchema", "clientApplicationSchema", "bulkMetricsSchema", "bulkRegistrationSchema",
    "clientMetricsEnvSchema", "impactMetricsSchema", "dateSchema",
)


# --- validation ----------------------------------------------------------------------------------

@cache
def components(closed: bool = False) -> dict[str, Any]:
    """The exported components.json; `closed` adds `additionalProperties: false` wherever a schema
    lists `properties` and says nothing about others (our own rule for bodies the proxy sends:
    no field Unleash does not declare; Unleash itself allows undeclared fields)."""
    document = json.loads((FIXTURE_DIR / "components.json").read_text())
    if closed:
        for schema in document["components"]["schemas"].values():
            _close(schema)
    return document


def _close(schema: Any) -> None:
    if not isinstance(schema, dict):
        return
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    for sub in schema.get("properties", {}).values():
        _close(sub)
    for key in ("items", "additionalProperties", "not"):
        _close(schema.get(key))
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in schema.get(key, []):
            _close(sub)


def format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    # jsonschema checks date-time only with rfc3339-validator installed (openapi-schema-validator
    # depends on it); without it the check would pass everything, so fail loudly instead.
    assert "date-time" in checker.checkers, "install rfc3339-validator to check date-time formats"
    return checker


# --- what Unleash itself accepts ------------------------------------------------------------------
# Unleash 8.2 checks request bodies with ajv 8 and `coerceTypes: true` (through @wesleytodd/openapi
# 1.1.0): a value of the wrong type passes when it can be converted, e.g. null -> "" for a string.
# In a oneOf that makes a value match more than one branch, and ajv then refuses the whole body: an
# impact-metric label {"pod": 2} or {"pod": "2"} is both a string and a number. The checks below
# model that (see UNLEASH_8_2_OBSERVED in tests/test_unleash8_schemas.py for what a real 8.2.0
# answered). They say what Unleash accepts; errors() stays the stricter check for our own bodies.

_JS_SPACE = " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_JS_DECIMAL = re.compile(r"[+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_JS_RADIX = {"0x": 16, "0o": 8, "0b": 2}


def js_number(text: str) -> float | None:
    """JavaScript's Number(text) (None for NaN): what ajv coerces a string to."""
    s = text.strip(_JS_SPACE)
    if not s:
        return 0.0
    radix = _JS_RADIX.get(s[:2].lower())
    if radix:
        try:
            return float(int(s[2:], radix)) if s[2:].isalnum() else None
        except ValueError:
            return None
    return float(s.replace("Infinity", "inf")) if _JS_DECIMAL.fullmatch(s) else None


def _coerce(instance: Any, type_: str) -> tuple[bool, Any]:
    """(True, value) when ajv's coerceTypes turns `instance` into `type_`, else (False, None)."""
    if type_ in ("number", "integer"):
        if instance is None or isinstance(instance, bool):
            number = float(instance or 0)
        elif isinstance(instance, str) and instance:
            number = js_number(instance)
        else:
            return False, None
        if number is None or (type_ == "integer" and math.isfinite(number) and number % 1):
            return False, None
        return True, number
    if type_ == "string" and (instance is None or isinstance(instance, (bool, int, float))):
        if instance is None:
            return True, ""
        return True, json.dumps(instance) if isinstance(instance, bool) else format(instance, "g")
    if type_ == "boolean" and (instance is None or instance in ("true", "false") or instance in (0, 1)):
        return True, instance in ("true", 1) and instance is not False
    return False, None


def _ajv_type(validator, types, instance, schema):
    if instance is None and schema.get("nullable"):
        return
    types = [types] if isinstance(types, str) else types
    if not any(validator.is_type(instance, t) or _coerce(instance, t)[0] for t in types):
        yield jsonschema.ValidationError(f"{instance!r} is not of type {', '.join(map(repr, types))}, "
                                         "nor can ajv coerce it")


def _ajv_one_of(validator, branches, instance, schema):
    found = []  # (branch index, its errors) with the value as ajv would coerce it for that branch
    for i, branch in enumerate(branches):
        value = instance
        type_ = branch.get("type")
        if isinstance(type_, str) and not validator.is_type(instance, type_):
            coerced, converted = _coerce(instance, type_)
            value = converted if coerced else instance
        found.append((i, list(validator.descend(value, branch))))
    matched = [i for i, errors in found if not errors]
    if len(matched) > 1:
        yield jsonschema.ValidationError(f"{instance!r} matches oneOf branches {matched} once ajv coerces "
                                         "its type, and ajv then refuses the body")
    elif not matched:  # the errors of the branch that came closest
        yield from min((errors for _, errors in found), key=len)


def _unleash_date_time(instance: object) -> bool:
    # Observed: Unleash 8.2 also takes a date-time without a zone ("2026-12-04T10:00:00").
    if not isinstance(instance, str):
        return True
    check = format_checker().checkers["date-time"][0]
    return any(check(candidate) for candidate in (instance, instance + "Z"))


_UnleashValidator = jsonschema.validators.extend(OAS30Validator, {"type": _ajv_type, "oneOf": _ajv_one_of})


@cache
def validator(name: str, closed: bool = False, as_unleash: bool = False) -> OAS30Validator:
    """A validator for one of SCHEMA_NAMES, its $refs resolved within components.json; with
    `as_unleash`, one that models Unleash's own (coercing) check instead of the strict one."""
    if name not in SCHEMA_NAMES:
        raise KeyError(name)
    registry = Registry().with_resource(BASE_URI, DRAFT4.create_resource(components(closed)))
    checker = format_checker()
    if as_unleash:
        checker.checks("date-time")(_unleash_date_time)
    cls = _UnleashValidator if as_unleash else OAS30Validator
    return cls({"$ref": f"{BASE_URI}#/components/schemas/{name}"}, registry=registry, format_checker=checker)


def _leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    # A oneOf failure says little on its own; its branches' errors say which field is wrong.
    return [leaf for sub in error.context or [] for leaf in _leaves(sub)] or [error]


def _path(error: jsonschema.ValidationError) -> str:
    return "".join(f"[{p!r}]" for p in error.absolute_path) or "(body)"


def errors(name: str, instance: Any, closed: bool = False) -> list[str]:
    """Every way `instance` fails the schema, as sorted "path: message" lines ([] when valid)."""
    return sorted({f"{_path(leaf)}: {leaf.message}"
                   for error in validator(name, closed).iter_errors(instance) for leaf in _leaves(error)})


def unleash_errors(name: str, instance: Any) -> list[str]:
    """Why Unleash 8.2 would answer 400 to `instance` ([] when it would accept it): the schema
    checked as Unleash checks it, with ajv's type coercion."""
    return sorted({f"{_path(leaf)}: {leaf.message}"
                   for error in validator(name, as_unleash=True).iter_errors(instance) for leaf in _leaves(error)})


def error_paths(name: str, instance: Any) -> set[str]:
    """Where `instance` fails the schema: the paths of errors(), without the messages."""
    return {_path(leaf) for error in validator(name).iter_errors(instance) for leaf in _leaves(error)}


def _is_undeclared(error: jsonschema.ValidationError) -> bool:
    return error.validator == "additionalProperties" and error.validator_value is False


def _undeclared_leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The leaves of the oneOf branch the instance matches but for undeclared fields (a counter
    sample with an extra field must not be reported against the histogram branch too)."""
    if not error.context:
        return [error]
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).extend(_undeclared_leaves(sub))
    return min(branches.values(), key=lambda leaves: sum(not _is_undeclared(leaf) for leaf in leaves))


def undeclared(name: str, instance: Any) -> set[str]:
    """The fields of `instance` that the schema does not declare, as paths like `['bucket']['extra']`.
    Unleash accepts and ignores them: this says what a body carries beyond the schema."""
    found = set()
    for error in validator(name, closed=True).iter_errors(instance):
        for leaf in filter(_is_undeclared, _undeclared_leaves(error)):
            where = _path(leaf) if leaf.absolute_path else ""
            found.update(f"{where}[{key!r}]" for key in leaf.instance if key not in leaf.schema.get("properties", {}))
    return found


# --- export --------------------------------------------------------------------------------------

class ExportUnavailable(RuntimeError):
    """npm, node or the package (offline: not in the npm cache) is not available here."""


def integrity_of(tarball: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()


def export(out_dir: Path, offline: bool = False) -> None:
    """`npm pack` the pinned package into a temp folder, check its integrity, unpack the spec
    modules and let export.mjs write the JSON files into out_dir."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        raise ExportUnavailable("npm and node are needed to export the schemas")
    with tempfile.TemporaryDirectory(prefix="unleash-schemas-") as tmp:
        work = Path(tmp)
        command = [npm, "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", str(work)]
        if offline:
            command.append("--offline")
        packed = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300)
        if packed.returncode != 0:
            raise ExportUnavailable(f"npm pack failed: {packed.stderr.strip()[-800:]}")
        tarball = work / json.loads(packed.stdout)[0]["filename"]
        found = integrity_of(tarball)
        if found != INTEGRITY:
            raise RuntimeError(f"{tarball.name} has integrity {found}, expected {INTEGRITY}")
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and (m.name == "package/package.json"
                                          or (m.name.startswith(SPEC_DIR) and m.name.endswith(".js")))]
            tar.extractall(work / "unpacked", members=members, filter="data")
        out_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([node, str(EXPORT_SCRIPT), str(work / "unpacked" / "package"), str(out_dir)],
                       check=True, timeout=120)


def exported_files(folder: Path) -> dict[str, bytes]:
    """What export() writes: components.json and schemas/*.json, by path relative to folder."""
    paths = [folder / "components.json", *sorted((folder / "schemas").glob("*.json"))]
    return {str(p.relative_to(folder)): p.read_bytes() for p in paths if p.exists()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.unleash_schemas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=FIXTURE_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--offline", action="store_true", help="take the package from the npm cache only")
    args = parser.parse_args(argv)
    try:
        export(args.out, offline=args.offline)
    except ExportUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
