#!/usr/bin/env python3
"""Steady load through the lab's router, one new connection per request (as
visitors arriving), recording each request: when, status, which PoP
answered (x-edge-route) or how it failed.

    python3 benches/lab_load.py IP HOST SECONDS WORKERS OUT.json

Run it in the lab's client namespace (`bash conf/lab.sh client python3 ...`).
Failures are classed: `refused` (no listener: the connection never opened),
`reset` / `timeout` (the connection opened, the answer never came: a request
lost in flight), other exceptions by name."""
import http.client
import json
import socket
import sys
import threading
import time

ip, host, seconds, workers, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
deadline = time.time() + seconds
records = []
lock = threading.Lock()


def one():
    start = time.time()
    conn = http.client.HTTPConnection(ip, 80, timeout=3)
    rec = {"t": start}
    try:
        try:
            conn.connect()
        except ConnectionRefusedError:
            rec["error"] = "refused"
            return rec
        conn.request("GET", "/", headers={"Host": host, "Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        rec["status"] = resp.status
        rec["route"] = resp.getheader("x-edge-route")
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        rec["error"] = "reset"
    except socket.timeout:
        rec["error"] = "timeout"
    except Exception as e:  # noqa: BLE001 - every failure is counted, by kind
        rec["error"] = type(e).__name__
    finally:
        conn.close()
        rec["done"] = time.time()
    return rec


def worker():
    mine = []
    while time.time() < deadline:
        rec = one()
        mine.append(rec)
        if "error" in rec:
            time.sleep(0.01)  # a refused connect returns at once: do not spin
    with lock:
        records.extend(mine)


threads = [threading.Thread(target=worker) for _ in range(workers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
records.sort(key=lambda r: r["t"])
with open(out, "w") as f:
    json.dump({"records": records}, f)
ok = sum(1 for r in records if r.get("status") == 200)
print(f"{len(records)} requests, {ok} ok, {len(records) - ok} failed")
