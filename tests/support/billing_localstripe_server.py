"""Run localstripe on a chosen host (default 127.0.0.1) with state in memory only.

The stock ``localstripe`` CLI binds every interface (``[::]``) and pickles its whole store to
the shared ``/tmp/localstripe.pickle`` after every write. This runner reuses localstripe's
aiohttp app unchanged but binds ``--host``/``--port`` and turns the pickling off, so test runs
never listen beyond loopback nor clobber each other's state.

Usage::

    python -m tests.support.billing_localstripe_server --port 18420 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse

from aiohttp import web
from localstripe import resources  # type: ignore[import-untyped]  # no py.typed
from localstripe.server import app  # type: ignore[import-untyped]


def main() -> None:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    resources.Store.dump_to_disk = lambda self: None
    resources.Store.try_load_from_disk = lambda self: None
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
