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
  copy buttons, relative times, charts, and pausing polls while the tab is hidden.

Every asset is a file under ``static/``; ``static/vendor/VENDORED.md`` lists each vendored
file with its package, version, licence and checksum. Nothing loads from another origin.

Security: ``/ui/login`` takes a bearer token (form field ``token``, POSTed) and sets a signed,
HttpOnly, SameSite=Strict session cookie (Secure over https) that expires with the token;
``/ui/logout`` clears it. Every state-changing request carries the session's CSRF token
(form field ``csrf_token`` or header ``X-CSRF-Token``), checked by the server. Users see only
their own runs and resources; admin actions are checked by the server and not shown to users.
Every answer carries a Content-Security-Policy allowing only the console's own assets.

Test contract (stable; for tests and operators' own automation):

* each saga row (list, needs-attention queue): ``data-saga-id`` and ``data-status``; the
  saga page's live part carries both too;
* each action button: ``data-action`` = ``retry`` | ``retry-forward`` | ``cancel`` |
  ``resolve``; it opens a ``<dialog data-confirm-dialog=…>`` whose submit button has
  ``data-confirm`` = the same name; the outcome is ``[data-result="ok"|"error"]``;
* each timeline event: ``data-event-kind`` (the engine's event kind) and ``data-seq``;
  operator notes ``[data-note]``;
* the overview's count per status: ``data-count-status="FAILED"`` (etc.) with the number in
  ``data-count``; per type ``data-count-type`` + ``data-count-type-status``;
* step plan rows: ``data-step`` and ``data-step-state``; device rows: ``data-device-id`` and
  ``data-status``; empty states: ``data-empty``.

Seams left for later: the payments/refunds and apps pages (:mod:`.links`, ``ROUTERS`` in
:mod:`.app`), refunds in NEEDS_ATTENTION and runs on an unknown saga version in the
needs-attention queue (:class:`.overview.Attention`), and ``fork`` (:mod:`.actions`).
"""

from cloudphone.console.app import create_console

__all__ = ["create_console"]
