"""Placement out of nova_api: copy its 11 tables into a placement database, sync, verify."""

from __future__ import annotations

from .copy import PlacementOptions, TargetNotEmpty, copy_placement, sync_placement, verify_placement
from .results import PlacementRun, TableResult

__all__ = ["PlacementOptions", "PlacementRun", "TableResult", "TargetNotEmpty", "copy_placement", "sync_placement",
           "verify_placement"]
