"""An HTTP/3 client for edgepop's tests, on aioquic: a QUIC and TLS stack
that shares no code with the proxy's (quinn, rustls), so a test sees what an
independent client sees. Prints ONE JSON object on stdout. Exit code 0 when
the connection worked (whatever the statuses, stream resets included), 2
when it did not (handshake refused, timed out, closed before every answer
ended), "error" then saying why. A response's status is 0 when no headers
came; the certificate's names are given even when it was refused.
"""

import argparse
import asyncio
import hashlib
import json
import ssl
import sys
import time

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, StreamReset
from cryptography import x509

BODY_TEXT_MAX = 4096


def body_pattern(size):
    """The request body of --body-size: byte i is i % 251 (a prime, so the
    pattern never lines up with a power-of-two buffer)."""
    return (bytes(range(251)) * (size // 251 + 1))[:size]


class Exchange:
    """One request and what came back on its stream."""

    def __init__(self, loop):
        self.done = loop.create_future()
        self.status, self.headers, self.trailers = 0, [], []
        self.body = bytearray()
        self.reset, self.cut, self.error = False, False, None
        self.started, self.ended = time.monotonic(), None

    def finish(self):
        if not self.done.done():
            self.ended = time.monotonic()
            self.done.set_result(None)

    def report(self):
        body = bytes(self.body)
        text = None
        if len(body) < BODY_TEXT_MAX:
            try:
                text = body.decode()
            except UnicodeDecodeError:
                pass
        out = {
            "status": self.status,  # 0: no response headers came
            "headers": self.headers,
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body": text,
            # Sent to ended (None: never ended, the connection timed out).
            "elapsed_ms": None if self.ended is None else round((self.ended - self.started) * 1000, 3),
            "reset": self.reset,
        }
        if self.trailers:
            out["trailers"] = self.trailers
        if self.error or self.ended is None:
            out["error"] = self.error or "no end before the timeout"
        return out


def header_list(headers):
    return [[k.decode(errors="replace"), v.decode(errors="replace")] for k, v in headers]


class Client(QuicConnectionProtocol):
    """A QUIC connection with an H3Connection on it; requests are futures
    completed by the events of their stream."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.exchanges = {}
        self.handshake = None  # the HandshakeCompleted event
        self.terminated = None  # the ConnectionTerminated event

    def quic_event_received(self, event):
        if isinstance(event, HandshakeCompleted):
            self.handshake = event
        elif isinstance(event, StreamReset) and event.stream_id in self.exchanges:
            ex = self.exchanges[event.stream_id]
            ex.reset, ex.error = True, f"stream reset, code 0x{event.error_code:x}"
            ex.finish()
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
            for ex in self.exchanges.values():
                if not ex.done.done():
                    ex.reset = ex.cut = True
                    ex.error = "connection closed: " + describe(event)
                    ex.finish()
        for h3_event in self.h3.handle_event(event):
            ex = self.exchanges.get(h3_event.stream_id)
            if ex is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                headers = dict(h3_event.headers)
                if b":status" in headers:
                    status = int(headers[b":status"])
                    if status >= 200:  # 1xx are interim: the final one follows
                        ex.status = status
                        ex.headers = header_list(
                            (k, v) for k, v in h3_event.headers if k != b":status"
                        )
                else:
                    ex.trailers = header_list(h3_event.headers)
            elif isinstance(h3_event, DataReceived):
                ex.body += h3_event.data
            if h3_event.stream_ended:
                ex.finish()

    def send_request(self, args, body):
        """Sends one request (headers and body queued at once: QUIC flow
        control paces them) and returns its Exchange, not waiting."""
        stream_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", args.method.encode()),
            (b":scheme", b"https"),
            (b":authority", (args.authority or args.sni).encode()),
            (b":path", args.path.encode()),
        ]
        extra = [h.partition(":") for h in args.header]
        extra = [(k.strip().lower().encode(), v.strip().encode()) for k, _, v in extra]
        if body and not any(k == b"content-length" for k, _ in extra):
            headers.append((b"content-length", str(len(body)).encode()))
        ex = self.exchanges[stream_id] = Exchange(self._loop)
        self.h3.send_headers(stream_id, headers + extra, end_stream=not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=True)
        self.transmit()
        return ex


def describe(event):
    return f"error code 0x{event.error_code:x}: {event.reason_phrase or 'no reason given'}"


def cert_names(client):
    """The DNS names and addresses of the server's leaf certificate. aioquic
    keeps it only in a private attribute; a resumed session has none."""
    cert = client._quic.tls._peer_certificate
    if cert is None:
        return None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in san.value]


def configuration(args, ticket=None):
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        server_name=args.sni,
        idle_timeout=args.timeout,
        session_ticket=ticket,
    )
    if args.insecure:
        config.verify_mode = ssl.CERT_NONE
    elif args.ca:
        config.load_verify_locations(cafile=args.ca)
    return config


def open_connection(args, made, ticket=None, tickets=None, early=False):
    """connect()'s context manager for one connection; `made` gets its Client
    (connect() yields none when the handshake fails, and its events tell why)."""

    def create(*a, **kw):
        made.append(Client(*a, **kw))
        return made[-1]

    host, port = args.connect.rsplit(":", 1)
    return connect(
        host.strip("[]"),
        int(port),
        configuration=configuration(args, ticket),
        create_protocol=create,
        session_ticket_handler=tickets.append if tickets is not None else None,
        wait_connected=not early,
    )


def fail(out, made, exc):
    """Fills "error" (and what the handshake told, if it ended)."""
    client = made[-1] if made else None
    if isinstance(exc, TimeoutError):  # checked first: connect() then closes
        stage = "handshake" if client is None or client.handshake is None else "answers"
        out["error"] = f"timed out after {out['timeout']} s waiting for the {stage}"
    elif client is not None and client.terminated is not None:
        out["error"] = "connection closed: " + describe(client.terminated)
    else:
        out["error"] = f"{type(exc).__name__}: {exc}"
    if client is not None:
        note_handshake(out, client)


def note_handshake(out, client):
    if client.handshake is not None:
        out["alpn"] = client.handshake.alpn_protocol
        out["tls_version"] = "TLSv1.3"  # QUIC runs on TLS 1.3 only (RFC 9001)
        out["early_data_accepted"] = client.handshake.early_data_accepted
        out["session_resumed"] = client.handshake.session_resumed
    names = cert_names(client)
    if names is not None:
        out["peer_cert_subject_alt_names"] = names


async def first_connection(args, out, made):
    """--zero-rtt's first connection: handshake, wait for a session ticket
    (servers send it after the handshake), close. Returns the ticket."""
    tickets = []
    async with asyncio.timeout(args.timeout):
        async with open_connection(args, made, tickets=tickets) as client:
            note_handshake(out, client)
            await client.ping()  # a round trip: the ticket is likely in by then
            for _ in range(20):
                if tickets:
                    break
                await asyncio.sleep(0.05)
    return tickets[-1] if tickets else None


async def run(args, out):
    body = body_pattern(args.body_size)
    ticket = None
    if args.zero_rtt:
        made = []
        try:
            ticket = await first_connection(args, out, made)
        except Exception as exc:
            return fail(out, made, exc)
        # aioquic sends early data only with a ticket that allows it.
        out["early_data_attempted"] = bool(ticket and ticket.max_early_data_size)
    made, exchanges = [], []
    try:
        async with asyncio.timeout(args.timeout):
            async with open_connection(args, made, ticket, early=args.zero_rtt) as client:
                for _ in range(args.repeat):
                    if client.terminated is not None:
                        break
                    # With --zero-rtt the first round goes out before the
                    # handshake ends: 0-RTT packets, or 1-RTT if refused.
                    batch = [client.send_request(args, body) for _ in range(args.parallel)]
                    exchanges += batch
                    await asyncio.gather(*(ex.done for ex in batch))
                note_handshake(out, client)
                # A close after every answer is no failure; one that cut
                # an answer, or came before every request went, is.
                cut = any(ex.cut for ex in exchanges)
                if cut or len(exchanges) < args.repeat * args.parallel:
                    out["error"] = "connection closed: " + describe(client.terminated)
    except Exception as exc:
        fail(out, made, exc)
    out["responses"] = [ex.report() for ex in exchanges]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connect", required=True, help="HOST:PORT, UDP")
    p.add_argument("--sni", required=True, help="server name, and default :authority")
    p.add_argument("--authority", help=":authority, when not the SNI")
    p.add_argument("--ca", help="PEM file of the roots to verify against")
    p.add_argument("--insecure", action="store_true", help="verify nothing")
    p.add_argument("--method", default="GET")
    p.add_argument("--path", default="/")
    p.add_argument("--header", action="append", default=[], help="'name: value'")
    p.add_argument("--body-size", type=int, default=0, help="bytes of request body")
    p.add_argument("--repeat", type=int, default=1, help="rounds, one after another")
    p.add_argument("--parallel", type=int, default=1, help="concurrent requests a round")
    p.add_argument("--zero-rtt", action="store_true", help="resume and send as early data")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds, per connection")
    args = p.parse_args()

    out = dict(alpn=None, tls_version=None, peer_cert_subject_alt_names=[])
    out.update(session_resumed=False, early_data_attempted=False)
    out.update(early_data_accepted=False, responses=[], error=None, timeout=args.timeout)
    asyncio.run(run(args, out))
    print(json.dumps(out))
    sys.exit(2 if out["error"] else 0)


if __name__ == "__main__":
    main()
