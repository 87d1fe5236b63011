"""Placement's 11 tables: as nova_api holds them (the source) and as openstack-placement creates them at its
initial revision ``b4ed3a175331`` (the target), from one description.

The two differ only where nova's copy does (nova's ``d67eeaabee36_initial_version``): ``CHARSET=latin1``
tables and ``resource_providers.can_host``. Both name columns keep ``utf8_bin``, nova_api's collation: placement's
own schema would give them the database's default (case-insensitive on MySQL), under which two providers or
traits whose names differ only in case, legal in nova_api, would collide in the unique indexes. The target
database's default charset is what the operator created it with; every latin1 value fits in utf8.

``COPY_ORDER`` lists the tables parents first. Copies run with foreign-key checks off (self-referencing
provider trees, tables copied concurrently), so the order matters only for reading the code and the reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, PrimaryKeyConstraint,
                        String, Table, Unicode, UniqueConstraint, text)

__all__ = ["ALEMBIC_VERSION", "COPY_ORDER", "DEFERRED_INDEXES", "INITIAL_REVISION", "SPECS", "TableSpec",
           "add_indexes", "alembic_version", "bare_tables", "nova_api_metadata", "nova_api_tables",
           "placement_metadata", "placement_tables"]

INITIAL_REVISION = "b4ed3a175331"  # openstack-placement's first alembic revision: `placement-manage db sync` goes on
ALEMBIC_VERSION = "alembic_version"

COPY_ORDER = ("projects", "users", "resource_classes", "traits", "placement_aggregates", "resource_providers",
              "inventories", "consumers", "allocations", "resource_provider_aggregates", "resource_provider_traits")


@dataclass(frozen=True, slots=True)
class TableSpec:
    """What the copy needs to know of a table: its key (keyset order) and the columns both sides have."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]  # placement's columns, in its order: what is copied and compared
    text_columns: frozenset[str]  # those holding text (hashed as utf8mb4, whatever each side's charset)
    unique_columns: bool = False  # a unique key besides the primary key (a name, a uuid)


def _ts() -> list[Column[Any]]:
    return [Column("created_at", DateTime), Column("updated_at", DateTime)]


def _build(metadata: MetaData, *, nova_api: bool) -> dict[str, Table]:
    # mysql_charset: nova_api's tables are latin1; placement's follow the database default.
    opts: dict[str, Any] = {"mysql_engine": "InnoDB"}
    if nova_api:
        opts["mysql_charset"] = "latin1"
    name_type = Unicode(255, collation="utf8_bin")
    tables = [
        Table("projects", metadata, *_ts(), Column("id", Integer, primary_key=True, autoincrement=True),
              Column("external_id", String(255), nullable=False),
              UniqueConstraint("external_id", name="uniq_projects0external_id"), **opts),
        Table("users", metadata, *_ts(), Column("id", Integer, primary_key=True, autoincrement=True),
              Column("external_id", String(255), nullable=False),
              UniqueConstraint("external_id", name="uniq_users0external_id"), **opts),
        Table("resource_classes", metadata, *_ts(), Column("id", Integer, primary_key=True),
              Column("name", String(255), nullable=False),
              UniqueConstraint("name", name="uniq_resource_classes0name"), **opts),
        Table("traits", metadata, *_ts(), Column("id", Integer, primary_key=True, autoincrement=True),
              Column("name", name_type, nullable=False), UniqueConstraint("name", name="uniq_traits0name"), **opts),
        Table("placement_aggregates", metadata, *_ts(), Column("id", Integer, primary_key=True, autoincrement=True),
              Column("uuid", String(36)), UniqueConstraint("uuid", name="uniq_placement_aggregates0uuid"),
              Index("ix_placement_aggregates_uuid", "uuid"), **opts),
        Table("resource_providers", metadata, *_ts(), Column("id", Integer, primary_key=True, autoincrement=True),
              Column("uuid", String(36), nullable=False), Column("name", Unicode(200, collation="utf8_bin")),
              Column("generation", Integer),
              *([Column("can_host", Integer)] if nova_api else []),
              Column("root_provider_id", Integer, ForeignKey("resource_providers.id")),
              Column("parent_provider_id", Integer, ForeignKey("resource_providers.id")),
              UniqueConstraint("name", name="uniq_resource_providers0name"),
              UniqueConstraint("uuid", name="uniq_resource_providers0uuid"),
              Index("resource_providers_name_idx", "name"), Index("resource_providers_uuid_idx", "uuid"),
              Index("resource_providers_root_provider_id_idx", "root_provider_id"),
              Index("resource_providers_parent_provider_id_idx", "parent_provider_id"), **opts),
        Table("inventories", metadata, *_ts(), Column("id", Integer, primary_key=True, autoincrement=True),
              Column("resource_provider_id", Integer, nullable=False),
              Column("resource_class_id", Integer, nullable=False),
              *(Column(c, Integer, nullable=False) for c in ("total", "reserved", "min_unit", "max_unit",
                                                              "step_size")),
              Column("allocation_ratio", Float, nullable=False),
              UniqueConstraint("resource_provider_id", "resource_class_id",
                               name="uniq_inventories0resource_provider_resource_class"),
              Index("inventories_resource_class_id_idx", "resource_class_id"),
              Index("inventories_resource_provider_id_idx", "resource_provider_id"),
              Index("inventories_resource_provider_resource_class_idx", "resource_provider_id",
                    "resource_class_id"), **opts),
        Table("consumers", metadata, *_ts(), Column("id", Integer, primary_key=True, autoincrement=True),
              Column("uuid", String(36), nullable=False), Column("project_id", Integer, nullable=False),
              Column("user_id", Integer, nullable=False),
              Column("generation", Integer, nullable=False, server_default=text("0")),
              UniqueConstraint("uuid", name="uniq_consumers0uuid"),
              Index("consumers_project_id_user_id_uuid_idx", "project_id", "user_id", "uuid"),
              Index("consumers_project_id_uuid_idx", "project_id", "uuid"), **opts),
        Table("allocations", metadata, *_ts(), Column("id", Integer, primary_key=True, autoincrement=True),
              Column("resource_provider_id", Integer, nullable=False),
              Column("consumer_id", String(36), nullable=False),
              Column("resource_class_id", Integer, nullable=False), Column("used", Integer, nullable=False),
              Index("allocations_resource_provider_class_used_idx", "resource_provider_id", "resource_class_id",
                    "used"),
              Index("allocations_resource_class_id_idx", "resource_class_id"),
              Index("allocations_consumer_id_idx", "consumer_id"), **opts),
        Table("resource_provider_aggregates", metadata, *_ts(),
              Column("resource_provider_id", Integer, nullable=False, autoincrement=False),
              Column("aggregate_id", Integer, nullable=False, autoincrement=False),
              PrimaryKeyConstraint("resource_provider_id", "aggregate_id"),
              Index("resource_provider_aggregates_aggregate_id_idx", "aggregate_id"), **opts),
        Table("resource_provider_traits", metadata, *_ts(),
              Column("trait_id", Integer, ForeignKey("traits.id"), nullable=False, autoincrement=False),
              Column("resource_provider_id", Integer, ForeignKey("resource_providers.id"), nullable=False,
                     autoincrement=False),
              PrimaryKeyConstraint("trait_id", "resource_provider_id"),
              Index("resource_provider_traits_resource_provider_trait_idx", "resource_provider_id", "trait_id"),
              **opts),
    ]
    return {t.name: t for t in tables}


nova_api_metadata = MetaData()
nova_api_tables = _build(nova_api_metadata, nova_api=True)
placement_metadata = MetaData()
placement_tables = _build(placement_metadata, nova_api=False)
alembic_version = Table(ALEMBIC_VERSION, placement_metadata,
                        Column("version_num", String(32), nullable=False),
                        PrimaryKeyConstraint("version_num"))



def _secondary(table: Table) -> list[tuple[str, bool, tuple[str, ...]]]:
    """A table's secondary indexes, unique ones included: (name, unique, columns)."""
    found = [(str(i.name), bool(i.unique), tuple(c.name for c in i.columns)) for i in table.indexes]
    found += [(str(c.name), True, tuple(col.name for col in c.columns)) for c in table.constraints
              if isinstance(c, UniqueConstraint)]
    return sorted(found)


# Indexes a copy builds after the rows are in, in one ALTER TABLE per table: InnoDB then sorts and builds
# each index at once, where maintaining them row by row costs more than the copy itself (3M allocations
# into a table with its 4 indexes: 31 s; into the bare table 7 s, then the ALTER 6 s). Tables with foreign
# keys keep theirs from the start (InnoDB would make indexes of its own for the keys) and are small.
DEFERRED_INDEXES = {name: _secondary(table) for name, table in placement_tables.items()
                    if not table.foreign_keys and _secondary(table)}


def bare_tables(metadata: MetaData) -> list[Table]:
    """Placement's tables as ``placement_metadata`` has them, but those of ``DEFERRED_INDEXES`` with their
    primary key only, in ``metadata``."""
    tables = []
    for name, table in placement_tables.items():
        if name in DEFERRED_INDEXES:
            table = Table(name, metadata, *(c._copy() for c in table.columns), **table.kwargs)
        else:
            table = table.to_metadata(metadata)
        tables.append(table)
    alembic_version.to_metadata(metadata)
    return tables


def add_indexes(name: str, missing: list[tuple[str, bool, tuple[str, ...]]]) -> str:
    """One ALTER TABLE adding these indexes."""
    parts = [f"ADD {'UNIQUE ' if unique else ''}INDEX `{index}` ({', '.join(f'`{c}`' for c in columns)})"
             for index, unique, columns in missing]
    return f"ALTER TABLE `{name}` {', '.join(parts)}"


SPECS = {name: TableSpec(name, tuple(c.name for c in table.primary_key.columns),
                         tuple(c.name for c in table.columns),
                         frozenset(c.name for c in table.columns if isinstance(c.type, String)),
                         any(unique for _, unique, _ in _secondary(table)))
         for name, table in placement_tables.items()}
assert tuple(SPECS) == COPY_ORDER
