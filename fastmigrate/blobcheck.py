"""Does a stored blob load the way nova reads it? A pure, independent check (no nova import).

Mirrors ``Instance._flavor_from_db`` (nova 34): the three top-level keys must exist; ``old``/``new`` that are
null or ``{}`` mean none; each flavor is a ``Flavor`` primitive nova can load (versions 1.0 to 1.2). It is
stricter than nova on one point, as fastmigrate's own blobs are: every one of the ten properties and
``extra_specs`` must be there, since nova raises the first time it reads a missing one.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["blob_problems"]

_VERSIONS = frozenset({"1.0", "1.1", "1.2"})
# prop -> (accepted types, nullable), after nova 34's Flavor fields.
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((int,), False), "name": ((str,), True), "memory_mb": ((int,), False), "vcpus": ((int,), False),
    "root_gb": ((int,), False), "ephemeral_gb": ((int,), False), "flavorid": ((str,), False),
    "swap": ((int,), False), "rxtx_factor": ((float, int), True), "vcpu_weight": ((int,), True),
}


def blob_problems(text: str | None) -> list[str]:
    """What keeps this ``instance_extra.flavor`` text from loading in nova (empty: it loads)."""
    if text is None:
        return ["no flavor blob"]
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return [f"flavor blob is not JSON ({exc})"]
    if not isinstance(doc, dict):
        return ["flavor blob is not a JSON object"]
    missing = [k for k in ("cur", "old", "new") if k not in doc]
    if missing:
        return [f"flavor blob lacks {', '.join(missing)}"]
    problems = _flavor_problems("cur", doc["cur"])
    for slot in ("old", "new"):
        if doc[slot]:  # null and {} mean: no such flavor
            problems += _flavor_problems(slot, doc[slot])
    return problems


def _flavor_problems(slot: str, primitive: Any) -> list[str]:
    if not isinstance(primitive, dict) or primitive.get("nova_object.name") != "Flavor":
        return [f"{slot} is not a Flavor primitive"]
    problems = []
    if primitive.get("nova_object.namespace") != "nova":
        problems.append(f"{slot}: namespace is {primitive.get('nova_object.namespace')!r}, not 'nova'")
    if primitive.get("nova_object.version") not in _VERSIONS:
        problems.append(f"{slot}: version {primitive.get('nova_object.version')!r} is not one nova 34 loads")
    data = primitive.get("nova_object.data")
    if not isinstance(data, dict):
        return [*problems, f"{slot}: no nova_object.data"]
    for prop, (types, nullable) in _FIELDS.items():
        if prop not in data:
            problems.append(f"{slot}: {prop} is missing")
            continue
        value = data[prop]
        if value is None:
            if not nullable:
                problems.append(f"{slot}: {prop} is null")
        elif isinstance(value, bool) or not isinstance(value, types):
            problems.append(f"{slot}: {prop} is {type(value).__name__} {value!r}")
    specs = data.get("extra_specs")
    if not isinstance(specs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in specs.items()):
        problems.append(f"{slot}: extra_specs is not a dict of strings")
    return problems
