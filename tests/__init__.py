"""Shared test settings."""

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: The project's read-only data (``../shared/data`` beside the checkout); ``$METARL_SHARED_DATA``
#: points elsewhere, e.g. when CI clones the repository into another folder.
SHARED_DATA = Path(os.environ.get("METARL_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")

#: Set (``.ci/run`` does) to make a missing shared data file a failure instead of a skip, so the
#: real-data tests cannot pass CI by not running.
REQUIRE_ENV = "METARL_REQUIRE_SHARED_DATA"


def require_shared(path: Path) -> Path:
    """``path`` if it exists; else skip the test, or fail it when ``$METARL_REQUIRE_SHARED_DATA`` is set."""
    if path.exists():
        return path
    msg = f"shared data {path} is absent (point $METARL_SHARED_DATA at the folder holding it)"
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{msg}; ${REQUIRE_ENV} is set, so it must be there", pytrace=False)
    pytest.skip(msg)


def needs_shared(path: Path) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form of :func:`require_shared` for a test function."""

    def decorate(test: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> Any:
            require_shared(path)
            return test(*args, **kwargs)

        return run

    return decorate


@contextlib.contextmanager
def serving(folder: Path, fail_first: int = 0) -> Iterator[str]:
    """Serve ``folder`` on loopback HTTP for the block (yields the URL, ending in ``/``); the first
    ``fail_first`` requests are answered 503, as a flaky server would."""
    failures = [fail_first]

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if failures[0] > 0:
                failures[0] -= 1
                self.send_error(503, "try again")
                return
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
