"""Abusive clients for benches/abuse.sh; each mode holds its connections
until killed (SIGTERM) and prints how many it holds once they are all up.

  idle HOST:PORT N            N keep-alive connections, one request each, then idle
  heads HOST:PORT N BYTES     N connections each sending a head of BYTES, never ended
  slowloris HOST:PORT N       N connections trickling one header line every 5 s
Connections come from 127.0.1.1-127.0.1.50 (so per-address limits of 1024 hold).
"""
import asyncio
import signal
import sys

HOST_HEADER = b"Host: shop.bench\r\n"


def source(i):
    return (f"127.0.1.{1 + i % 50}", 0)


async def open_from(i, host, port):
    return await asyncio.open_connection(host, port, local_addr=source(i))


async def idle(i, host, port, held):
    r, w = await open_from(i, host, port)
    w.write(b"GET / HTTP/1.1\r\n" + HOST_HEADER + b"\r\n")
    await w.drain()
    data = await asyncio.wait_for(r.read(65536), 30)
    if data.startswith(b"HTTP/1.1 200"):
        held.append(w)


async def head(i, host, port, size, held):
    r, w = await open_from(i, host, port)
    w.write(b"GET / HTTP/1.1\r\n" + HOST_HEADER)
    left, n = size - 40, 0
    while left > 0:
        # Lines of 4 KiB: under nginx's 8 KiB line buffer, as a maximal
        # accepted head must be.
        line = min(left, 4096)
        w.write(b"X-Fill-%d: " % n + b"a" * max(line - 16, 1) + b"\r\n")
        left -= line
        n += 1
    await w.drain()
    held.append(w)


async def slowloris(i, host, port, held):
    r, w = await open_from(i, host, port)
    w.write(b"GET / HTTP/1.1\r\n" + HOST_HEADER)
    await w.drain()
    held.append(w)
    n = 0
    while True:
        await asyncio.sleep(5)
        try:
            w.write(b"X-Slow-%d: 1\r\n" % n)
            await w.drain()
        except (ConnectionError, OSError):
            # Cut by the server: come back, as an attacker would.
            try:
                r, w = await open_from(i, host, port)
                w.write(b"GET / HTTP/1.1\r\n" + HOST_HEADER)
                await w.drain()
            except OSError:
                pass
        n += 1


async def main():
    mode, target, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    host, port = target.rsplit(":", 1)
    port = int(port)
    held = []
    tasks = []
    for start in range(0, n, 500):
        batch = []
        for i in range(start, min(n, start + 500)):
            if mode == "idle":
                batch.append(idle(i, host, port, held))
            elif mode == "heads":
                batch.append(head(i, host, port, int(sys.argv[4]), held))
            elif mode == "slowloris":
                tasks.append(asyncio.ensure_future(slowloris(i, host, port, held)))
        if batch:
            await asyncio.gather(*batch, return_exceptions=True)
    await asyncio.sleep(0.5)
    print(len(held), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


asyncio.run(main())
