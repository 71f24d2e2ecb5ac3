"""The console's payments, refunds and orders over a real platform: lists, pages, reconcile."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta

from cloudphone.billing.config import SandboxConfig
from cloudphone.billing.models import Payment, PaymentStatus, Refund
from cloudphone.billing.providers.sandbox import SandboxProvider
from cloudphone.domain import Principal, Role, UnavailableError
from cloudphone.platform import Platform
from cloudphone.saga import SagaStatus
from tests.integration.console.conftest import Browser
from tests.support.console import elements
from tests.support.waiting import eventually


def sandbox(platform: Platform) -> SandboxProvider:
    """The platform's sandbox payment provider (its fault knobs can be changed at any time)."""
    provider = platform.billing.providers["sandbox"]
    assert isinstance(provider, SandboxProvider)
    return provider


async def paid(platform: Platform, user: str, amount: int = 5000, currency: str = "EUR") -> Payment:
    """An order of ``user`` paid at the sandbox."""
    who = Principal(user)
    order = await platform.billing.create_order(
        who, amount=amount, currency=currency, description=f"plan for {user}"
    )
    return await platform.billing.pay_order(who, order.id)


async def refund(platform: Platform, payment: Payment, amount: int) -> Refund:
    """Refund ``amount`` of the payment as its owner and wait until the saga has ended."""
    who = Principal(payment.user_id)
    requested = await platform.billing.request_refund(who, payment.id, amount=amount)
    await platform.engine.wait(requested.saga_id, timeout=timedelta(seconds=20))
    return await platform.billing.get_refund(who, requested.refund.id)


async def stuck_refund(platform: Platform, user: str) -> Refund:
    """A refund in NEEDS_ATTENTION: the provider never answered while its saga ran."""
    payment = await paid(platform, user)
    sandbox(platform).faults = SandboxConfig(error_rate=1.0)
    try:
        stuck = await refund(platform, payment, 2000)
    finally:
        sandbox(platform).faults = SandboxConfig()
    assert stuck.status == "NEEDS_ATTENTION"
    return stuck


def rows(html: str, attribute: str) -> dict[str, str]:
    """``attribute`` → ``data-status`` of every table row carrying it."""
    return {
        str(e.attrs[attribute]): str(e.attrs["data-status"])
        for e in elements(html, attribute)
        if e.tag == "tr"
    }


async def test_users_see_only_their_own_payments_and_refunds(
    platform: Platform, browser: Browser
) -> None:
    """Alice's lists hold hers; Bob's pages are 404s for her; an admin sees all, or one user's."""
    first = await paid(platform, "alice", 5000)
    second = await paid(platform, "alice", 250, "JPY")
    bobs = await paid(platform, "bob", 1999)
    alices_refund = await refund(platform, first, 1000)
    bobs_refund = await refund(platform, bobs, 1999)
    alice, _ = await browser("alice")
    page = (await alice.get("/ui/payments")).text
    assert rows(page, "data-payment-id") == {
        first.id: "PARTIALLY_REFUNDED",
        second.id: "SUCCESS",
    }
    assert "50.00 EUR" in page
    assert "250 JPY" in page
    assert rows((await alice.get("/ui/refunds")).text, "data-refund-id") == {
        alices_refund.id: "SUCCEEDED"
    }
    assert (await alice.get(f"/ui/payments/{bobs.id}")).status_code == 404
    assert (await alice.get(f"/ui/refunds/{bobs_refund.id}")).status_code == 404
    ignored = await alice.get("/ui/payments", params={"user": "bob"})
    assert set(rows(ignored.text, "data-payment-id")) == {first.id, second.id}
    admin, _ = await browser("root", Role.ADMIN)
    everyone = (await admin.get("/ui/payments")).text
    assert set(rows(everyone, "data-payment-id")) == {first.id, second.id, bobs.id}
    only_bob = await admin.get("/ui/payments", params={"user": "bob"})
    assert set(rows(only_bob.text, "data-payment-id")) == {bobs.id}
    refunds = (await admin.get("/ui/refunds")).text
    assert set(rows(refunds, "data-refund-id")) == {alices_refund.id, bobs_refund.id}
    assert elements(refunds, "data-saga-link", bobs_refund.saga_id)
    assert elements(refunds, "data-payment-link", bobs.id)


async def test_the_lists_filter_by_status_time_and_parent(
    platform: Platform, browser: Browser
) -> None:
    """Status, time range and a payment's or an order's id narrow the rows; bad values say so."""
    whole = await paid(platform, "carol", 3000)
    kept = await paid(platform, "carol", 4000)
    done = await refund(platform, whole, 3000)
    admin, _ = await browser("root", Role.ADMIN)
    refunded = await admin.get("/ui/payments", params={"status": "REFUNDED"})
    assert rows(refunded.text, "data-payment-id") == {whole.id: "REFUNDED"}
    assert set(
        rows((await admin.get("/ui/payments", params={"range": "15m"})).text, "data-payment-id")
    ) == {whole.id, kept.id}
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    later = (await admin.get("/ui/payments", params={"after": future})).text
    assert rows(later, "data-payment-id") == {}
    assert elements(later, "data-empty", "payments")
    assert "match these filters" in later
    of_payment = await admin.get("/ui/refunds", params={"payment_id": kept.id})
    assert rows(of_payment.text, "data-refund-id") == {}
    assert elements(of_payment.text, "data-parent-filter", "payment_id")
    of_whole = await admin.get("/ui/refunds", params={"payment_id": whole.id})
    assert rows(of_whole.text, "data-refund-id") == {done.id: "SUCCEEDED"}
    of_order = await admin.get("/ui/payments", params={"order_id": kept.order_id})
    assert rows(of_order.text, "data-payment-id") == {kept.id: "SUCCESS"}
    orders = (await admin.get("/ui/orders", params={"status": "REFUNDED"})).text
    assert rows(orders, "data-order-id") == {whole.order_id: "REFUNDED"}
    bad = (await admin.get("/ui/refunds", params={"status": "lost", "after": "soon"})).text
    assert "unknown status" in bad
    assert "is not a date and time" in bad
    fragment = await admin.get("/ui/refunds", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<section id="billing-rows"')


async def test_the_payments_list_pages_like_the_sagas_list(
    platform: Platform, browser: Browser
) -> None:
    """51 payments make two pages; the second holds the oldest; newer leads back."""
    oldest = await paid(platform, "pager")
    for _ in range(50):
        await paid(platform, "pager", 100)
    admin, _ = await browser("root", Role.ADMIN)
    page = (await admin.get("/ui/payments", params={"user": "pager"})).text
    assert len(rows(page, "data-payment-id")) == 50
    assert oldest.id not in rows(page, "data-payment-id")
    older = elements(page, "data-page", "older")
    assert older
    second = (await admin.get(str(older[0].attrs["href"]))).text
    assert list(rows(second, "data-payment-id")) == [oldest.id]
    assert not elements(second, "data-page", "older")
    assert elements(second, "data-page", "newer")


async def test_a_payment_page_shows_its_order_its_refunds_and_what_is_left(
    platform: Platform, browser: Browser
) -> None:
    """Amounts with currency, the order's description, every refund with its saga."""
    payment = await paid(platform, "dora", 10_000)
    one = await refund(platform, payment, 2500)
    two = await refund(platform, payment, 500)
    dora, _ = await browser("dora")
    page = await dora.get(f"/ui/payments/{payment.id}")
    assert page.status_code == 200
    assert elements(page.text, "data-payment-id", payment.id)[0].attrs["data-status"] == (
        "PARTIALLY_REFUNDED"
    )
    assert elements(page.text, "data-refunded", "3000")
    assert "70.00 EUR left" in page.text
    assert "plan for dora" in page.text
    assert list(rows(page.text, "data-refund-id")) == [two.id, one.id]
    assert elements(page.text, "data-saga-link", one.saga_id)
    live = await dora.get(f"/ui/payments/{payment.id}", headers={"HX-Request": "true"})
    assert live.text.lstrip().startswith('<div id="payment-live"')
    untouched = await paid(platform, "dora")
    lonely = (await dora.get(f"/ui/payments/{untouched.id}")).text
    assert elements(lonely, "data-empty", "refunds")


async def test_an_admin_reconciles_a_refund_that_needs_attention(
    platform: Platform, browser: Browser
) -> None:
    """The button, confirmed and CSRF-checked, records the provider's answer in place."""
    stuck = await stuck_refund(platform, "erin")
    admin, csrf = await browser("root", Role.ADMIN)
    page = (await admin.get(f"/ui/refunds/{stuck.id}")).text
    assert elements(page, "data-refund-id", stuck.id)[0].attrs["data-status"] == "NEEDS_ATTENTION"
    assert elements(page, "data-needs-attention")
    assert elements(page, "data-action", "reconcile")
    assert elements(page, "data-confirm", "reconcile")
    forged = await admin.post(f"/ui/refunds/{stuck.id}/reconcile")
    assert forged.status_code == 403
    assert (await platform.billing.get_refund(Principal("erin"), stuck.id)).status == (
        "NEEDS_ATTENTION"
    )
    done = await admin.post(f"/ui/refunds/{stuck.id}/reconcile", headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200, done.text
    assert done.text.lstrip().startswith('<div id="refund-live"')
    assert elements(done.text, "data-result", "ok")
    assert "no money moved" in done.text
    assert elements(done.text, "data-refund-id", stuck.id)[0].attrs["data-status"] == "FAILED"
    assert not elements(done.text, "data-action", "reconcile")
    payment = await platform.billing.get_payment(Principal("erin"), stuck.payment_id)
    assert (payment.status, payment.held_by_refund) == (PaymentStatus.SUCCESS, None)
    run = await platform.engine.get(stuck.saga_id)
    assert run.resolution is not None
    assert elements(done.text, "data-resolution")


async def test_reconcile_is_hidden_from_users_and_refused_to_them(
    platform: Platform, browser: Browser
) -> None:
    """The owner sees the refund but no button; a POST of theirs is a 403 and changes nothing."""
    stuck = await stuck_refund(platform, "fred")
    fred, csrf = await browser("fred")
    page = await fred.get(f"/ui/refunds/{stuck.id}")
    assert page.status_code == 200
    assert elements(page.text, "data-needs-attention")
    assert not elements(page.text, "data-action")
    assert not elements(page.text, "data-confirm")
    refused = await fred.post(f"/ui/refunds/{stuck.id}/reconcile", data={"csrf_token": csrf})
    assert refused.status_code == 403
    assert (await platform.billing.get_refund(Principal("fred"), stuck.id)).status == (
        "NEEDS_ATTENTION"
    )


async def test_a_refused_or_unanswered_reconcile_says_why_in_place(
    platform: Platform, browser: Browser
) -> None:
    """A settled refund's reconcile is a 409 with the reason; a silent provider a 503 with it."""
    payment = await paid(platform, "gina")
    settled = await refund(platform, payment, 100)
    admin, csrf = await browser("root", Role.ADMIN)
    page = (await admin.get(f"/ui/refunds/{settled.id}")).text
    assert elements(page, "data-empty", "actions")
    refused = await admin.post(
        f"/ui/refunds/{settled.id}/reconcile", headers={"X-CSRF-Token": csrf}
    )
    assert refused.status_code == 409
    assert elements(refused.text, "data-result", "error")
    assert "only a FAILED saga" in refused.text
    stuck = await stuck_refund(platform, "gina")
    sandbox(platform).faults = SandboxConfig(error_rate=1.0)
    silent = await admin.post(f"/ui/refunds/{stuck.id}/reconcile", headers={"X-CSRF-Token": csrf})
    assert silent.status_code == 503
    assert elements(silent.text, "data-result", "error")
    assert "the provider did not answer" in silent.text
    assert elements(silent.text, "data-refund-id", stuck.id)[0].attrs["data-status"] == (
        "NEEDS_ATTENTION"
    )
    unknown = await admin.post(
        "/ui/refunds/no-such-refund/reconcile", headers={"X-CSRF-Token": csrf}
    )
    assert unknown.status_code == 404


async def test_the_overview_queues_refunds_and_stuck_payments(
    platform: Platform, browser: Browser
) -> None:
    """NEEDS_ATTENTION refunds and payments PENDING past the reconcile age, linked, per user."""
    stuck = await stuck_refund(platform, "hank")
    sandbox(platform).faults = SandboxConfig(error_rate=1.0)
    order = await platform.billing.create_order(
        Principal("hank"), amount=700, currency="EUR", description="lost answer"
    )
    with contextlib.suppress(UnavailableError):  # the answer was lost: it stays PENDING
        await platform.billing.pay_order(Principal("hank"), order.id)
    rounds = await eventually(
        platform.billing.reconcile_payments, bool, timeout=10, what="the payment to be stale"
    )
    sandbox(platform).faults = SandboxConfig()
    (pending,) = rounds
    admin, _ = await browser("root", Role.ADMIN)
    overview = (await admin.get("/ui/")).text
    queued = elements(overview, "data-refund-id", stuck.id)
    assert queued
    assert queued[0].attrs["data-status"] == "NEEDS_ATTENTION"
    assert f'href="/ui/refunds/{stuck.id}"' in overview
    assert elements(overview, "data-payment-id", pending.payment_id)
    assert f'href="/ui/payments/{pending.payment_id}"' in overview
    assert re.search(r"data-reconcile-note>[^<]*no answer", overview)
    hank, _ = await browser("hank")
    assert elements((await hank.get("/ui/")).text, "data-refund-id", stuck.id)
    other, _ = await browser("ivy")
    theirs = (await other.get("/ui/")).text
    assert not elements(theirs, "data-refund-id")
    assert not elements(theirs, "data-payment-id")
    assert elements(theirs, "data-empty", "attention")


async def test_empty_billing_lists_say_so(browser: Browser) -> None:
    """Nothing paid yet: each list shows its empty state, not an empty table."""
    admin, _ = await browser("root", Role.ADMIN)
    for name in ("payments", "refunds", "orders"):
        page = (await admin.get(f"/ui/{name}")).text
        assert elements(page, "data-empty", name), name
        assert elements(page, "data-tab", name)[0].attrs.get("aria-current") == "page"


async def test_saga_links_and_the_search_land_on_the_billing_pages(
    platform: Platform, browser: Browser
) -> None:
    """A refund's saga links to its refund, payment and order; searching an id links its page."""
    payment = await paid(platform, "jill")
    done = await refund(platform, payment, 100)
    jill, _ = await browser("jill")
    saga = (await jill.get(f"/ui/sagas/{done.saga_id}")).text
    links = {e.attrs["data-resource"]: e.attrs["href"] for e in elements(saga, "data-resource")}
    assert links == {
        "payment": f"/ui/payments/{payment.id}",
        "refund": f"/ui/refunds/{done.id}",
        "order": f"/ui/payments?order_id={payment.order_id}",
    }
    found = (await jill.get("/ui/sagas", params={"q": done.id})).text
    assert elements(found, "data-saga-id", done.saga_id)
    assert elements(found, "data-match-kind", "refund")[0].attrs["href"] == f"/ui/refunds/{done.id}"
    by_order = (await jill.get("/ui/sagas", params={"q": payment.order_id})).text
    assert elements(by_order, "data-saga-id", done.saga_id)
    assert elements(by_order, "data-match-kind", "order")
    untouched = await paid(platform, "jill")
    quiet = (await jill.get("/ui/sagas", params={"q": untouched.id})).text
    assert elements(quiet, "data-match-kind", "payment")[0].attrs["href"] == (
        f"/ui/payments/{untouched.id}"
    )
    assert elements(quiet, "data-empty", "sagas")
    assert "no saga yet" in quiet
    kim, _ = await browser("kim")
    assert not elements((await kim.get("/ui/sagas", params={"q": done.id})).text, "data-match-kind")
    assert (await platform.engine.get(done.saga_id)).status is SagaStatus.COMPLETED
