"""The business views' pure parts: money and sizes, list filters, links, reconcile's rule."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cloudphone.apps.models import Application, AppStatus
from cloudphone.billing.models import PaymentStatus, Refund, RefundStatus
from cloudphone.console.apps import ACTIONS, AppFilters
from cloudphone.console.billing import reconcilable
from cloudphone.console.links import page_of, resource_links
from cloudphone.console.listing import ListFilters
from cloudphone.console.rendering import money, size, tone
from cloudphone.saga import SagaStatus
from tests.unit.console.test_plan import run

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def test_amounts_read_in_the_currencys_own_units() -> None:
    """Cents for EUR, whole yen, thousandths of a dinar; thousands separated; sign kept."""
    assert money(1050, "EUR") == "10.50 EUR"
    assert money(123_456_789, "USD") == "1,234,567.89 USD"
    assert money(5, "EUR") == "0.05 EUR"
    assert money(500, "JPY") == "500 JPY"
    assert money(1234, "KWD") == "1.234 KWD"
    assert money(-250, "EUR") == "-2.50 EUR"
    assert money(None, "EUR") == "—"


def test_sizes_read_in_binary_units() -> None:
    """Bytes below a KiB, then one decimal."""
    assert size(812) == "812 B"
    assert size(1536) == "1.5 KiB"
    assert size(5 * 2**20) == "5.0 MiB"
    assert size(3 * 2**30) == "3.0 GiB"
    assert size(None) == "—"


def test_business_statuses_have_tones_and_saga_ones_keep_theirs() -> None:
    """NEEDS_ATTENTION is bad, SUCCESS ok; saga statuses unchanged; unknown ones neutral."""
    assert tone(RefundStatus.NEEDS_ATTENTION) == "bad"
    assert tone(PaymentStatus.SUCCESS) == "ok"
    assert tone("FAILED") == "bad"
    assert tone("RUNNING") == "info"
    assert tone("SOMETHING_ELSE") == "neutral"


def test_billing_filters_parse_keep_a_parent_and_report_bad_values() -> None:
    """Status in the list's enum, time window, user for admins only, the parent id kept."""
    query = {
        "status": "needs_attention",
        "range": "1h",
        "after": "2030-01-01T11:30",
        "user": "bob",
        "payment_id": "p-1",
        "offset": "50",
    }
    filters = ListFilters.parse(query, admin=True, statuses=RefundStatus, parent="payment_id")
    assert filters.status == "NEEDS_ATTENTION"
    assert filters.parent_id("payment_id") == "p-1"
    assert filters.parent_id("order_id") is None
    listing = filters.listing(NOW)
    assert listing.created_after == datetime(2030, 1, 1, 11, 30, tzinfo=UTC)
    assert (listing.user_id, listing.limit, listing.offset) == ("bob", 51, 50)
    assert "payment_id=p-1" in filters.query_string(offset="")
    assert "offset" not in filters.query_string(offset="")
    user = ListFilters.parse(query, admin=False, statuses=RefundStatus, parent="payment_id")
    assert (user.user, user.listing(NOW).user_id) == ("", None)
    bad = ListFilters.parse({"status": "PAID", "range": "2y"}, admin=True, statuses=RefundStatus)
    assert bad.status == ""
    assert len(bad.problems) == 2
    assert not ListFilters().active


def test_app_filters_refuse_scope_all_to_users() -> None:
    """Scope ``all`` is an admin's; a user asking for it gets a message and the default."""
    assert AppFilters.parse({"scope": "all"}, admin=True).scope == "all"
    refused = AppFilters.parse({"scope": "all"}, admin=False)
    assert refused.scope == ""
    assert "admin role" in refused.problems[0]
    parsed = AppFilters.parse(
        {"scope": "Catalog", "status": "available", "latest": "1"}, admin=False
    )
    assert (parsed.scope, parsed.status, parsed.latest) == ("catalog", "AVAILABLE", True)
    assert parsed.query_string() == "scope=catalog&status=AVAILABLE&latest=1"
    assert len(AppFilters.parse({"scope": "x", "status": "y"}, admin=True).problems) == 2


def test_every_business_id_in_saga_data_links_to_its_page() -> None:
    """Payment, refund, app and device pages; an order its payments; ids are escaped."""
    data = {
        "payment_id": "p1",
        "refund_id": "r/1",
        "order_id": "o1",
        "app_id": "a1",
        "device_id": "d1",
        "other": "x",
    }
    links = {link.kind: (link.path, link.has_page) for link in resource_links(data)}
    assert links == {
        "device": ("/devices/d1", True),
        "payment": ("/payments/p1", True),
        "refund": ("/refunds/r%2F1", True),
        "order": ("/payments?order_id=o1", True),
        "app": ("/apps/a1", True),
    }
    assert page_of("saga", "s1") is None


def test_reconcile_applies_to_a_held_refund_whose_saga_failed() -> None:
    """NEEDS_ATTENTION (or still PENDING) with a FAILED saga: yes; settled or still running: no."""
    refund = Refund(
        id="r",
        payment_id="p",
        user_id="u",
        amount=1,
        currency="EUR",
        reason=None,
        status=RefundStatus.NEEDS_ATTENTION,
        saga_id="s",
        provider_refund_id=None,
        failure_reason=None,
        created_at=NOW,
        updated_at=NOW,
    )
    failed = run(SagaStatus.FAILED, "CALL_PROVIDER_REFUND", {})
    assert reconcilable(refund, failed)
    assert reconcilable(replace(refund, status=RefundStatus.PENDING), failed)
    assert not reconcilable(replace(refund, status=RefundStatus.FAILED), failed)
    assert not reconcilable(refund, replace(failed, status=SagaStatus.RUNNING))
    assert not reconcilable(refund, None)


def test_publish_and_unpublish_apply_to_the_right_versions() -> None:
    """Publish an AVAILABLE private version; unpublish a published one."""
    publish, unpublish = ACTIONS["publish"].applies, ACTIONS["unpublish"].applies
    available = _app(status="AVAILABLE", published_at=None)
    published = _app(status="AVAILABLE", published_at=NOW - timedelta(hours=1))
    assert publish(available)
    assert not publish(published)
    assert not publish(_app(status="DELETED", published_at=None))
    assert unpublish(published)
    assert not unpublish(available)


def _app(*, status: str, published_at: datetime | None) -> Application:
    return Application(
        id="a",
        package_name="com.example",
        version_code=1,
        version_name="1",
        label=None,
        min_sdk=None,
        target_sdk=None,
        permissions=(),
        size=1,
        sha256="0" * 64,
        object_key="k",
        status=AppStatus(status),
        is_latest=False,
        uploaded_by="u",
        description=None,
        saga_id="s",
        failure_reason=None,
        created_at=NOW,
        updated_at=NOW,
        published_at=published_at,
        published_by="root" if published_at else None,
    )
