#!/usr/bin/env python3
"""Steady HTTP/3 load through the lab's router, as benches/lab_load.py but
over long-lived QUIC connections: each worker (a process of its own) holds
ONE connection and sends GET / on it, one request after another; when the
connection ends, or a request fails, it opens a new one (a new handshake).
Recorded per request: when it started and ended, status, which PoP answered
(x-edge-route) or how it failed (`error`; a request with a status AND an
error got its head but not the end of its body); per connection: how it
ended.

    /opt/edgepop-h3/bin/python benches/lab_load_h3.py IP HOST SECONDS WORKERS OUT.json \\
        [--ca PEM | --insecure] [--request-timeout 30] [--idle-timeout 30]

Run it in the lab's client namespace (`bash conf/lab.sh client ...`), with
the aioquic venv of tests/h3/install.sh.

How a connection ends (`why`):
- `stateless reset`: a datagram whose last 16 bytes are the reset token the
  server gave for the connection ID in use (RFC 9000 §10.3). aioquic 1.7.2
  does not check tokens (it drops what it cannot decrypt), so this client
  does, before aioquic sees the datagram, as browsers' stacks do; the
  connection is then dropped without sending anything;
- `idle timeout`: aioquic's, min(ours, the server's max_idle_timeout);
- `goaway`: the server's HTTP/3 GOAWAY (aioquic 1.7.2 reads and ignores it;
  this client notes it): no new request on the connection, the one in
  flight finishes if its stream is below the GOAWAY's ID, else it fails as
  `goaway: not processed` (safe to retry);
- `request timeout`: no answer within --request-timeout;
- `closed by server`, `stream reset`, `end` (the run is over).
Also counted per connection: 1-RTT datagrams that could not be decrypted
(`undecryptable`: resets whose token did not match, among others)."""
import argparse
import asyncio
import json
import multiprocessing
import ssl
import time

from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoError
from aioquic.quic.logger import QuicFileLogger
from aioquic.tls import Epoch

TOKEN = 16  # stateless reset token size


def varint(buf, at):
    """A QUIC variable-length integer at `at`: (value, next offset), or None
    when `buf` ends before it."""
    if at >= len(buf):
        return None
    size = 1 << (buf[at] >> 6)
    if at + size > len(buf):
        return None
    value = buf[at] & 0x3F
    for b in buf[at + 1 : at + size]:
        value = value << 8 | b
    return value, at + size


class H3(H3Connection):
    """aioquic's H3Connection, telling its owner of a GOAWAY: aioquic 1.7.2
    skips a GOAWAY's payload unread, so the server's control stream is also
    read here (its frames only, nothing is consumed for aioquic)."""

    def __init__(self, quic, on_goaway):
        super().__init__(quic)
        self._on_goaway = on_goaway
        self._uni = {}  # server's uni stream id -> bytes not yet parsed, None: not control

    def handle_event(self, event):
        if isinstance(event, events.StreamDataReceived) and event.stream_id % 4 == 3:
            self._watch_control(event.stream_id, event.data)
        return super().handle_event(event)

    def _watch_control(self, sid, data):
        buf = self._uni.get(sid, b"")
        if buf is None:
            return
        buf += data
        if sid not in self._uni:  # its first bytes: the stream type
            kind = varint(buf, 0)
            if kind is None:
                self._uni[sid] = buf
                return
            if kind[0] != 0x00:  # not the control stream
                self._uni[sid] = None
                return
            buf = buf[kind[1]:]
        while True:
            head = varint(buf, 0)
            size = head and varint(buf, head[1])
            if not size or size[1] + size[0] > len(buf):
                break
            payload = buf[size[1] : size[1] + size[0]]
            if head[0] == FrameType.GOAWAY:
                self._on_goaway(varint(payload, 0)[0])
            buf = buf[size[1] + size[0]:]
        self._uni[sid] = buf


class Conn(QuicConnectionProtocol):
    def __init__(self, quic, record):
        super().__init__(quic)
        self.rec = record
        self.h3 = H3(quic, self.goaway)
        self.pending = {}  # stream id -> (future, response dict)
        self.ended = asyncio.get_running_loop().create_future()
        self.goaway_id = None
        self.dropped = False  # the socket is closed: nothing more is sent

    def transmit(self):
        if not self.dropped:
            super().transmit()

    def drop(self):
        self.dropped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport.close()

    # Connection end, whatever the cause: the first one is kept.
    def end(self, why):
        if not self.ended.done():
            self.rec["end"], self.rec["why"] = time.time(), why
            self.ended.set_result(why)
        for fut, resp in list(self.pending.values()):
            if not fut.done():
                resp["error"] = why
                fut.set_result(resp)

    def watch_decryption(self):
        pair = self._quic._cryptos[Epoch.ONE_RTT]
        decrypt = pair.decrypt_packet

        def counted(*args):
            try:
                return decrypt(*args)
            except CryptoError:
                self.rec["undecryptable"] += 1
                self.rec.setdefault("first_undecryptable", time.time())
                raise

        pair.decrypt_packet = counted

    def datagram_received(self, data, addr):
        if len(data) >= 21 and not data[0] & 0x80 and not self.ended.done():
            quic = self._quic
            tokens = {c.stateless_reset_token for c in [quic._peer_cid, *quic._peer_cid_available]}
            tokens.discard(None)
            tokens.discard(b"")
            if data[-TOKEN:] in tokens:
                # RFC 9000 §10.3.1: the connection is over, nothing is sent.
                self.rec["reset_at"] = time.time()
                self.end("stateless reset")
                self.drop()
                return
        super().datagram_received(data, addr)

    def goaway(self, stream_id):
        self.goaway_id = stream_id
        self.rec.setdefault("goaway_at", time.time())
        self.rec["goaway_id"] = stream_id
        for sid, (fut, resp) in list(self.pending.items()):
            if sid >= stream_id and not fut.done():
                resp["error"] = "goaway: not processed"
                fut.set_result(resp)

    def quic_event_received(self, event):
        if isinstance(event, events.ConnectionTerminated):
            if event.reason_phrase == "Idle timeout":
                self.end("idle timeout")
            else:
                self.end(f"closed by server (0x{event.error_code:x} {event.reason_phrase})")
            return
        for ev in self.h3.handle_event(event):
            entry = self.pending.get(getattr(ev, "stream_id", None))
            if entry is None:
                continue
            fut, resp = entry
            if isinstance(ev, HeadersReceived):
                headers = dict(ev.headers)
                if b":status" in headers:
                    resp["status"] = int(headers[b":status"])
                    route = headers.get(b"x-edge-route")
                    resp["route"] = route.decode() if route else None
            if ev.stream_ended and not fut.done():
                fut.set_result(resp)
        if isinstance(event, events.StreamReset) and event.stream_id in self.pending:
            fut, resp = self.pending[event.stream_id]
            if not fut.done():
                resp["error"] = f"stream reset (0x{event.error_code:x})"
                fut.set_result(resp)

    def request(self, host):
        sid = self._quic.get_next_available_stream_id()
        fut = asyncio.get_running_loop().create_future()
        resp = {"stream": sid}
        self.pending[sid] = (fut, resp)
        self.h3.send_headers(
            sid,
            [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", host.encode()), (b":path", b"/")],
            end_stream=True,
        )
        self.transmit()
        return sid, fut


async def open_conn(args, worker, n, conns):
    loop = asyncio.get_running_loop()
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=args.host,
                               idle_timeout=args.idle_timeout)
    if args.qlog:
        config.quic_logger = QuicFileLogger(args.qlog)
    if args.insecure:
        config.verify_mode = ssl.CERT_NONE
    elif args.ca:
        config.load_verify_locations(cafile=args.ca)
    rec = {"worker": worker, "conn": n, "t": time.time(), "up": None, "undecryptable": 0}
    conns.append(rec)
    _, conn = await loop.create_datagram_endpoint(
        lambda: Conn(QuicConnection(configuration=config), rec), local_addr=("0.0.0.0", 0))
    conn.connect((args.ip, 443))
    conn.watch_decryption()
    try:
        await asyncio.wait_for(asyncio.shield(conn.wait_connected()), args.connect_timeout)
    except (asyncio.TimeoutError, ConnectionError):
        conn.end("connect timeout" if not conn.ended.done() else conn.ended.result())
        rec["why"] = "connect failed: " + rec["why"]
        conn.drop()
        return None
    rec["up"] = time.time()
    return conn


def close(conn, why):
    conn.end(why)
    if not conn.dropped:
        conn.close()  # CONNECTION_CLOSE, if still possible
        asyncio.get_running_loop().call_later(0.05, conn.drop)


async def worker(args, w, out):
    records, conns = [], []
    deadline = time.time() + args.seconds
    conn, n = None, 0
    while time.time() < deadline:
        if conn is not None and (conn.ended.done() or conn.goaway_id is not None):
            if not conn.ended.done():
                close(conn, "goaway")
            conn = None
        if conn is None:
            n += 1
            start = time.time()
            conn = await open_conn(args, w, n, conns)
            if conn is None:
                rec = conns[-1]
                records.append({"t": start, "done": time.time(), "worker": w, "conn": n, "error": rec["why"]})
                await asyncio.sleep(0.01)
                continue
        rec = {"t": time.time(), "worker": w, "conn": n}
        sid, fut = conn.request(args.host)
        try:
            resp = await asyncio.wait_for(fut, args.request_timeout)
        except asyncio.TimeoutError:
            resp = {"stream": sid, "error": "request timeout"}
            close(conn, "request timeout")
        conn.pending.pop(sid, None)
        rec.update(resp)
        rec["done"] = time.time()
        if "error" not in rec and rec.get("status") is None:
            rec["error"] = "no status"
        records.append(rec)
        if "error" in rec:
            if not conn.ended.done():
                err = rec["error"]
                close(conn, "goaway" if err.startswith("goaway") else err if err.startswith("stream reset") else "request failed")
            conn = None
            await asyncio.sleep(0.01)
    if conn is not None and not conn.ended.done():
        close(conn, "end")
        await asyncio.sleep(0.06)
    out.put((records, conns))


def run(args, w, out):
    asyncio.run(worker(args, w, out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ip")
    p.add_argument("host")
    p.add_argument("seconds", type=float)
    p.add_argument("workers", type=int)
    p.add_argument("out")
    p.add_argument("--ca", help="PEM roots to verify the server against")
    p.add_argument("--insecure", action="store_true", help="verify nothing")
    p.add_argument("--request-timeout", type=float, default=30.0)
    p.add_argument("--idle-timeout", type=float, default=30.0, help="ours; the server's may be lower")
    p.add_argument("--connect-timeout", type=float, default=5.0)
    p.add_argument("--qlog", help="a folder: each connection's qlog (slow; to see the packets)")
    args = p.parse_args()
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=run, args=(args, w, out)) for w in range(args.workers)]
    for proc in procs:
        proc.start()
    records, conns = [], []
    for _ in procs:
        r, c = out.get()
        records += r
        conns += c
    for proc in procs:
        proc.join()
    records.sort(key=lambda r: r["t"])
    conns.sort(key=lambda c: c["t"])
    with open(args.out, "w") as f:
        json.dump({"records": records, "connections": conns}, f)
    ok = sum(1 for r in records if r.get("status") == 200 and "error" not in r)
    print(f"{len(records)} requests, {ok} ok, {len(records) - ok} failed, {len(conns)} connections")


if __name__ == "__main__":
    main()
