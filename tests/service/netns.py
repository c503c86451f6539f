"""Hosts of their own for tests: Linux network namespaces joined to this one by veth
pairs, and a TCP relay that lets them reach a server that listens on 127.0.0.1 only.

Each namespace gets a /24 of its own that no address here uses yet, 10.231.N.0/24: the
host end of its veth pair is 10.231.N.1 (in this namespace, where the test runs), the
namespace end 10.231.N.2. A process started with `Namespace.command(...)` sees only its
veth and its own loopback, so it reaches this namespace at `host_ip` and nothing else;
`cut` takes the host end down (every packet between the two is lost, as when a cable is
pulled) and `restore` brings it back. Names carry a random suffix and `Network` deletes
all it made, also when a test fails, so that an aborted run leaves nothing behind.

`Relay` is that bridge for a server bound to 127.0.0.1 (PostgreSQL here): it listens on
each namespace's host address and copies bytes both ways, with nothing of its own in
between (a connection it sees end at one side it ends at the other).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

SUBNET = "10.231"


class NetnsError(Exception):
    """A namespace or link could not be made or changed; says which command failed."""


def ip(*args: str, netns: str | None = None) -> str:
    """Run `ip ARGS` (inside `netns` when given); its stdout, or NetnsError."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run(
        [*prefix, "ip", *args], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        shown = " ".join([*prefix, "ip", *args])
        raise NetnsError(f"`{shown}` exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (None when they can): not root, no
    `ip`, or the kernel refuses (a container without CAP_NET_ADMIN)."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"rprobe-{uuid.uuid4().hex[:8]}"
    try:
        ip("netns", "add", probe)
    except NetnsError as exc:
        return f"cannot make a network namespace: {exc}"
    with contextlib.suppress(NetnsError):
        ip("netns", "del", probe)
    return None


@dataclass(frozen=True)
class Namespace:
    """One namespace and its veth pair (see the module's docstring)."""

    name: str
    host_veth: str
    inner_veth: str
    host_ip: str
    inner_ip: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        """Take the link down: packets both ways are lost until `restore`."""
        ip("link", "set", self.host_veth, "down")

    def restore(self) -> None:
        ip("link", "set", self.host_veth, "up")


class Network:
    """`count` namespaces, each on a /24 of SUBNET not in use here; `close` deletes them
    (and is safe to call twice, or after a half-made network)."""

    def __init__(self, count: int) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.namespaces: list[Namespace] = []
        self._made: list[Namespace] = []
        subnets = _free_subnets(count)
        for n, subnet in enumerate(subnets):
            self.namespaces.append(
                Namespace(
                    name=f"runner-{suffix}-{n}",
                    host_veth=f"rvh{suffix}{n}",
                    inner_veth=f"rvn{suffix}{n}",
                    host_ip=f"{SUBNET}.{subnet}.1",
                    inner_ip=f"{SUBNET}.{subnet}.2",
                )
            )

    def open(self) -> Network:
        try:
            for space in self.namespaces:
                self._made.append(space)
                _make(space)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Delete every namespace made (its veth pair goes with it) and any host end
        left over; errors for what is already gone are ignored."""
        for space in self._made:
            with contextlib.suppress(NetnsError):
                ip("netns", "del", space.name)
            if _exists(space.host_veth):
                with contextlib.suppress(NetnsError):
                    ip("link", "del", space.host_veth)
        self._made = []


def _make(space: Namespace) -> None:
    ip("netns", "add", space.name)
    ip("link", "add", space.host_veth, "type", "veth", "peer", "name", space.inner_veth)
    ip("link", "set", space.inner_veth, "netns", space.name)
    ip("addr", "add", f"{space.host_ip}/24", "dev", space.host_veth)
    ip("link", "set", space.host_veth, "up")
    ip("addr", "add", f"{space.inner_ip}/24", "dev", space.inner_veth, netns=space.name)
    ip("link", "set", space.inner_veth, "up", netns=space.name)
    ip("link", "set", "lo", "up", netns=space.name)


def _exists(link: str) -> bool:
    return (
        subprocess.run(
            ["ip", "link", "show", link], capture_output=True, timeout=30, check=False
        ).returncode
        == 0
    )


def _free_subnets(count: int) -> list[int]:
    """`count` third octets N with no 10.231.N.x address on this host yet (two tests
    at once pick different ones, most likely; a clash fails `ip addr add` loudly)."""
    used = ip("-o", "-4", "addr", "show")
    free = [n for n in range(1, 255) if f" {SUBNET}.{n}." not in used]
    if len(free) < count:
        raise NetnsError(f"no {count} free /24 subnets under {SUBNET}.0.0/16")
    return sorted(random.sample(free, count))


class Relay:
    """Copies TCP connections made to any of its listening addresses to `target`, both
    ways, on one thread of its own (asyncio). `close` ends every connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.connections = 0  # accepted so far
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay", daemon=True)
        self._thread.start()

    def listen(self, host: str, port: int) -> int:
        """Accept connections at host:port, or at a free port of host when that one is
        taken (a server listening on every address has it); the port."""

        async def start(at: int) -> int:
            server = await asyncio.start_server(self._relay, host, at, reuse_address=True)
            self._servers.append(server)
            return int(server.sockets[0].getsockname()[1])

        try:
            return asyncio.run_coroutine_threadsafe(start(port), self._loop).result(timeout=10)
        except OSError:
            return asyncio.run_coroutine_threadsafe(start(0), self._loop).result(timeout=10)

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            for writer in list(self._writers):
                writer.transport.abort()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:  # the server is down (restarting): the client sees it close
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.transport.abort()
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until the reading side ends, then end the writing side (half-close): each
    side sees exactly what the other sent, and its end."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:  # reset, or the other side already gone: end this way as well
        writer.transport.abort()
