"""The pure core: rows in, blob out. No database."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastmigrate.blobcheck import blob_problems
from fastmigrate.fleet import FLAVORS, flavor_rows
from fastmigrate.transform import (BLOB_MAX_BYTES, Broken, Candidate, Migration, SysmetaRow, dumps_ascii,
                                   fingerprint, is_busy, parse_key, transform)

pytestmark = pytest.mark.pure


def rows_of(pairs: list[tuple[str, str | None]], start: int = 1, deleted: bool = False) -> tuple[SysmetaRow, ...]:
    return tuple(SysmetaRow(start + i, k, v, start + i if deleted else 0) for i, (k, v) in enumerate(pairs))


def flavor(prefix: str = "", index: int = 0, specs: dict[str, str] | None = None) -> list[tuple[str, str | None]]:
    return flavor_rows(prefix, FLAVORS[index], specs or {}, random.Random(0))


def migrate(pairs: list[tuple[str, str | None]], **kw: Any) -> Migration:
    result = transform(Candidate("u-1", kw.pop("instance_deleted", False), kw.pop("extra_id", 7), rows_of(pairs)))
    assert isinstance(result, Migration), result
    return result


def refuse(pairs: list[tuple[str, str | None]]) -> str:
    result = transform(Candidate("u-1", False, 7, rows_of(pairs)))
    assert isinstance(result, Broken), result
    assert result.uuid == "u-1"
    return result.reason


def test_blob_is_the_versioned_primitive_nova_reads() -> None:
    m = migrate(flavor(specs={"hw:numa_cpus.0": "0,1"}) + [("image_min_ram", "0"), ("old_vm_state", "active")])
    blob = json.loads(m.blob)
    assert set(blob) == {"cur", "old", "new"}
    assert blob["old"] is None and blob["new"] is None
    cur = blob["cur"]
    assert cur["nova_object.name"] == "Flavor"
    assert cur["nova_object.namespace"] == "nova"
    assert cur["nova_object.version"] == "1.1"
    assert cur["nova_object.data"] == {
        "id": 1, "name": "m1.tiny", "memory_mb": 512, "vcpus": 1, "root_gb": 1, "ephemeral_gb": 0,
        "flavorid": "1", "swap": 0, "rxtx_factor": 1.0, "vcpu_weight": None,
        "extra_specs": {"hw:numa_cpus.0": "0,1"}}
    assert sorted(cur["nova_object.changes"]) == sorted(cur["nova_object.data"])
    assert m.row_ids == tuple(range(1, 12))  # the ten props and the spec; never the two non-flavor rows


@pytest.mark.parametrize(("stored", "expected"), [
    (("instance_type_rxtx_factor", "1"), ("rxtx_factor", 1.0)),
    (("instance_type_rxtx_factor", None), ("rxtx_factor", None)),
    (("instance_type_vcpu_weight", None), ("vcpu_weight", None)),
    (("instance_type_vcpu_weight", ""), ("vcpu_weight", None)),
    (("instance_type_vcpu_weight", "None"), ("vcpu_weight", None)),
    (("instance_type_vcpu_weight", "10"), ("vcpu_weight", 10)),
    (("instance_type_flavorid", "42"), ("flavorid", "42")),  # stays a string though it looks numeric
    (("instance_type_name", None), ("name", None)),
    (("instance_type_name", "caf\u00e9"), ("name", "caf\u00e9")),
])
def test_values_are_coerced_to_nova_types(stored: tuple[str, str | None], expected: tuple[str, Any]) -> None:
    pairs = [(k, stored[1] if k == stored[0] else v) for k, v in flavor()]
    data = json.loads(migrate(pairs).blob)["cur"]["nova_object.data"]
    assert data[expected[0]] == expected[1]
    assert type(data[expected[0]]) is type(expected[1])


def test_resize_in_flight_fills_old_and_new() -> None:
    pairs = flavor("", 1) + flavor("old_", 1, {"hw:numa_mem.0": "512"}) + flavor("new_", 3)
    blob = json.loads(migrate(pairs).blob)
    assert blob["old"]["nova_object.data"]["name"] == "m1.small"
    assert blob["old"]["nova_object.data"]["extra_specs"] == {"hw:numa_mem.0": "512"}
    assert blob["new"]["nova_object.data"]["name"] == "m1.large"
    assert blob["cur"]["nova_object.data"]["extra_specs"] == {}


def test_incomplete_old_flavor_is_absent_and_its_rows_stay() -> None:
    pairs = flavor() + [p for p in flavor("old_", 2) if p[0] != "old_instance_type_swap"]
    m = migrate(pairs)
    assert json.loads(m.blob)["old"] is None
    assert m.row_ids == tuple(range(1, 11))  # only the current flavor's rows go
    assert m.left_behind


@pytest.mark.parametrize(("change", "words"), [
    (lambda p: [r for r in p if r[0] != "instance_type_memory_mb"], "missing instance_type_memory_mb"),
    (lambda p: [(k, "abc" if k.endswith("memory_mb") else v) for k, v in p], "'abc' is not an integer"),
    (lambda p: [(k, "1.5" if k.endswith("vcpus") else v) for k, v in p], "'1.5' is not an integer"),
    (lambda p: [(k, None if k.endswith("root_gb") else v) for k, v in p], "instance_type_root_gb is NULL"),
    (lambda p: [(k, None if k.endswith("flavorid") else v) for k, v in p], "instance_type_flavorid is NULL"),
    (lambda p: [(k, "nan" if k.endswith("rxtx_factor") else v) for k, v in p], "not a finite number"),
    (lambda p: [(k, str(2**70) if k.endswith("_id") else v) for k, v in p], "cannot be serialized"),
    (lambda p: p + [("instance_type_vcpus", "2")], "two live system_metadata rows for key 'instance_type_vcpus'"),
    (lambda p: p + [("instance_type_extra_hw:numa_cpus.0", None)], "instance_type_extra_hw:numa_cpus.0 is NULL"),
    (lambda p: p + [(f"instance_type_extra_x{i}", "9" * 250) for i in range(300)], "over the 65535-byte"),
    (lambda p: [("image_min_ram", "1")], "no instance_type_* rows"),
    (lambda p: [r for r in p if r[0] == "instance_type_extra_hw:numa_cpus.0"] + [("instance_type_extra_a", "b")],
     "current flavor is incomplete"),
])
def test_broken_instances_are_refused_with_the_reason(change: Any, words: str) -> None:
    assert words in refuse(change(flavor()))


def test_soft_deleted_rows_of_a_live_instance_are_history() -> None:
    pairs = flavor()
    rows = rows_of(pairs) + (SysmetaRow(99, "instance_type_memory_mb", "1", 99),)
    m = transform(Candidate("u", False, None, rows))
    assert isinstance(m, Migration)
    assert json.loads(m.blob)["cur"]["nova_object.data"]["memory_mb"] == 512
    assert 99 not in m.row_ids


def test_soft_deleted_instance_uses_its_newest_soft_deleted_rows() -> None:
    old = SysmetaRow(1, "instance_type_memory_mb", "1", 1)
    rows = (old, *rows_of(flavor(), start=10, deleted=True))
    m = transform(Candidate("u", True, None, rows))
    assert isinstance(m, Migration)
    assert json.loads(m.blob)["cur"]["nova_object.data"]["memory_mb"] == 512
    assert m.live_row_ids == ()  # nothing left to soft-delete


def test_non_ascii_is_escaped_like_nova_does() -> None:
    pairs = [(k, "gpu.\u00e9\U0001f680" if k == "instance_type_name" else v) for k, v in flavor()]
    blob = migrate(pairs).blob
    assert blob.isascii()
    assert "\\u00e9\\ud83d\\ude80" in blob
    assert json.loads(blob)["cur"]["nova_object.data"]["name"] == "gpu.\u00e9\U0001f680"


def test_parse_key_matches_whole_prefixes_only() -> None:
    assert parse_key("instance_type_id") == ("cur", "id", False)
    assert parse_key("old_instance_type_vcpus") == ("old", "vcpus", False)
    assert parse_key("new_instance_type_extra_hw:numa_cpus.1") == ("new", "hw:numa_cpus.1", True)
    for key in ("old_vm_state", "image_min_ram", "instance_type_foo", "instance_type_extra_", "xinstance_type_id",
                "instanceXtype_id", "image_instance_type_id"):
        assert parse_key(key) is None, key


def test_unknown_keys_under_a_flavor_prefix_are_never_touched() -> None:
    m = migrate(flavor() + [("instance_type_foo", "bar")])
    assert 11 not in m.row_ids


@pytest.mark.parametrize(("task_state", "vm_state", "busy"), [
    (None, "active", False), ("resize_prep", "active", True), (None, "resized", True), (None, "rescued", True),
    (None, "stopped", False),
])
def test_busy(task_state: str | None, vm_state: str, busy: bool) -> None:
    assert is_busy(task_state, vm_state) is busy


def test_fingerprint_sees_every_change() -> None:
    rows = rows_of(flavor())
    base = fingerprint(rows)
    assert fingerprint(reversed(rows)) == base  # order of arrival does not matter
    assert fingerprint(rows[:-1]) != base
    assert fingerprint(rows + (SysmetaRow(50, "old_instance_type_id", "2", 0),)) != base
    assert fingerprint((rows[0]._replace(value="2"), *rows[1:])) != base
    assert fingerprint((rows[0]._replace(value=None), *rows[1:])) != base
    assert fingerprint((rows[0]._replace(deleted=1), *rows[1:])) != base


# --- properties over generated system_metadata -----------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
_flavors = st.fixed_dictionaries({
    "id": st.integers(-2**31, 2**31), "name": st.none() | _text,
    "memory_mb": st.integers(0, 2**40), "vcpus": st.integers(0, 1024), "root_gb": st.integers(0, 10**6),
    "ephemeral_gb": st.integers(0, 10**6), "flavorid": _text, "swap": st.integers(0, 10**6),
    "rxtx_factor": st.none() | st.floats(0, 1e6, allow_nan=False), "vcpu_weight": st.none() | st.integers(0, 1000),
})
_specs = st.dictionaries(st.sampled_from(["hw:numa_cpus.0", "hw:numa_cpus.1", "hw:numa_mem.0"]), _text, max_size=3)
_noise = st.lists(st.tuples(st.sampled_from(["image_min_ram", "old_vm_state", "image_instance_type_x",
                                             "instance_typo", "clean_attempts"]), st.none() | _text), max_size=6)


@settings(max_examples=300, deadline=None)
@given(cur=_flavors, cur_specs=_specs, old=st.none() | _flavors, new=st.none() | _flavors, noise=_noise,
       seed=st.integers(0, 2**32))
def test_blob_round_trips_every_flavor(cur: dict[str, Any], cur_specs: dict[str, str], old: dict[str, Any] | None,
                                       new: dict[str, Any] | None, noise: list[tuple[str, str | None]],
                                       seed: int) -> None:
    rng = random.Random(seed)
    pairs = flavor_rows("", cur, cur_specs, rng) + list(noise)
    for prefix, f in (("old_", old), ("new_", new)):
        if f is not None:
            pairs += flavor_rows(prefix, f, {}, rng)
    rng.shuffle(pairs)
    rows = rows_of(pairs)
    result = transform(Candidate("u", False, None, rows))
    assert isinstance(result, Migration), result
    blob = json.loads(result.blob)
    assert result.blob.isascii() and len(result.blob) <= BLOB_MAX_BYTES
    assert blob_problems(result.blob) == []  # and verify's independent reading agrees
    assert blob["cur"]["nova_object.data"] == dict(cur, extra_specs=cur_specs)
    assert (blob["old"] and blob["old"]["nova_object.data"]) == (old and dict(old, extra_specs={}))
    assert (blob["new"] and blob["new"]["nova_object.data"]) == (new and dict(new, extra_specs={}))
    # Exactly the flavor rows go; every other row stays.
    flavor_ids = {r.id for r in rows if parse_key(r.key) is not None}
    assert set(result.row_ids) == flavor_ids


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**60, 2**60) | _text,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                    max_leaves=20))
def test_dumps_ascii_is_json_and_ascii(value: Any) -> None:
    text = dumps_ascii(value)
    assert text.isascii()
    assert json.loads(text) == value
