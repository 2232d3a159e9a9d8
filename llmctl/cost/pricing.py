"""Everything plan and cost need to price a config: the catalog snapshot and an up-to-date llmops.lock."""
from __future__ import annotations

from pathlib import Path

from llmctl.cost.catalog import load_catalog
from llmctl.cost.estimate import Pricing
from llmctl.desired import Desired
from llmctl.lock import lock_path, read_lock, resolve, stale, upstream_moved, write_lock
from llmctl.plan.model import Check


def pricing_for(config_path: Path, desired: Desired, allow_over_budget: bool = False,
                update: bool = False) -> Pricing:
    """Lock what is missing or stale (never silently re-resolving what is pinned, unless `update`), and say when
    a pinned branch has moved upstream."""
    catalog = load_catalog()
    path = lock_path(config_path)
    lock = read_lock(path)
    if lock is None or update or stale(lock, desired, catalog.version):
        lock = resolve(desired, catalog.version, previous=lock, update=update)
        write_lock(path, lock)
    notes = [Check(severity="info", address=f"model.{line.split(':', 1)[0].removeprefix('model ')}", message=line)
             for line in upstream_moved(lock)]
    return Pricing(catalog, lock, allow_over_budget, notes)
