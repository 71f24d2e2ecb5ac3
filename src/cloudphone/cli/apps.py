"""``cloudphone apps``: operator tools for the apps service (reconcile records and objects)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cloudphone.cli._shared import EXIT_FAILED, err, load, out, print_json, run

if TYPE_CHECKING:
    from cloudphone.apps.reconcile import ReconcileReport

app = typer.Typer(help="Operate the apps service (APK uploads).", no_args_is_help=True)

FINDINGS = {
    "orphan_objects": ("object without a live record", "deleted"),
    "pending_uploads": ("unfinished multipart upload", "aborted"),
    "missing_objects": ("AVAILABLE record without its object", "marked FAILED"),
    "unfinished_deletions": ("DELETING record (delete interrupted)", "deletion finished"),
    "stalled_uploads": ("UPLOADING record whose saga is over", "marked FAILED"),
    "size_mismatches": ("object size differs from its record", "left for an operator"),
}
"""Report field → (what it means, what --fix does)."""


@app.command()
def reconcile(
    fix: Annotated[
        bool, typer.Option("--fix", help="Repair what is found (default: only list it).")
    ] = False,
    package: Annotated[
        str | None, typer.Option(help="Only this package's records and objects.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List (and with --fix remove) objects without a live record and records without an object.

    Uploads whose saga is still running are left alone. Exits 1 when drift remains (found
    without --fix, or not repairable automatically).
    """
    from cloudphone.platform import build_platform

    settings = load()

    async def main() -> ReconcileReport:
        platform = build_platform(settings, with_worker=False)
        storage = platform.apps.storage
        try:
            await storage.start()
            # Claimed first, so --fix never deletes objects of a deployment on another database.
            await platform.claim_deployment()
            return await platform.apps.reconcile(fix=fix, package_name=package)
        finally:
            await storage.close()
            await platform.close()

    report = run(main)
    if as_json:
        print_json(asdict(report))
    else:
        _print(report)
    unfixable = bool(report.size_mismatches)
    if (not report.clean and not fix) or unfixable:
        raise typer.Exit(EXIT_FAILED)


def _print(report: ReconcileReport) -> None:
    if report.clean:
        err().print("[green]nothing to reconcile[/green]: records and objects agree")
        return
    table = Table("finding", "item", "action")
    for field, (meaning, action) in FINDINGS.items():
        for item in getattr(report, field):
            name = getattr(item, "key", item)
            done = action if report.fixed else "none (run with --fix)"
            table.add_row(meaning, str(name), done)
    out().print(table)
