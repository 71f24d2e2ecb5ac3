"""The soak's verdict: the platform's invariants, read from the database and the outside systems.

Each check is a number the soak prints next to what it must be. They read PostgreSQL directly
(psycopg), SeaweedFS's bucket, localstripe's refunds, the local runtime's processes and records,
and the running processes; the product's own ``cloudphone apps reconcile`` runs too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from tests.support.billing_localstripe import API_KEY
from tests.support.soak_stack import BUCKET, DATABASE, S3_PREFIX, SoakStack

TERMINAL = ("COMPLETED", "COMPENSATED", "TIMED_OUT", "FAILED")
LIVE_DEVICE = ("RUNNING", "STOPPED", "RESTARTING", "CREATING", "DELETING")
"""Device statuses that hold their quota, ports and runtime container."""
READYZ_WITHIN = 10.0
"""Seconds within which ``/readyz`` must be green once PostgreSQL accepts again."""


@dataclass(frozen=True)
class Check:
    """One invariant: its measured value, and whether it holds."""

    name: str
    value: Any
    expected: str
    ok: bool
    detail: str = ""


def run_checks(stack: SoakStack) -> list[Check]:
    """Every invariant, in the order the issue lists them."""
    with psycopg.connect(stack.postgres.libpq_url(DATABASE)) as conn:
        found = [check(conn) for check in DATABASE_CHECKS]
        found += [
            _no_double_refund_at_stripe(conn, stack),
            _no_orphan_objects(conn, stack),
            _no_orphan_device_processes(conn, stack),
        ]
    found += [_reconcile_clean(stack), _processes_alive(stack), _readyz(stack)]
    return found


OBSERVED = {
    "saga runs": "SELECT saga_type, status, count(*) FROM saga_runs GROUP BY 1, 2",
    "saga events": "SELECT 'all', kind, count(*) FROM saga_events GROUP BY 1, 2",
    "payments": "SELECT provider, status, count(*) FROM payments GROUP BY 1, 2",
    "refunds": "SELECT 'all', status, count(*) FROM refunds GROUP BY 1, 2",
    "applications": "SELECT 'all', status, count(*) FROM applications GROUP BY 1, 2",
    "devices": "SELECT 'all', status, count(*) FROM devices GROUP BY 1, 2",
    "installations": "SELECT 'all', status, count(*) FROM device_apps GROUP BY 1, 2",
    "install saga events": "SELECT r.saga_type, e.kind, count(*) FROM saga_events e "
    "JOIN saga_runs r ON r.id = e.saga_id WHERE r.saga_type IN ('app_install', 'app_uninstall') "
    "GROUP BY 1, 2",
}
"""What the run did, counted (evidence that the faults bit: takeovers, failures, retries)."""


def observed(stack: SoakStack) -> dict[str, dict[str, dict[str, int]]]:
    """Each of :data:`OBSERVED`: group → status or kind → count."""
    found: dict[str, dict[str, dict[str, int]]] = {}
    with psycopg.connect(stack.postgres.libpq_url(DATABASE)) as conn:
        for name, sql in OBSERVED.items():
            counts: dict[str, dict[str, int]] = {}
            for group, status, n in conn.execute(sql + " ORDER BY 1, 2").fetchall():
                counts.setdefault(group, {})[status] = n
            found[name] = counts
    return found


def unsettled(stack: SoakStack) -> dict[str, int]:
    """What the drain waits for: active sagas, devices in flux (or down), payments PENDING."""
    with psycopg.connect(stack.postgres.libpq_url(DATABASE)) as conn:
        sagas = _scalar(
            conn, "SELECT count(*) FROM saga_runs WHERE status <> ALL(%s)", list(TERMINAL)
        )
        devices = _scalar(
            conn,
            "SELECT count(*) FROM devices WHERE status IN ('CREATING', 'DELETING', 'RESTARTING')",
        )
        pending = _scalar(conn, "SELECT count(*) FROM payments WHERE status = 'PENDING'")
        running = _ids(conn, "SELECT container_id FROM devices WHERE status = 'RUNNING'")
    # A device whose process just died with its worker still says RUNNING until the watch sees.
    alive = {agent.token for agent in stack.runtime.scan()}
    devices += sum(token not in alive for token in running)
    return {"active sagas": sagas, "devices in flux": devices, "payments pending": pending}


# -- database checks ------------------------------------------------------------------------


def _scalar(conn: psycopg.Connection[Any], sql: str, *params: Any) -> int:
    row = conn.execute(sql, params or None).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _ids(conn: psycopg.Connection[Any], sql: str) -> list[str]:
    return [str(row[0]) for row in conn.execute(sql).fetchall()]


def _zero(name: str, sql: str, expected: str = "0") -> Callable[[psycopg.Connection[Any]], Check]:
    """A check that the query (returning offending ids) finds nothing."""

    def check(conn: psycopg.Connection[Any]) -> Check:
        ids = _ids(conn, sql)
        return Check(name, len(ids), expected, not ids, ", ".join(ids[:10]))

    return check


DATABASE_CHECKS = [
    _zero(
        "sagas not terminal",
        "SELECT id FROM saga_runs WHERE status NOT IN "
        "('COMPLETED', 'COMPENSATED', 'TIMED_OUT', 'FAILED')",
    ),
    _zero(
        "FAILED sagas without a reason",
        "SELECT id FROM saga_runs WHERE status = 'FAILED' AND "
        "(error IS NULL OR coalesce(error->>'message', '') = '')",
    ),
    _zero(
        "double refunds at the sandbox provider",
        "SELECT refund_key FROM sandbox_refunds GROUP BY charge_id, refund_key HAVING count(*) > 1",
    ),
    _zero(
        "payments refunded more than paid (ours or the sandbox's)",
        "SELECT p.id FROM payments p LEFT JOIN sandbox_charges c ON c.id = p.provider_payment_id "
        "WHERE p.refunded_amount > p.amount OR c.refunded > c.amount OR "
        "(SELECT coalesce(sum(amount), 0) FROM sandbox_refunds r "
        " WHERE r.charge_id = c.id AND r.status = 'succeeded') > c.amount",
    ),
    _zero(
        "payments whose refunded amount is not the sum of their refunds",
        "SELECT p.id FROM payments p WHERE p.refunded_amount <> (SELECT coalesce(sum(amount), 0) "
        "FROM refunds r WHERE r.payment_id = p.id AND r.status = 'SUCCEEDED')",
    ),
    _zero(
        "sandbox refunds not recorded as SUCCEEDED (unless held for an operator)",
        "SELECT r.refund_key FROM sandbox_refunds r JOIN refunds f ON f.id = r.refund_key "
        "WHERE r.status = 'succeeded' AND f.status NOT IN ('SUCCEEDED', 'NEEDS_ATTENTION')",
    ),
    _zero(
        "payments PENDING without a reconcile note",
        "SELECT id FROM payments WHERE status = 'PENDING' AND reconcile_note IS NULL",
    ),
    _zero(
        "payments REFUNDING without an operator-visible reason",
        "SELECT p.id FROM payments p LEFT JOIN refunds r ON r.id = p.held_by_refund "
        "LEFT JOIN saga_runs s ON s.id = r.saga_id WHERE p.status = 'REFUNDING' AND NOT "
        "(r.status = 'NEEDS_ATTENTION' AND r.failure_reason IS NOT NULL AND s.status = 'FAILED')",
    ),
    _zero(
        "users whose quota usage is not their live devices",
        "SELECT q.user_id FROM device_quotas q LEFT JOIN (SELECT owner_id, count(*) n, "
        "sum(cpu_millis) cpu, sum(memory_mb) mem, sum(storage_mb) disk FROM devices "
        "WHERE status IN ('RUNNING', 'STOPPED', 'RESTARTING', 'DELETING') GROUP BY owner_id) d "
        "ON d.owner_id = q.user_id WHERE q.used_devices <> coalesce(d.n, 0) "
        "OR q.used_cpu_millis <> coalesce(d.cpu, 0) OR q.used_memory_mb <> coalesce(d.mem, 0) "
        "OR q.used_storage_mb <> coalesce(d.disk, 0) OR q.reserved_devices <> 0 "
        "OR q.reserved_cpu_millis <> 0 OR q.reserved_memory_mb <> 0",
    ),
    _zero(
        "ports held without a live device",
        "SELECT p.port::text FROM device_ports p LEFT JOIN devices d ON d.id = p.device_id "
        "WHERE d.id IS NULL OR d.status NOT IN "
        "('RUNNING', 'STOPPED', 'RESTARTING', 'CREATING', 'DELETING')",
    ),
    _zero(
        "sagas whose event sequence has a gap",
        "SELECT r.id FROM saga_runs r LEFT JOIN (SELECT saga_id, count(*) n, min(seq) lo, "
        "max(seq) hi FROM saga_events GROUP BY saga_id) e ON e.saga_id = r.id "
        "WHERE e.n IS NULL OR e.lo <> 1 OR e.hi <> e.n OR r.last_seq <> e.hi",
    ),
]


# -- outside systems --------------------------------------------------------------------------


def _no_double_refund_at_stripe(conn: psycopg.Connection[Any], stack: SoakStack) -> Check:
    """Refunds at localstripe per PaymentIntent: one per refund id, their sum within the charge."""
    rows = conn.execute(
        "SELECT id, provider_payment_id, amount, refunded_amount, held_by_refund FROM payments "
        "WHERE provider = 'stripe' AND provider_payment_id IS NOT NULL"
    ).fetchall()
    bad: list[str] = []
    upstream = stack.stripe.upstream
    for payment_id, intent, amount, refunded, held in rows:
        listing = _stripe_get(f"{upstream}/v1/refunds?payment_intent={intent}&limit=100")
        done = [r for r in listing["data"] if r.get("status") == "succeeded"]
        keys = Counter((r.get("metadata") or {}).get("refund_id") for r in done)
        total = sum(int(r["amount"]) for r in done)
        if (
            any(n > 1 for n in keys.values())
            or total > amount
            or (held is None and total != refunded)
        ):
            bad.append(f"{payment_id} (stripe {total}, ours {refunded}, keys {dict(keys)})")
    return Check(
        f"double refunds or refund drift at Stripe ({len(rows)} payments)", len(bad), "0",
        not bad, "; ".join(bad[:5]),
    )  # fmt: skip


def _stripe_get(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def _no_orphan_objects(conn: psycopg.Connection[Any], stack: SoakStack) -> Check:
    """Objects in the bucket vs records: none without a live record, none AVAILABLE missing."""
    client: Any = stack.weed.client()
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{S3_PREFIX}apps/"
    ):
        keys |= {item["Key"].removeprefix(S3_PREFIX) for item in page.get("Contents", [])}
    live = dict(
        conn.execute(
            "SELECT object_key, status FROM applications "
            "WHERE status IN ('AVAILABLE', 'UPLOADING', 'DELETING')"
        ).fetchall()
    )
    orphans = sorted(keys - set(live))
    missing = sorted(k for k, status in live.items() if status == "AVAILABLE" and k not in keys)
    return Check(
        f"objects without a record + AVAILABLE records without an object ({len(keys)} objects)",
        f"{len(orphans)} + {len(missing)}", "0 + 0", not orphans and not missing,
        ", ".join((orphans + missing)[:5]),
    )  # fmt: skip


def _no_orphan_device_processes(conn: psycopg.Connection[Any], stack: SoakStack) -> Check:
    """Agent processes and runtime records of the local runtime all belong to live devices."""
    live = conn.execute(
        "SELECT container_name, container_id, status FROM devices WHERE status = ANY(%s)",
        (list(LIVE_DEVICE),),
    ).fetchall()
    names = {name for name, _, _ in live}
    tokens = {token for _, token, _ in live}
    runtime = stack.runtime
    stray = [f"pid {a.pid} ({a.name})" for a in runtime.scan() if a.token not in tokens]
    records = [
        path.stem
        for path in runtime.state_dir.glob("*.json")
        if not path.name.startswith(".") and path.stem not in names
    ]
    running = {a.token for a in runtime.scan()}
    dead = [name for name, token, status in live if status == "RUNNING" and token not in running]
    return Check(
        f"device processes + containers without a device, RUNNING without a process "
        f"({len(live)} live)",
        f"{len(stray)} + {len(records)}, {len(dead)}", "0 + 0, 0",
        not stray and not records and not dead, ", ".join((stray + records + dead)[:5]),
    )  # fmt: skip


def _reconcile_clean(stack: SoakStack) -> Check:
    """The product's ``cloudphone apps reconcile --json`` (no --fix) finds nothing."""
    result = subprocess.run(
        [sys.executable, "-m", "cloudphone", "apps", "reconcile", "--json"],
        env=stack.env, cwd=stack.workdir, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        return Check("cloudphone apps reconcile", "error", "clean", False, result.stderr[-500:])
    drift = {k: len(v) for k, v in report.items() if isinstance(v, list) and v}
    return Check(
        "cloudphone apps reconcile findings", sum(drift.values()), "0", not drift, str(drift)
    )


def _processes_alive(stack: SoakStack) -> Check:
    dead = [str(p.args) for p in stack.processes if not p.alive]
    return Check(
        f"API and {len(stack.workers)} workers alive", len(stack.processes) - len(dead),
        str(len(stack.processes)), not dead, ", ".join(dead),
    )  # fmt: skip


def _readyz(stack: SoakStack) -> Check:
    import httpx

    status = httpx.get(f"{stack.base_url}/readyz", timeout=5).status_code
    after = stack.readyz_after_postgres
    slowest = max(after, default=float("nan"))
    ok = status == 200 and bool(after) and slowest <= READYZ_WITHIN
    return Check(
        "/readyz now, and seconds to green after PostgreSQL came back",
        f"{status}, {slowest:.2f}s", f"200, <= {READYZ_WITHIN:.0f}s", ok,
    )  # fmt: skip
