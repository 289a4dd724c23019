"""Idle connections for benches/h3.sh: N connections to HOST:PORT, each
gets "/" once (SNI and :authority shop.bench, the bench certificate as
the only root) and then stays open, sending nothing, until SIGTERM.
Prints how many it holds once they are all up (a failed one is not
retried, not counted).

  h3  HOST:PORT N CAFILE   HTTP/3 over QUIC (aioquic; idle timeout 300 s,
                           the server's own is the one in force)
  h2  HOST:PORT N CAFILE   HTTP/2 over TLS over TCP: a minimal client
                           (preface, SETTINGS, one HEADERS, the answer
                           read to its END_STREAM, the server's SETTINGS
                           acknowledged)

Run with /opt/edgepop-h3/bin/python (aioquic). At most 50 handshakes are
under way at once (edgepop asks for a Retry above tls.quic_retry_above, 64).
"""
import asyncio
import signal
import ssl
import struct
import sys

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration

SNI = "shop.bench"


class H3Client(QuicConnectionProtocol):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.h3 = H3Connection(self._quic)
        self.waiting = {}

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            fut = self.waiting.get(ev.stream_id)
            if fut is None:
                continue
            if isinstance(ev, HeadersReceived):
                fut.status = dict(ev.headers).get(b":status", fut.status)
            if isinstance(ev, (HeadersReceived, DataReceived)) and ev.stream_ended and not fut.done():
                fut.set_result(fut.status)

    async def get(self):
        sid = self._quic.get_next_available_stream_id()
        fut = self._loop.create_future()
        fut.status = None
        self.waiting[sid] = fut
        self.h3.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                                   (b":authority", SNI.encode()), (b":path", b"/")], end_stream=True)
        self.transmit()
        return await fut


async def hold_h3(host, port, cafile, held, stack):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=SNI, idle_timeout=300.0)
    config.load_verify_locations(cafile=cafile)
    cm = connect(host, port, configuration=config, create_protocol=H3Client)
    client = await cm.__aenter__()
    stack.append(cm)
    status = await asyncio.wait_for(client.get(), 30)
    if status == b"200":
        held.append(client)


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


async def hold_h2(host, port, cafile, held, stack):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["h2"])
    r, w = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=SNI)
    assert w.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    # HPACK: :method GET (2), :scheme https (7), :path / (4), :authority (1) literal.
    block = b"\x82\x87\x84\x41" + bytes([len(SNI)]) + SNI.encode()
    w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block))
    await w.drain()
    while True:
        head = await asyncio.wait_for(r.readexactly(9), 30)
        length = int.from_bytes(head[:3], "big")
        kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = await r.readexactly(length)
        if kind == 4 and not flags & 1:  # SETTINGS: acknowledge
            w.write(frame(4, 1, 0))
        if kind == 0 and stream == 1:  # DATA: give the credit back
            if length:
                w.write(frame(8, 0, 0, struct.pack(">I", length)) + frame(8, 0, 1, struct.pack(">I", length)))
            if flags & 1:
                break
        if kind in (3, 7):  # RST_STREAM, GOAWAY
            return
        await w.drain()
    await w.drain()
    held.append(w)


async def main():
    mode, target, n, cafile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    host, port = target.rsplit(":", 1)
    held, stack = [], []
    gate = asyncio.Semaphore(50)
    hold = hold_h3 if mode == "h3" else hold_h2

    async def one():
        async with gate:
            try:
                await hold(host, int(port), cafile, held, stack)
            except Exception as exc:  # counted by its absence
                print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    await asyncio.gather(*(one() for _ in range(n)))
    print(len(held), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
