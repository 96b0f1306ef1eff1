"""``gradlens watch RUN.h5 --port N``: serve the watch page on localhost while training writes the run.

One small server, the standard library's :class:`http.server.ThreadingHTTPServer`, bound to 127.0.0.1 unless
told otherwise. Two addresses:

- ``/``: the page (:mod:`gradlens.watch.page`), which asks for new points every ``every`` seconds;
- ``/data?since=STEP``: JSON (:func:`gradlens.watch.verdict.answer`): the summary points of every record
  with ``step > STEP`` (all without ``since``), the run's status and last flush, the live doctor's findings
  and the last post-hoc diagnosis with the headline. Before the run file exists: ``{"status": "waiting"}``.

Each request reads the file afresh through the loader's SWMR path (committed rows only). The post-hoc doctor
runs in a background thread, again after each new flush (:class:`gradlens.watch.verdict.DoctorThread`).
SIGINT (Ctrl-C) or SIGTERM stops the server cleanly: the socket is closed and :func:`serve` returns 0.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from gradlens.watch.files import DEFAULT_EVERY, DEFAULT_STALE, check_watch_args, open_run, print_line
from gradlens.watch.page import page_html
from gradlens.watch.verdict import DoctorThread, answer

DEFAULT_HOST = "127.0.0.1"


class WatchServer(ThreadingHTTPServer):
    """The HTTP server of one watched run: ``path``, the page's poll interval ``every``, ``stale`` seconds,
    and the background doctor."""

    # Requests run in threads the server joins when it closes: a thread still inside HDF5 while the interpreter
    # exits can crash it (seen: SIGSEGV at Ctrl-C under load). A connection that sends nothing (a browser's
    # preconnect) ends after the handler's ``timeout``, so closing waits at most that long.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], path: str, every: float, stale: float) -> None:
        super().__init__(address, WatchHandler)
        self.path = path
        self.every = every
        self.stale = stale
        self.doctor = DoctorThread(path)
        self._seen_flush: float | None = None
        self._lock = threading.Lock()

    def data(self, since: int | None) -> dict:
        """The answer to ``/data?since=``: a waiting note before the file exists, else :func:`answer`."""
        run = open_run(self.path)
        if run is None:
            return {"status": "waiting", "path": self.path,
                    "message": f"waiting for {self.path} (the recorder creates it at the first optimizer step)"}
        flushed = run.last_flush
        with self._lock:
            if flushed != self._seen_flush:
                self._seen_flush = flushed
                self.doctor.poke()
        return answer(run, since, self.doctor.latest(), self.stale)


class WatchHandler(BaseHTTPRequestHandler):
    """``/`` (the page) and ``/data?since=STEP`` (JSON); anything else is 404."""

    server: WatchServer
    timeout = 2  # seconds a connection may stay silent (socket timeout), so that closing never waits longer

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            title = os.path.basename(self.server.path)
            self._send(200, "text/html; charset=utf-8", page_html(title, self.server.every))
        elif url.path == "/data":
            values = parse_qs(url.query).get("since", [""])
            try:
                since = int(values[-1]) if values[-1] else None
            except ValueError:
                self._send(400, "text/plain; charset=utf-8", f"since={values[-1]!r} is not a step number (an integer)")
                return
            try:
                body = json.dumps(self.server.data(since), allow_nan=False)
            except Exception as error:  # one line to the page; the server goes on
                self._send(500, "text/plain; charset=utf-8", f"{type(error).__name__}: {error}".splitlines()[0])
                return
            self._send(200, "application/json", body)
        else:
            self._send(404, "text/plain; charset=utf-8", f"no page {url.path!r}: the watch page is at /")

    def _send(self, code: int, kind: str, text: str) -> None:
        body = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        """Requests are not logged (the page asks every second)."""


def check_port(port: int) -> int:
    """``port`` as an int in 0..65535 (0: any free port), else a one-line ValueError."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"watch --port must be an integer from 0 to 65535 (0: any free port), got {port!r}")
    return port


def serve(
    path: str | os.PathLike,
    port: int,
    host: str = DEFAULT_HOST,
    every: float = DEFAULT_EVERY,
    stale: float = DEFAULT_STALE,
    timeout: float | None = None,
    say: Callable[[str], None] = print_line,
) -> int:
    """Serve the watch page of the run at ``path`` on ``http://host:port/`` until SIGINT/SIGTERM or ``timeout``
    seconds; returns 0.

    Args:
        path: the run file (it may not exist yet).
        port: the TCP port; 0 picks a free one (the line said names it).
        host: the address to bind (default 127.0.0.1: this machine only).
        every: seconds between the page's requests for new points.
        stale: a running file without a flush for this many seconds is shown as stopped.
        timeout: stop after this many seconds (None: until interrupted).
        say: where the address and the stop line go.

    Raises:
        ValueError: a bad ``port``, ``every`` or ``stale``, or the address cannot be bound (in use, no such host).
    """
    check_watch_args(every, stale)
    check_port(port)
    path = os.fspath(path)
    try:
        server = WatchServer((host, port), path, every, stale)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(
            f"cannot serve on {host}:{port}: {reason} (another --port, or --port 0 for a free one)"
        ) from None
    bound_host, bound_port = server.server_address[:2]
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    if previous is not None:
        signal.signal(signal.SIGTERM, _interrupt)
    if timeout is not None:
        timer = threading.Timer(timeout, server.shutdown)
        timer.daemon = True
        timer.start()
    say(f"watching {path} at http://{bound_host}:{bound_port}/ (Ctrl-C stops)")
    started = time.monotonic()
    try:
        server.serve_forever(poll_interval=0.2)
        say(f"stopped after {time.monotonic() - started:.0f} s (--timeout)")
    except KeyboardInterrupt:
        say("stopped (interrupted); the port is free")
    finally:
        server.server_close()
        server.doctor.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
