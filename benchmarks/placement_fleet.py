"""A nova_api database's placement data, generated inside MariaDB (``INSERT ... SELECT`` over the sequence
engine): seconds for a million consumers, the same rows for the same seed.

For ``consumers`` = N: N consumers with 3 allocations each (VCPU, MEMORY_MB, DISK_GB: resource classes 0, 1
and 2, which nova_api never stores), N/40 compute-node providers (at least 10) with VCPU/MEMORY_MB/DISK_GB
inventories, and a nested GPU child for every fifth one, with inventory of the custom class
``CUSTOM_GPU`` (id 10000: custom classes start there); 30 traits, 3 per root provider; aggregates, about one
per ten roots; N/200 projects and N/100 users. Some values test the charsets: a project ``projé-1`` (latin1),
a provider ``nœud-1`` (utf8 in a utf8_bin column), and ``updated_at`` NULL on every other row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from fastmigrate.placement.audit import API_TABLES, CELL_TABLES
from fastmigrate.placement.schema import nova_api_metadata

__all__ = ["NOVA_SIDE", "ORPHANED", "PlacementFleet", "create_nova_side", "create_placement_fleet", "sql_uuid",
           "uuid_of"]

# What the nova side makes of consumer number ``seq`` (from 1), by ``seq % 100``; every other one is a live
# instance. "moved" is deleted in one cell and live in the next (a cross-cell move), with two cells or more.
NOVA_SIDE = {1: "deleted", 2: "migrating", 3: "migrated", 4: "building", 5: "mapped", 6: "unknown", 7: "moved"}
ORPHANED = frozenset({"deleted", "migrated", "unknown"})


@dataclass(frozen=True, slots=True)
class PlacementFleet:
    consumers: int
    seed: int = 42

    @property
    def roots(self) -> int:
        return max(10, self.consumers // 40)

    @property
    def children(self) -> int:
        return self.roots // 5

    @property
    def projects(self) -> int:
        return max(5, self.consumers // 200)

    @property
    def users(self) -> int:
        return max(5, self.consumers // 100)

    @property
    def aggregates(self) -> int:
        return max(3, self.roots // 10)

    TRAITS = 30
    CUSTOM_CLASSES = ("CUSTOM_GPU", "CUSTOM_FPGA", "CUSTOM_BAREMETAL_GOLD")  # ids 10000, 10001, 10002

    @property
    def row_counts(self) -> dict[str, int]:
        return {
            "projects": self.projects, "users": self.users, "resource_classes": len(self.CUSTOM_CLASSES),
            "traits": self.TRAITS, "placement_aggregates": self.aggregates,
            "resource_providers": self.roots + self.children, "inventories": 3 * self.roots + self.children,
            "consumers": self.consumers, "allocations": 3 * self.consumers,
            "resource_provider_aggregates": self.roots + (self.roots + 2) // 3,
            "resource_provider_traits": 3 * self.roots,
        }


def sql_uuid(tag: str, seed: int, number: str) -> str:
    """A SQL expression for a uuid made of MD5('<tag>-<seed>-<number>')."""
    h = f"MD5(CONCAT('{tag}-{int(seed)}-', {number}))"
    parts = ", ".join(f"SUBSTR({h}, {start}, {length})" for start, length in ((1, 8), (9, 4), (13, 4), (17, 4),
                                                                               (21, 12)))
    return f"CONCAT_WS('-', {parts})"


def uuid_of(tag: str, seed: int, number: int) -> str:
    """The uuid ``sql_uuid`` makes in the server, made in Python (tests' expectations)."""
    h = hashlib.md5(f"{tag}-{int(seed)}-{number}".encode()).hexdigest()
    return "-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:32]))


def _created(n: str) -> str:
    return f"TIMESTAMP('2019-01-01') + INTERVAL {n} SECOND"


def _updated(n: str) -> str:
    return f"IF({n} % 2 = 0, NULL, {_created(n)} + INTERVAL 1 DAY)"


def _statements(f: PlacementFleet) -> list[str]:
    s, roots = f.seed, f.roots
    created = _created("seq")
    updated = _updated("seq")
    traits = ", ".join(f"({i}, 'CUSTOM_TRAIT_{i}', TIMESTAMP('2019-01-01'))" for i in range(1, f.TRAITS + 1))
    classes = ", ".join(f"({10000 + i}, '{name}', TIMESTAMP('2019-01-01'))"
                        for i, name in enumerate(f.CUSTOM_CLASSES))
    return [
        f"INSERT INTO projects (id, external_id, created_at) SELECT seq, IF(seq = 1, 'projé-1', "
        f"CONCAT('project-', seq)), {created} FROM seq_1_to_{f.projects}",
        f"INSERT INTO users (id, external_id, created_at) SELECT seq, CONCAT('user-', seq), {created} "
        f"FROM seq_1_to_{f.users}",
        f"INSERT INTO resource_classes (id, name, created_at) VALUES {classes}",
        f"INSERT INTO traits (id, name, created_at) VALUES {traits}",
        f"INSERT INTO placement_aggregates (id, uuid, created_at) SELECT seq, {sql_uuid('agg', s, 'seq')}, "
        f"{created} FROM seq_1_to_{f.aggregates}",
        # Roots: their own root, no parent. Children: a GPU under every fifth root.
        f"INSERT INTO resource_providers (id, uuid, name, generation, can_host, root_provider_id, "
        f"parent_provider_id, created_at, updated_at) SELECT seq, {sql_uuid('rp', s, 'seq')}, "
        f"IF(seq = 1, 'nœud-1', CONCAT('compute-', seq)), seq % 7, 0, seq, NULL, {created}, {updated} "
        f"FROM seq_1_to_{roots}",
        f"INSERT INTO resource_providers (id, uuid, name, generation, can_host, root_provider_id, "
        f"parent_provider_id, created_at) SELECT {roots} + seq, {sql_uuid('rp', s, f'{roots} + seq')}, "
        f"CONCAT('compute-', seq * 5, '_pci_0000_81_00_0'), 1, 0, seq * 5, seq * 5, {created} "
        f"FROM seq_1_to_{f.children}",
        f"INSERT INTO inventories (id, resource_provider_id, resource_class_id, total, reserved, min_unit, max_unit, "
        f"step_size, allocation_ratio, created_at, updated_at) "
        f"SELECT (r.seq - 1) * 3 + rc.seq + 1, r.seq, rc.seq, ELT(rc.seq + 1, 64, 262144, 2048), "
        f"ELT(rc.seq + 1, 0, 512, 10), 1, ELT(rc.seq + 1, 64, 262144, 2048), 1, ELT(rc.seq + 1, 16.0, 1.5, 1.0), "
        f"{_created('r.seq')}, {_updated('r.seq')} FROM seq_1_to_{roots} r JOIN (SELECT seq FROM seq_0_to_2) rc",
        f"INSERT INTO inventories (id, resource_provider_id, resource_class_id, total, reserved, min_unit, max_unit, "
        f"step_size, allocation_ratio, created_at) SELECT {3 * roots} + seq, {roots} + seq, 10000, 4, 0, 1, 4, 1, "
        f"1.0, {created} FROM seq_1_to_{f.children}",
        f"INSERT INTO consumers (id, uuid, project_id, user_id, generation, created_at, updated_at) "
        f"SELECT seq, {sql_uuid('consumer', s, 'seq')}, seq % {f.projects} + 1, seq % {f.users} + 1, seq % 3, "
        f"{created}, {updated} FROM seq_1_to_{f.consumers}",
        f"INSERT INTO allocations (id, resource_provider_id, consumer_id, resource_class_id, used, created_at) "
        f"SELECT (c.seq - 1) * 3 + rc.seq + 1, c.seq % {roots} + 1, {sql_uuid('consumer', s, 'c.seq')}, rc.seq, "
        f"ELT(rc.seq + 1, 1 + c.seq % 8, 512 * (1 + c.seq % 32), 10 * (1 + c.seq % 10)), "
        f"{_created('c.seq')} FROM seq_1_to_{f.consumers} c JOIN (SELECT seq FROM seq_0_to_2) rc",
        f"INSERT INTO resource_provider_aggregates (resource_provider_id, aggregate_id, created_at) "
        f"SELECT seq, seq % {f.aggregates} + 1, {created} FROM seq_1_to_{roots}",
        f"INSERT INTO resource_provider_aggregates (resource_provider_id, aggregate_id, created_at) "
        f"SELECT seq, (seq + 1) % {f.aggregates} + 1, {created} FROM seq_1_to_{roots} WHERE seq % 3 = 1",
        f"INSERT INTO resource_provider_traits (trait_id, resource_provider_id, created_at) "
        f"SELECT (r.seq + o.seq) % {f.TRAITS} + 1, r.seq, {_created('r.seq')} FROM seq_1_to_{roots} r "
        f"JOIN (SELECT 0 AS seq UNION ALL SELECT 7 UNION ALL SELECT 13) o",
    ]


async def create_placement_fleet(engine: AsyncEngine, fleet: PlacementFleet) -> None:
    """nova_api's placement tables, created as nova creates them, filled with ``fleet``."""
    async with engine.begin() as conn:
        await conn.run_sync(nova_api_metadata.create_all)
    await _run_all(engine, ["SET SESSION foreign_key_checks = 0", *_statements(fleet),
                            "SET SESSION foreign_key_checks = 1"])


def _nova_statements(f: PlacementFleet, cell_urls: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """nova_api's statements, and each cell's, for the nova side of ``f`` (see ``NOVA_SIDE``)."""
    n, seqs = len(cell_urls), f"seq_1_to_{f.consumers}"
    uuid = sql_uuid("consumer", f.seed, "seq")
    moved_away = "seq % 100 = 7" if n > 1 else "FALSE"
    home = f"IF({moved_away}, seq + 1, seq) % {n}"  # the cell an instance lives in now (0-based)
    mappings = ", ".join(f"({i + 1}, {sql_uuid('cell', f.seed, str(i + 1))}, 'cell{i + 1}', '{url}')"
                         for i, url in enumerate(cell_urls))
    api = [
        f"INSERT INTO cell_mappings (id, uuid, name, database_connection) VALUES {mappings}",
        # Deleted instances keep their mappings (until archive_deleted_rows); a building one has no cell yet.
        f"INSERT INTO instance_mappings (instance_uuid, cell_id) SELECT {uuid}, IF(seq % 100 = 4, NULL, "
        f"{home} + 1) FROM {seqs} WHERE seq % 100 NOT IN (2, 3, 6)",
        f"INSERT INTO build_requests (instance_uuid) SELECT {uuid} FROM {seqs} WHERE seq % 100 = 4",
    ]
    cells = []
    for c in range(n):
        cells.append([
            f"INSERT INTO instances (uuid, deleted, vm_state, created_at) SELECT {uuid}, "
            f"IF(seq % 100 = 1 OR {moved_away}, seq, 0), IF(seq % 100 = 1 OR {moved_away}, 'deleted', 'active'), "
            f"{_created('seq')} FROM {seqs} WHERE seq % {n} = {c} AND seq % 100 NOT IN (2, 3, 4, 5, 6)",
            f"INSERT INTO instances (uuid, deleted, vm_state, created_at) SELECT {uuid}, 0, 'active', "
            f"{_created('seq')} FROM {seqs} WHERE {moved_away} AND (seq + 1) % {n} = {c}",
            f"INSERT INTO migrations (uuid, status, deleted) SELECT {uuid}, IF(seq % 100 = 2, 'migrating', "
            f"'confirmed'), 0 FROM {seqs} WHERE seq % {n} = {c} AND seq % 100 IN (2, 3)",
        ])
    return api, cells


async def _run_all(engine: AsyncEngine, statements: Sequence[str]) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            # The driver formats even a statement without parameters: a literal % (modulo) is written %%.
            await conn.exec_driver_sql(statement.replace("%", "%%"))


async def create_nova_side(api: AsyncEngine, cells: Sequence[tuple[AsyncEngine, str]], fleet: PlacementFleet) -> None:
    """What nova knows of ``fleet``'s consumers: cell_mappings, instance_mappings and build_requests in
    nova_api (``api``), instances and migrations in each cell (``cells``: engine and URL, as nova_api maps it)."""
    api_statements, cell_statements = _nova_statements(fleet, [url for _, url in cells])
    async with api.begin() as conn:
        for table in API_TABLES:
            await conn.run_sync(table.create)
    await _run_all(api, api_statements)
    for (engine, _), statements in zip(cells, cell_statements):
        async with engine.begin() as conn:
            for table in CELL_TABLES:
                await conn.run_sync(table.create)
        await _run_all(engine, statements)
