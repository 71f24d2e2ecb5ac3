"""Run localstripe on a chosen host (default 127.0.0.1) with state in memory only.

The stock ``localstripe`` CLI binds every interface (``[::]``) and pickles its whole store to
the shared ``/tmp/localstripe.pickle`` after every write. This runner reuses localstripe's
aiohttp app unchanged but binds ``--host``/``--port`` and turns the pickling off, so test runs
never listen beyond loopback nor clobber each other's state.

It also teaches localstripe one filter real Stripe has: ``GET /v1/payment_intents?created[gte]=``
(and ``gt``/``lt``/``lte``), which the Stripe adapter's payment lookup sends.

Usage::

    python -m tests.support.billing_localstripe_server --port 18420 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web
from localstripe import resources  # type: ignore[import-untyped]  # no py.typed
from localstripe.server import app  # type: ignore[import-untyped]

_COMPARE = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _intents_by_creation() -> None:
    """Let ``PaymentIntent`` listings filter on ``created`` like Stripe's."""
    intent = resources.PaymentIntent
    list_all = intent._api_list_all.__func__

    def filtered(cls: Any, url: str, created: dict[str, str] | None = None, **kwargs: Any) -> Any:
        listing = list_all(cls, url, **kwargs)
        for op, bound in (created or {}).items():
            keep = _COMPARE[op]
            listing._list = [i for i in listing._list if keep(i.created, int(bound))]
        return listing

    intent._api_list_all = classmethod(filtered)


def main() -> None:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    resources.Store.dump_to_disk = lambda self: None
    resources.Store.try_load_from_disk = lambda self: None
    _intents_by_creation()
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
