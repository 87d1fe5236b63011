"""Rows of ``instance_system_metadata`` in, one ``instance_extra.flavor`` blob out.

Pure: no asyncio, no SQLAlchemy, no I/O. One table (``PROPS``) drives which keys are flavor keys, how each
value is coerced and what the blob holds, so reading, validation and serialization cannot drift apart.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

__all__ = [
    "BLOB_MAX_BYTES",
    "BUSY_VM_STATES",
    "KEY_PREFIXES",
    "Broken",
    "Candidate",
    "Migration",
    "PROPS",
    "SLOTS",
    "SysmetaRow",
    "build_blob",
    "dumps_ascii",
    "fingerprint",
    "is_busy",
    "parse_key",
    "transform",
]

# instance_extra.flavor is a MySQL TEXT column.
BLOB_MAX_BYTES = 65_535
BUSY_VM_STATES = frozenset({"rescued", "resized"})
FLAVOR_VERSION = "1.1"  # Kilo's Flavor; nova 34 loads 1.0 to 1.2.


class CoercionError(ValueError):
    pass


def _int(value: str | None) -> int:
    if value is None:
        raise CoercionError("is NULL")
    try:
        return int(value)  # nova's IntegerField.coerce is int(value): '1.0' is refused there too
    except ValueError:
        raise CoercionError(f"{value!r} is not an integer") from None


# A nullable number whose None was written as SQL NULL, or by some tools as '' or 'None'.
_NULLS = (None, "", "None")


def _null_int(value: str | None) -> int | None:
    return None if value in _NULLS else _int(value)


def _float(value: str | None) -> float | None:
    if value in _NULLS:
        return None  # rxtx_factor is nullable in nova's Flavor
    assert value is not None
    try:
        number = float(value)
    except ValueError:
        raise CoercionError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise CoercionError(f"{value!r} is not a finite number")
    return number


def _str(value: str | None) -> str:
    if value is None:
        raise CoercionError("is NULL")
    return value


def _null_str(value: str | None) -> str | None:
    return value


# The ten flavor properties nova kept in system_metadata, in nova's order, with nova 34's nullability.
PROPS: dict[str, Callable[[str | None], Any]] = {
    "id": _int,
    "name": _null_str,
    "memory_mb": _int,
    "vcpus": _int,
    "root_gb": _int,
    "ephemeral_gb": _int,
    "flavorid": _str,
    "swap": _int,
    "rxtx_factor": _float,
    "vcpu_weight": _null_int,
}
CHANGES = (*PROPS, "extra_specs")

# Blob slot -> sysmeta key prefix. 'old_vm_state' or 'image_min_ram' never match: the whole
# '<prefix>instance_type_' must.
SLOTS: dict[str, str] = {"cur": "", "old": "old_", "new": "new_"}
_EXTRA = "extra_"

# key -> (slot, prop) for the thirty prop keys; stashed extra specs are matched by prefix.
_PROP_KEYS: dict[str, tuple[str, str]] = {
    f"{prefix}instance_type_{prop}": (slot, prop) for slot, prefix in SLOTS.items() for prop in PROPS
}
_EXTRA_PREFIXES: tuple[tuple[str, str], ...] = tuple(
    (f"{prefix}instance_type_{_EXTRA}", slot) for slot, prefix in SLOTS.items()
)
# What the reader asks the database for (SQL LIKE patterns, before escaping '_').
KEY_PREFIXES: tuple[str, ...] = tuple(f"{prefix}instance_type_" for prefix in SLOTS.values())


def parse_key(key: str) -> tuple[str, str, bool] | None:
    """``(slot, name, is_extra_spec)`` for a flavor key, ``None`` for any other key."""
    hit = _PROP_KEYS.get(key)
    if hit is not None:
        return hit[0], hit[1], False
    for prefix, slot in _EXTRA_PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return slot, key[len(prefix) :], True
    return None


def is_busy(task_state: str | None, vm_state: str | None) -> bool:
    """An instance in the middle of an operation: left alone unless --force (as upstream did)."""
    return task_state is not None or vm_state in BUSY_VM_STATES


class SysmetaRow(NamedTuple):
    id: int
    key: str
    value: str | None
    deleted: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """An instance without a blob, with every flavor row the reader saw for it."""

    uuid: str
    instance_deleted: bool
    extra_id: int | None  # the instance_extra row to update; None: insert one
    rows: tuple[SysmetaRow, ...]
    # flavorid -> that flavor's extra specs in nova's flavor tables (merged in; stashed keys win)
    table_specs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # an instance without flavor rows: its flavor from instance_types by instance_type_id (props as
    # system_metadata would hold them, and its extra specs), to rebuild the current flavor from
    legacy: tuple[Mapping[str, str | None], Mapping[str, str]] | None = None


@dataclass(frozen=True, slots=True)
class Migration:
    uuid: str
    instance_deleted: bool
    extra_id: int | None
    blob: str
    row_ids: tuple[int, ...]  # exactly the sysmeta rows the blob replaces
    live_row_ids: tuple[int, ...]  # of those, the ones with deleted = 0 (soft delete touches only these)
    fingerprint: str  # of all flavor rows read for the instance, see fingerprint()
    left_behind: tuple[str, ...] = ()  # incomplete old/new flavors, not migrated and not deleted
    rebuilt: bool = False  # no flavor rows: the current flavor came from instance_types


@dataclass(frozen=True, slots=True)
class Broken:
    uuid: str
    reason: str


_SEP_FIELD = "\x1f"
_SEP_ROW = "\x1e"
_NULL = "\x00"


def fingerprint(rows: Iterable[SysmetaRow]) -> str:
    """MD5 over the rows in id order; the writer's locking re-read computes the same in SQL.

    Any insert, update or delete of a flavor row of the instance changes it. Keep in step with
    ``reader._MYSQL_FINGERPRINT``.
    """
    canonical = _SEP_ROW.join(
        f"{r.id}{_SEP_FIELD}{r.key}{_SEP_FIELD}{_NULL if r.value is None else r.value}{_SEP_FIELD}{r.deleted}"
        for r in sorted(rows)
    )
    return hashlib.md5(canonical.encode("utf-8"), usedforsecurity=False).hexdigest()


Parsed = tuple[SysmetaRow, tuple[str, str, bool]]  # a flavor row and what parse_key made of its key


def _select_rows(rows: Sequence[SysmetaRow], instance_deleted: bool) -> tuple[list[Parsed], str | None]:
    """The rows that describe the flavor now, each parsed once: one per key, or why that is ambiguous.

    A live instance's soft-deleted rows are history. A soft-deleted instance (--include-deleted) had its
    rows soft-deleted with it: its live rows win when it has any, else the newest soft-deleted row per key.
    """
    parsed = [(r, p) for r in rows if (p := parse_key(r.key)) is not None]  # other keys are not ours to judge
    live = [(r, p) for r, p in parsed if r.deleted == 0]
    if instance_deleted and not live:
        newest: dict[str, Parsed] = {}
        for r, p in sorted(parsed, key=lambda rp: rp[0].id):
            newest[r.key] = (r, p)
        return list(newest.values()), None
    seen: dict[str, int] = {}
    for r, _ in live:
        if r.key in seen:
            return [], f"two live system_metadata rows for key {r.key!r} (ids {seen[r.key]} and {r.id})"
        seen[r.key] = r.id
    return live, None


def _primitive(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "nova_object.name": "Flavor",
        "nova_object.namespace": "nova",
        "nova_object.version": FLAVOR_VERSION,
        "nova_object.data": data,
        "nova_object.changes": list(CHANGES),
    }


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def dumps_ascii(obj: Any) -> str:
    """orjson, with non-ASCII escaped as nova's json.dumps does: safe for a 3-byte utf8 column."""
    text = orjson.dumps(obj).decode()
    return text if text.isascii() else _NON_ASCII.sub(_escape, text)


def build_blob(flavors: dict[str, dict[str, Any] | None]) -> str:
    """The instance_extra.flavor text for slot -> flavor data (``None``: no such flavor)."""
    return dumps_ascii({slot: None if data is None else _primitive(data) for slot, data in flavors.items()})


def transform(candidate: Candidate) -> Migration | Broken:
    uuid = candidate.uuid
    rows, ambiguity = _select_rows(candidate.rows, candidate.instance_deleted)
    if ambiguity:
        return Broken(uuid, ambiguity + "; delete or soft-delete the stale row, then rerun")

    values: dict[str, dict[str, str | None]] = {slot: {} for slot in SLOTS}
    specs: dict[str, dict[str, str | None]] = {slot: {} for slot in SLOTS}
    row_ids: dict[str, list[SysmetaRow]] = {slot: [] for slot in SLOTS}
    for r, (slot, name, is_spec) in rows:
        (specs if is_spec else values)[slot][name] = r.value
        row_ids[slot].append(r)

    flavors: dict[str, dict[str, Any] | None] = {}
    used: list[SysmetaRow] = []
    left_behind: list[str] = []
    rebuilt = not any(values.values()) and not any(specs.values()) and candidate.legacy is not None
    if rebuilt:
        assert candidate.legacy is not None
        values["cur"] = dict(candidate.legacy[0])
    for slot, prefix in SLOTS.items():
        present = values[slot]
        if not present and not specs[slot]:
            if slot == "cur":
                return Broken(uuid, "no instance_type_* rows in system_metadata, no flavor blob, and no "
                              "instance_types row for its instance_type_id; the flavor must be restored by hand "
                              "(instance_extra.flavor or the sysmeta rows)")
            flavors[slot] = None
            continue
        missing = [p for p in PROPS if p not in present]
        if missing:
            if slot == "cur":
                keys = ", ".join(f"instance_type_{p}" for p in missing)
                return Broken(uuid, f"current flavor is incomplete: missing {keys}; restore the rows, then rerun")
            # Upstream treated an incomplete old/new flavor as absent. Its rows stay where they are: they
            # are not replaced by the blob, so they are not ours to delete.
            flavors[slot] = None
            left_behind.append(f"incomplete {prefix}instance_type_* flavor left in system_metadata")
            continue
        data: dict[str, Any] = {}
        for prop, coerce in PROPS.items():
            try:
                data[prop] = coerce(present[prop])
            except CoercionError as exc:
                return Broken(uuid, f"{prefix}instance_type_{prop} {exc}; correct the row, then rerun")
        # Kilo merged the flavor's own extra specs in, the stashed ones winning.
        # A rebuilt flavor has its own instance_types row's.
        extra: dict[str, str] = dict(candidate.legacy[1] if rebuilt and candidate.legacy
                                     else candidate.table_specs.get(str(present["flavorid"]), {}))
        for spec, value in specs[slot].items():
            if value is None:
                return Broken(uuid, f"{prefix}instance_type_extra_{spec} is NULL; correct the row, then rerun")
            extra[spec] = value
        data["extra_specs"] = extra
        flavors[slot] = data
        used.extend(row_ids[slot])

    try:
        blob = build_blob(flavors)
    except orjson.JSONEncodeError as exc:
        return Broken(uuid, f"flavor cannot be serialized ({exc}); correct the rows, then rerun")
    if len(blob) > BLOB_MAX_BYTES:  # ASCII: characters are bytes
        return Broken(uuid, f"flavor blob is {len(blob)} bytes, over the {BLOB_MAX_BYTES}-byte TEXT column")
    used.sort()
    return Migration(
        uuid=uuid,
        instance_deleted=candidate.instance_deleted,
        extra_id=candidate.extra_id,
        blob=blob,
        row_ids=tuple(r.id for r in used),
        live_row_ids=tuple(r.id for r in used if r.deleted == 0),
        fingerprint=fingerprint(candidate.rows),
        left_behind=tuple(left_behind),
        rebuilt=rebuilt,
    )
