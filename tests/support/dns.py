"""A DNS server of the tests' own (dnslib, UDP and TCP on loopback) whose answers a test changes
while gRPC clients resolve names through it: a headless Service, or a cluster's DNS, stand-in."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from mesh.tools.ports import free_port


class Answers(BaseResolver):
    """Answers A queries for the names it holds, from whichever thread asks."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def set(self, name: str, *addresses: str) -> None:
        with self.lock:
            self.records[name] = list(addresses)

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname)
        with self.lock:
            addresses = list(self.records.get(name, []))
        if request.q.qtype == QTYPE.A:
            for address in addresses:
                reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=1))
        return reply


@contextmanager
def serving() -> Iterator[tuple[Answers, int]]:
    """(answers, port): a server on 127.0.0.1:port answering from `answers`."""
    answers = Answers()
    port = free_port()
    quiet = DNSLogger(logf=lambda _: None)
    servers = [DNSServer(answers, address="127.0.0.1", port=port, tcp=tcp, logger=quiet) for tcp in (False, True)]
    for server in servers:
        server.start_thread()
    try:
        yield answers, port
    finally:
        for server in servers:
            server.stop()
