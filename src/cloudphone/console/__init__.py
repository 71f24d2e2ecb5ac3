"""The operator console: every saga and resource in the browser, stuck ones fixed from there.

Served by ``cloudphone serve`` at ``/ui`` (mounted by :func:`cloudphone.api.app.create_app`:
same process, same bearer tokens). Like the API it talks to the platform's use cases (the
engine's ``list``/``get``/``history``/``stats`` and operator actions, the services' reads),
never to tables.

Why these parts:

* **Server-rendered Jinja2 templates** (Jinja2 3.1, a dependency of the package): the pages
  are tables, timelines and forms; rendering them where the data is keeps one source of truth
  (the use cases), needs no build step and no Node, and works with the keyboard by default.
* **htmx 2.0.11** (0BSD, 52 kB, vendored) for live refresh and in-place actions: it swaps
  server-rendered fragments (``hx-get`` polling, ``hx-post`` from the confirmation dialogs),
  runs without ``eval`` (``allowEval: false``) and needs no inline script, so the strict
  Content-Security-Policy holds. A single-page framework would need a build step and a JSON
  API of its own for the same pages.
* **uPlot 1.6.32** (MIT, 51 kB, vendored) for the two time-series charts: an order of
  magnitude smaller than Chart.js, canvas-based, and it styles through the CSSOM (no inline
  ``style`` attributes), which the CSP allows.
* One ``console.js`` (no framework) for what htmx does not do: confirmation ``<dialog>`` s,
  copy buttons, relative times, charts, pausing polls while the tab is hidden, and holding
  them while a confirmation is open or a field of the region has the focus.

Every asset is a file under ``static/``; ``static/vendor/VENDORED.md`` lists each vendored
file with its package, version, licence and checksum. Nothing loads from another origin.

Security: ``/ui/login`` takes a bearer token (form field ``token``, POSTed) and sets a signed,
HttpOnly, SameSite=Strict session cookie (Secure over https) that expires with the token;
``/ui/logout`` clears it. Every state-changing request carries the session's CSRF token
(form field ``csrf_token`` or header ``X-CSRF-Token``), checked by the server. Users see only
their own runs and resources; admin actions are checked by the server and not shown to users.
Every answer carries a Content-Security-Policy allowing only the console's own assets.

Pages: the overview (``/``), sagas (``/sagas``, ``/sagas/{id}``), billing (``/payments``,
``/refunds``, ``/orders``, ``/payments/{id}``, ``/refunds/{id}``), apps (``/apps``,
``/apps/{id}``, ``/apps/{id}/download``), devices and quotas. The business views read through
the services' use cases (billing's ``list_payments``/``list_all_refunds``/``list_orders`` and
reads, the apps service's ``list_apps``/``get_app``/``download``), whose visibility rules they
inherit: users see their own payments, refunds and uploads (and the apps catalog), admins
everyone's. Admin actions there reuse the services' admin use cases: billing's
``reconcile_refund`` (what ``POST /refunds/{id}/reconcile`` runs) and the apps service's
``publish_app``/``unpublish_app``.

Test contract (stable; for tests and operators' own automation):

* each saga row (list, needs-attention queue): ``data-saga-id`` and ``data-status``; the
  saga page's live part carries both too;
* each business row carries its id and ``data-status``: ``data-payment-id``,
  ``data-refund-id``, ``data-order-id``, ``data-app-id`` (apps also ``data-published`` =
  ``true`` | ``false``), in the lists, on the pages and in the needs-attention queue; the live
  part of a payment's, refund's and app's page (``#payment-live``, ``#refund-live``,
  ``#app-live``) carries them too;
* each action button: ``data-action`` = ``retry`` | ``retry-forward`` | ``cancel`` |
  ``resolve`` | ``fork`` (saga page), ``reconcile`` (refund page), ``publish`` | ``unpublish``
  (app page); it opens a ``<dialog data-confirm-dialog=…>`` whose submit button has
  ``data-confirm`` = the same name; the outcome is ``[data-result="ok"|"error"]``; the fork
  dialog's step is ``[data-step-choice]`` (a select), its force ``[data-force]``, and its
  result links to the new run (``[data-result-link]``);
* versions and forks: a run's version ``data-saga-version`` (list rows, saga page, queue),
  an active run no live worker can drive ``[data-orphaned]`` (saga page); the run it was
  forked from ``data-forked-from``, each of its forks ``data-fork`` (both = the run id);
* each timeline event: ``data-event-kind`` (the engine's event kind) and ``data-seq``;
  operator notes ``[data-note]``;
* the overview's count per status: ``data-count-status="FAILED"`` (etc.) with the number in
  ``data-count``; per type ``data-count-type`` + ``data-count-type-status``; the queue's
  blocks ``data-attention="refunds"`` | ``"payments"`` | ``"orphaned"`` (their counts in
  ``data-attention-refunds`` / ``data-attention-payments`` / ``data-attention-orphaned``);
* links to a resource's saga ``data-saga-link``, to a payment ``data-payment-link`` (both =
  the id); a download ``data-download`` (= the app id); an app list's package group
  ``data-package``, its latest version ``data-latest``; a search match with a page
  ``data-match-kind``; a payment's reconcile note ``[data-reconcile-note]``; a refund that
  needs an operator ``[data-needs-attention]``;
* step plan rows: ``data-step`` and ``data-step-state`` (``inherited``: a fork's step before
  the one it started from); device rows: ``data-device-id`` and
  ``data-status``; empty states: ``data-empty`` (``sagas``, ``payments``, ``refunds``,
  ``orders``, ``apps``, ``actions``, …).
"""

from cloudphone.console.app import create_console

__all__ = ["create_console"]
