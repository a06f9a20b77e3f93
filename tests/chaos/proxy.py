"""A TCP proxy per agent in front of RabbitMQ and Redis, so a fault can cut one agent off
from the servers while everything else (its ComfyUI, the other agents, the studio) goes on.

:meth:`Proxy.cut` closes every connection through it and refuses new ones (closed as soon
as they are accepted), as a network partition does once TCP notices it; :meth:`Proxy.heal`
lets connections through again. One thread accepts per listening port, and two threads
pump each connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Proxy:
    """Listens on a free port of 127.0.0.1 for each named target port."""

    def __init__(self, targets: dict[str, int]) -> None:
        self._lock = threading.Lock()
        self._cut = False
        self._closed = False
        self._sockets: set[socket.socket] = set()
        self._listeners: dict[str, socket.socket] = {}
        for name, target in targets.items():
            listener = socket.create_server(("127.0.0.1", 0))
            self._listeners[name] = listener
            threading.Thread(target=self._accept, args=(listener, target), name=f"proxy-{name}", daemon=True).start()

    def port(self, name: str) -> int:
        return self._listeners[name].getsockname()[1]

    def cut(self) -> None:
        """The partition: every open connection is closed, new ones are refused."""
        with self._lock:
            self._cut = True
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _close(sock)

    def heal(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.cut()
        for listener in self._listeners.values():
            _close(listener)

    def _accept(self, listener: socket.socket, target: int) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                refused = self._cut or self._closed
            if refused:
                _close(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", target), timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._cut:
                    _close(client)
                    _close(server)
                    continue
                self._sockets |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), name="proxy-pump", daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets -= {source, sink}
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
