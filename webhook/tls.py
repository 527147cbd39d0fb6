"""TLS for the webhook: a server SSLContext whose certificate and key are re-read when the files change.

cert-manager and kubelet rotate a Secret by swapping the mounted files; the webhook must serve the
new pair without a restart. The listening context carries an SNI callback, which OpenSSL calls on
every ClientHello (with or without SNI). It stats both files and, when they changed, builds a fresh
context from them; the handshake then switches to the newest context. A pair that does not load
(half written, cert and key not matching yet) keeps the last good one and is retried when the files
change again. All of this runs on the event loop thread, so no lock is needed.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("gpupack.webhook.tls")

Signature = tuple[tuple[int, int, int], tuple[int, int, int]]
ALPN = ["http/1.1"]  # uvicorn's h11/httptools speak HTTP/1.1 only


def _stat(p: Path) -> tuple[int, int, int]:
    st = os.stat(p)  # follows the ..data symlink of a mounted Secret to the current file
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context for one certificate chain and key (TLS 1.2+); ssl.SSLError if they do not load."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(ALPN)
    return ctx


class CertReloader:
    """Owns the listening SSLContext (`context`) and swaps in a new certificate when the files change."""

    def __init__(self, cert: Path, key: Path, on_reload: Callable[[bool], None] | None = None) -> None:
        self._cert, self._key = Path(cert), Path(key)
        self._on_reload = on_reload
        self._sig = self._signature()
        self.context = server_context(self._cert, self._key)  # a bad pair fails at start-up, not per request
        self.context.sni_callback = self._on_hello
        self._current = self.context
        self._failed: Signature | None = None
        self.reloads = 0

    def _signature(self) -> Signature:
        return (_stat(self._cert), _stat(self._key))

    def current(self) -> ssl.SSLContext:
        """The context new handshakes get, after checking the files once."""
        self.check()
        return self._current

    def check(self) -> bool:
        """Re-read the pair if the files changed since the last good load; True when a new one was loaded."""
        try:
            sig = self._signature()
        except OSError as e:  # mid-swap: a file is briefly missing; keep serving the last good pair
            log.debug("certificate files not readable yet: %s", e)
            return False
        if sig == self._sig or sig == self._failed:
            return False
        try:
            ctx = server_context(self._cert, self._key)
        except (ssl.SSLError, OSError) as e:
            self._failed = sig
            log.warning("new certificate pair does not load yet (%s); still serving the previous one", e)
            if self._on_reload:
                self._on_reload(False)
            return False
        self._current, self._sig, self._failed = ctx, sig, None
        self.reloads += 1
        log.info("reloaded TLS certificate from %s", self._cert)
        if self._on_reload:
            self._on_reload(True)
        return True

    def _on_hello(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext) -> None:
        new = self.current()
        if new is not ctx:
            sslobj.context = new
