"""The nova cell tables fastmigrate reads and writes, as SQLAlchemy Core tables.

Column names, types, nullability and indexes follow nova's schema (``nova/db/main/models.py``); ``instances``
carries only the columns fastmigrate and its fleet generator use. None of the columns has a server default:
nova never relied on them, and a row inserted without ``deleted`` or ``created_at`` is invisible to nova.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text

__all__ = ["EXTRA_UUID_INDEX", "REQUIRED_COLUMNS", "REQUIRED_INDEXES", "SYSMETA_UUID_INDEX", "instance_extra",
           "instances", "metadata", "sysmeta"]

# The indexes every lookup by instance uuid goes through, by nova's names. Statements on MySQL name them
# (FORCE INDEX): statistics that are stale (right after a restore, say) must not turn a lookup of a few
# thousand instances into a scan of the whole table.
SYSMETA_UUID_INDEX = "instance_uuid"
EXTRA_UUID_INDEX = "instance_extra_idx"

_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8"}

metadata = MetaData()


def _timestamps() -> list[Column[Any]]:
    return [
        Column("created_at", DateTime),
        Column("updated_at", DateTime),
        Column("deleted_at", DateTime),
        Column("deleted", Integer),
    ]


instances = Table(
    "instances",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False),
    Column("display_name", String(255)),
    Column("project_id", String(255)),
    Column("instance_type_id", Integer),
    Column("vm_state", String(255)),
    Column("task_state", String(255)),
    Column("memory_mb", Integer),
    Column("vcpus", Integer),
    *_timestamps(),
    Index("uuid", "uuid", unique=True),
    Index("instances_task_state_updated_at_idx", "task_state", "updated_at"),
    **_MYSQL,
)

sysmeta = Table(
    "instance_system_metadata",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance_uuid", String(36), nullable=False),
    Column("key", String(255), nullable=False),
    Column("value", String(255)),
    *_timestamps(),
    Index(SYSMETA_UUID_INDEX, "instance_uuid"),
    **_MYSQL,
)

instance_extra = Table(
    "instance_extra",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance_uuid", String(36), nullable=False),
    Column("numa_topology", Text),
    Column("pci_requests", Text),
    Column("flavor", Text),
    Column("vcpu_model", Text),
    Column("migration_context", Text),
    Column("keypairs", Text),
    Column("device_metadata", Text),
    Column("trusted_certs", Text),
    Column("vpmems", Text),
    Column("resources", Text),
    *_timestamps(),
    Index(EXTRA_UUID_INDEX, "instance_uuid"),  # not unique: nothing but care prevents a second row
    **_MYSQL,
)

# What a database must have before fastmigrate touches it (checked before any write).
REQUIRED_COLUMNS: dict[str, frozenset[str]] = {
    "instances": frozenset({"id", "uuid", "deleted", "vm_state", "task_state"}),
    "instance_system_metadata": frozenset({"id", "instance_uuid", "key", "value", "deleted", "deleted_at"}),
    "instance_extra": frozenset({"id", "instance_uuid", "flavor", "created_at", "updated_at", "deleted"}),
}

# table -> (index, its first column) that must exist (checked before any write).
REQUIRED_INDEXES: dict[str, tuple[str, str]] = {
    "instance_system_metadata": (SYSMETA_UUID_INDEX, "instance_uuid"),
    "instance_extra": (EXTRA_UUID_INDEX, "instance_uuid"),
}
