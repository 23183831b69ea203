"""RFC 6902 JSON Patch (all six operations) applied with the `jsonpatch` library, all or nothing.

A patch may change only the editable fields of the resource (those of its POST body but the key):
an operation that would write a `_`-prefixed field, the key or an unknown field is a 400 naming its
path. `test` (and the source of `copy`) may read any field of the representation; a failing test
is a 409. The patched fields are then validated as a POST body would be."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import jsonpatch
import jsonpointer
import msgspec

from proxy.launchdarkly.errors import OPTIMISTIC_LOCKING, error, invalid
from proxy.launchdarkly.schemas.common import PatchOperation

T = TypeVar("T")
_WRITES = {"add": ("path",), "remove": ("path",), "replace": ("path",), "move": ("path", "from_"),
           "copy": ("path",), "test": ()}


def _top(pointer: str) -> str:
    """The top-level field a JSON Pointer goes into ('' for the whole document)."""
    if pointer == "":
        return ""
    if not pointer.startswith("/"):
        raise invalid(f"path {pointer[:100]!r} is not a JSON Pointer (it must start with `/`)")
    return pointer[1:].split("/", 1)[0].replace("~1", "/").replace("~0", "~")


def check_paths(ops: list[PatchOperation], editable: Iterable[str]) -> None:
    editable = set(editable)
    for op in ops:
        for attribute in _WRITES[op.op]:
            pointer = getattr(op, attribute)
            if pointer is msgspec.UNSET:
                raise invalid(f"`{op.op}` needs `from`")
            field = _top(pointer)
            if field == "":
                raise invalid(f"path {pointer!r} of `{op.op}` would replace the whole resource")
            if field.startswith("_"):
                raise invalid(f"path {pointer[:100]!r} is read-only: fields starting with `_` are not editable")
            if field not in editable:
                raise invalid(f"path {pointer[:100]!r} is not an editable field ({field[:60]!r} is unknown or read-only)")
        if op.op in ("copy", "test") and isinstance(op.from_, str):
            _top(op.from_)
        if op.op == "test":
            _top(op.path)


def _as_rfc(op: PatchOperation) -> dict[str, Any]:
    out: dict[str, Any] = {"op": op.op, "path": op.path}
    if op.value is not msgspec.UNSET:
        out["value"] = op.value
    if op.from_ is not msgspec.UNSET:
        out["from"] = op.from_
    return out


def apply(document: dict[str, Any], ops: list[PatchOperation], editable: Iterable[str]) -> dict[str, Any]:
    """`document` after `ops`, or an ApiError (nothing applied)."""
    check_paths(ops, editable)
    try:
        return jsonpatch.apply_patch(document, [_as_rfc(op) for op in ops], in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise error(409, OPTIMISTIC_LOCKING, f"a `test` operation failed: {exc}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise invalid(f"the patch cannot be applied: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError) as exc:  # e.g. an index into a string
        raise invalid(f"the patch cannot be applied: {exc!r}") from None


def as_body(patched: dict[str, Any], fields: Iterable[str], schema: type[T]) -> T:
    """The patched document's `fields` read as a POST body (`schema`); a field patched to null is
    cleared. A wrong value is a 400 naming its path."""
    body = {name: patched[name] for name in fields if patched.get(name) is not None}
    try:
        return msgspec.convert(body, schema)
    except msgspec.ValidationError as exc:
        message = str(exc)
        where = message.rpartition(" - at `$")[2].rstrip("`")
        path = "/" + where.lstrip(".").replace(".", "/").replace("[", "/").replace("]", "") if where else ""
        raise invalid(f"after the patch, {message.partition(' - at ')[0]}" + (f" at {path}" if path else "")) from None

