"""A loopback TCP proxy that a test can cut and restore, to make a server "go away" for a while.

    proxy = TcpProxy(("127.0.0.1", 5432)).start()   # listens on 127.0.0.1:proxy.port
    proxy.cut()       # closes the listening socket and every open connection: clients get refused / reset
    proxy.restore()   # listens again on the same port; new connections reach the target again
    proxy.stop()

It can also start cut (``TcpProxy(target, listening=False)``): a port that refuses connections
until ``restore()``, e.g. a webhook receiver that comes up late.

The port is picked below the kernel's ephemeral range, so no outgoing connection of another
process can take it while the proxy is cut and ``restore()`` can bind it again.
"""
from __future__ import annotations

import contextlib
import errno
import random
import selectors
import socket
import struct
import threading

BUFFER = 64 * 1024


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low, high = (int(v) for v in fh.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def reserve_port(host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A port that is free now and that the kernel will not hand out to outgoing connections."""
    low, _ = _ephemeral_range()
    if low > 12_000:
        for _ in range(attempts):
            port = random.randint(10_000, low - 1)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class _Pipe:
    """One proxied connection: client <-> upstream, pumped by one thread."""

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client = client
        self.upstream = upstream
        self.thread = threading.Thread(target=self._pump, name="tcp-proxy-pipe", daemon=True)
        self._closed = threading.Event()

    def _pump(self) -> None:
        peers = {self.client: self.upstream, self.upstream: self.client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            try:
                while not self._closed.is_set():
                    for key, _ in selector.select(timeout=0.2):
                        data = key.fileobj.recv(BUFFER)
                        if not data:
                            return
                        peers[key.fileobj].sendall(data)
            except OSError:
                return
            finally:
                self.close()

    def close(self) -> None:
        """Reset both sides (SO_LINGER 0), as a dead host or a pulled cable would look to the client."""
        if self._closed.is_set():
            return
        self._closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1", port: int | None = None,
                 listening: bool = True):
        self.target = target
        self.host = host
        self.port = port or reserve_port(host)
        self._start_listening = listening
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stop_accepting = threading.Event()
        self._pipes: list[_Pipe] = []
        self.accepted = 0
        self.refused_upstream = 0

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def start(self) -> "TcpProxy":
        if self._start_listening:
            self.restore()
        return self

    def restore(self) -> None:
        """Listen (again) on the proxy's port."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind((self.host, self.port))
            except OSError:
                listener.close()
                raise
            listener.listen(128)
            listener.settimeout(0.05)
            self._listener = listener
            self._stop_accepting = threading.Event()
            self._acceptor = threading.Thread(target=self._accept_loop, args=(listener, self._stop_accepting),
                                              name="tcp-proxy-accept", daemon=True)
            self._acceptor.start()

    def cut(self) -> None:
        """Stop listening and reset every open connection; the port refuses connections until restore()."""
        with self._lock:
            listener, self._listener = self._listener, None
            acceptor, self._acceptor = self._acceptor, None
            pipes, self._pipes = self._pipes, []
            self._stop_accepting.set()
        if acceptor is not None:
            acceptor.join(5)
        if listener is not None:
            listener.close()
        for pipe in pipes:
            pipe.close()
        for pipe in pipes:
            pipe.thread.join(5)

    def stop(self) -> None:
        self.cut()

    @property
    def open_connections(self) -> int:
        with self._lock:
            self._pipes = [p for p in self._pipes if p.thread.is_alive()]
            return len(self._pipes)

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.EINVAL):
                    return
                continue
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                self.refused_upstream += 1
                client.close()
                continue
            pipe = _Pipe(client, upstream)
            with self._lock:
                if stop.is_set():  # cut while this one was being connected
                    pipe.close()
                    return
                self._pipes.append(pipe)
                self.accepted += 1
            pipe.thread.start()

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
