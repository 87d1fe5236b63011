"""Placement out of nova_api: copy its 11 tables into a placement database, sync, verify; audit orphans."""

from __future__ import annotations

from .audit import AuditOptions, audit_placement
from .copy import (PlacementOptions, TargetNotEmpty, copy_placement, sync_placement, untrack_placement,
                   verify_placement)
from .results import AuditResult, Orphan, PlacementRun, TableResult

__all__ = ["AuditOptions", "AuditResult", "Orphan", "PlacementOptions", "PlacementRun", "TableResult",
           "TargetNotEmpty", "audit_placement", "copy_placement", "sync_placement", "untrack_placement",
           "verify_placement"]
