"""uvicorn's server as ``cloudphone serve`` runs it (imported only by that command)."""

from __future__ import annotations

from types import FrameType

import uvicorn


class GracefulServer(uvicorn.Server):
    """uvicorn's server, exiting 0 after a graceful shutdown on SIGTERM/SIGINT.

    uvicorn re-raises the signal once it has shut down, so the process would end "killed by
    SIGTERM"; like ``cloudphone worker``, a clean stop here exits 0.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Shut down gracefully, without re-raising the signal afterwards."""
        super().handle_exit(sig, frame)
        self._captured_signals.clear()
