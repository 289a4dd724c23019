"""End-to-end check of the CDC pipeline by hand (run through smoke.sh).

tansu (memory) + a fresh primary + connect.sh; runs DML on domains/pages,
dumps every record that reaches the topics, prints timings and observations,
then removes everything it started.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient

HERE = os.path.dirname(os.path.abspath(__file__))
TABLES = """
create table domains(hostname text primary key, store_id bigint not null, status text not null, tier text not null, version bigint not null);
create table pages(store_id bigint, path text, content_type text not null, body text not null, status int not null default 200, cache_control text, version bigint not null, updated_at timestamptz not null, primary key (store_id, path));
"""
# ~12.8 kB of md5 hex: too random for pglz, so it is stored out of line (TOASTed).
BIG = "(select string_agg(md5(random()::text), '') from generate_series(1, 400))"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


class Collector(threading.Thread):
    """Assigns every topic with the prefix from offset 0 as it appears; keeps all records."""

    def __init__(self, bootstrap, prefixes):
        super().__init__(daemon=True)
        conf = {"bootstrap.servers": bootstrap}
        self.admin = AdminClient(conf | {"log_level": 0})
        self.consumer = Consumer(conf | {"group.id": "smoke", "enable.auto.commit": False,
                                         "fetch.wait.max.ms": 20, "log_level": 0})
        self.prefixes = prefixes
        self.assigned = set()
        self.records = []  # everything, heartbeats and transaction markers too
        self.data = []  # the table topics only: what the steps count
        self.lock = threading.Lock()
        self.stop = False
        self.dead = None

    def refresh(self):
        try:
            topics = self.admin.list_topics(timeout=1).topics
        except KafkaException:  # broker paused: try again later
            return
        new = [t for t in topics if t not in self.assigned and any(p in t for p in self.prefixes)]
        if new:
            parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in new for p in topics[t].partitions]
            self.consumer.incremental_assign(parts)
            self.assigned.update(new)
            log("assigned", sorted(new))

    def run(self):
        last = 0
        while not self.stop:
            if time.time() - last > 0.3:
                self.refresh()
                last = time.time()
            m = self.consumer.poll(0.05)
            if m is None:
                continue
            if m.error():
                log("consumer error", m.error())
                continue
            now = time.time()
            key = json.loads(m.key()) if m.key() else None
            val = json.loads(m.value()) if m.value() is not None else None
            rec = {"recv": now, "topic": m.topic(), "partition": m.partition(),
                   "offset": m.offset(), "key": key, "value": val}
            with self.lock:
                self.records.append(rec)
                if ".public." in m.topic():
                    self.data.append(rec)

    def count(self):
        with self.lock:
            return len(self.data)

    def wait(self, n, timeout=30, what=""):
        """Wait until at least n records arrived in total."""
        end = time.time() + timeout
        while self.count() < n:
            if time.time() > end:
                raise SystemExit(f"timeout waiting for {what}: {self.count()}/{n} records")
            if self.dead and self.dead():
                raise SystemExit(f"connect.sh exited while waiting for {what}")
            time.sleep(0.01)

    def settle(self, quiet=1.0):
        """Wait until no record arrives for `quiet` seconds."""
        n, t = self.count(), time.time()
        while time.time() - t < quiet:
            time.sleep(0.05)
            if self.count() != n:
                n, t = self.count(), time.time()


def payload(v):
    return v["payload"] if isinstance(v, dict) and "payload" in v and "schema" in v else v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--schemas", default="true")
    ap.add_argument("--out", help="dump directory (default: a temp dir, printed)")
    ap.add_argument("--fixture", help="write fixtures NAME.jsonl + NAME.keys.jsonl here (a path prefix)")
    ap.add_argument("--extra", action="store_true", help="heartbeat + transaction metadata on")
    ap.add_argument("--restart", action="store_true", help="SIGKILL/restart and offsets-removed phases")
    ap.add_argument("--pause", action="store_true", help="SIGSTOP the broker for 8 s during an update")
    ap.add_argument("--keep", action="store_true", help="keep temp dirs")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="edgepop-cdc-smoke-")
    pgdir, work = os.path.join(tmp, "pg"), os.path.join(tmp, "connect")
    out = a.out or os.path.join(tmp, "out")
    os.makedirs(out, exist_ok=True)
    kport, pport = free_port(), free_port()
    bootstrap = f"127.0.0.1:{kport}"
    prefix = "smoke"
    procs = {}
    env = dict(os.environ, PG_PORT=str(pport), BOOTSTRAP=bootstrap, TOPIC_PREFIX=prefix,
               WORK_DIR=work, SCHEMAS=a.schemas)
    if a.extra:  # appended to any EXTRA from the caller's environment
        env["EXTRA"] = env.get("EXTRA", "") + "\nheartbeat.interval.ms=1000\nprovide.transaction.metadata=true"

    def sql(q):
        r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pport), "-U", "postgres", "-X",
                            "-q", "-v", "ON_ERROR_STOP=1", "-Atc", q],
                           capture_output=True, text=True, check=True)
        return r.stdout.strip()

    def start_connect():
        os.makedirs(work, exist_ok=True)
        errf = open(os.path.join(work, "stderr.log"), "ab")
        t = time.time()
        procs["connect"] = subprocess.Popen(["bash", os.path.join(HERE, "connect.sh")], env=env,
                                            stdout=errf, stderr=errf)
        return t

    def kill_connect(sig):
        p, t = procs.pop("connect"), time.time()
        p.send_signal(sig)
        p.wait(30)
        log(f"connect exited {time.time() - t:.2f}s after {signal.Signals(sig).name}, status {p.returncode}")

    try:
        procs["tansu"] = subprocess.Popen(
            ["tansu", "broker", "--listener-url", f"tcp://{bootstrap}",
             "--advertised-listener-url", f"tcp://{bootstrap}", "--storage-engine", "memory://tansu/"],
            stdout=open(os.path.join(tmp, "tansu.log"), "wb"), stderr=subprocess.STDOUT)
        subprocess.run(["bash", os.path.join(HERE, "primary.sh"), "start", pgdir, str(pport)], check=True)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", kport), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        sql(TABLES)
        # Rows present before the connector starts: the initial snapshot (op r).
        sql("insert into domains values ('a.example', 1, 'active', 'public', 1), ('b.example', 2, 'active', 'enterprise', 1);"
            "insert into pages values (1, '/', 'text/html', '<h1>a</h1>', 200, 'max-age=60', 1, now()),"
            f" (1, '/big', 'text/html', {BIG}, 200, null, 1, now());")
        log("pages./big body stored bytes:", sql("select pg_column_size(body) from pages where path='/big'"))

        col = Collector(bootstrap, [prefix])
        col.dead = lambda: "connect" in procs and procs["connect"].poll() is not None
        col.start()
        t0 = start_connect()
        col.wait(1, 60, "first record")
        log(f"first record {col.records[0]['recv'] - t0:.2f}s after connect.sh start")
        col.wait(4, 30, "snapshot")
        col.settle(1.0)
        n = col.count()

        def step(name, q, expect, settle=0.5):
            nonlocal n
            log(name)
            sql(q)
            col.wait(n + expect, 30, name)
            col.settle(settle)
            n = col.count()

        step("default identity: insert", "insert into domains values ('c.example', 3, 'active', 'public', 1);"
             "insert into pages values (3, '/x', 'application/json', '{}', 200, null, 1, now());", 2)
        step("default identity: update", "update domains set status='suspended', version=2 where hostname='c.example';"
             "update pages set body='{\"a\":1}', version=2 where store_id=3 and path='/x';", 2)
        step("default identity: toast-unchanged update", "update pages set version=2 where path='/big';", 1)
        step("default identity: delete", "delete from domains where hostname='c.example';"
             "delete from pages where store_id=3 and path='/x';", 4)  # delete + tombstone each

        # commit-to-record latency of a simple update, 10 times
        lat = []
        for i in range(10):
            sql(f"update domains set version={10 + i} where hostname='a.example'")
            tc = time.time()
            col.wait(n + 1, 10, "latency update")
            r = col.data[n]
            lat.append(((r["recv"] - tc) * 1000, r["recv"] * 1000 - payload(r["value"])["source"]["ts_ms"]))
            n = col.count()
            time.sleep(0.1)
        lat.sort()
        log("latency ms (psql return->recv, source.ts_ms->recv):",
            [f"{x:.0f}/{y:.0f}" for x, y in lat], "median", f"{lat[5][0]:.0f}/{lat[5][1]:.0f}")

        step("identity full", "alter table domains replica identity full; alter table pages replica identity full;"
             "insert into domains values ('d.example', 4, 'active', 'public', 1);"
             "update domains set tier='enterprise', version=2 where hostname='d.example';"
             "update pages set version=3 where path='/big';"
             "delete from domains where hostname='d.example';", 5)
        step("truncate", "insert into pages values (5, '/t', 'text/plain', 't', 200, null, 1, now()); truncate pages;", 2)
        step("transaction of 2 rows", "begin; insert into domains values ('e.example', 5, 'active', 'public', 1);"
             "insert into pages values (5, '/', 'text/html', 'e', 404, 'no-store', 1, now()); commit;", 2)

        if a.extra:
            time.sleep(2.5)  # a few heartbeats
            col.settle(0.3)
            n = col.count()

        if a.pause:
            log("SIGSTOP tansu; update; SIGCONT after 8 s")
            procs["tansu"].send_signal(signal.SIGSTOP)
            sql("update domains set version=40 where hostname='a.example'")
            time.sleep(8)
            procs["tansu"].send_signal(signal.SIGCONT)
            t = time.time()
            col.wait(n + 1, 60, "record after broker pause")
            log(f"record arrived {col.data[n]['recv'] - t:.2f}s after SIGCONT; connect alive:",
                procs["connect"].poll() is None)
            col.settle(1.0)
            n = col.count()

        if a.restart:
            log("SIGKILL connect; 2 changes while it is down; restart with the same WORK_DIR")
            time.sleep(0.5)  # let an offset flush happen (interval 100 ms)
            kill_connect(signal.SIGKILL)
            sql("update domains set version=20 where hostname='b.example';"
                "insert into domains values ('f.example', 6, 'active', 'public', 1);")
            mark = col.count()
            t0 = start_connect()
            col.wait(mark + 2, 60, "records after restart")
            log(f"first record after restart {col.data[mark]['recv'] - t0:.2f}s after start")
            col.settle(2.0)
            n = col.count()
            log("after SIGKILL restart:", n - mark, "records:",
                [(payload(r["value"]) or {}).get("op") for r in col.data[mark:]])

            log("5 updates; SIGKILL as soon as the 5th record arrives (before an offset flush); restart")
            for i in range(5):
                sql(f"update domains set version={21 + i} where hostname='f.example'")
            col.wait(n + 5, 30, "burst")
            kill_connect(signal.SIGKILL)
            mark = col.count()
            t0 = start_connect()
            sql("update domains set version=26 where hostname='f.example'")
            col.wait(mark + 1, 60, "records after 2nd restart")
            col.settle(2.0)
            n = col.count()
            log("after SIGKILL right after records:", n - mark, "records:",
                [(payload(r["value"])["op"], payload(r["value"])["after"]["version"]) for r in col.data[mark:]])

            log("SIGTERM connect; delete connect.offsets; restart")
            kill_connect(signal.SIGTERM)
            os.remove(os.path.join(work, "connect.offsets"))
            mark = col.count()
            t0 = start_connect()
            col.wait(mark + 1, 60, "records after offsets removed")
            col.settle(2.0)
            step("after re-snapshot: update", "update domains set version=30 where hostname='b.example'", 1)
            log("after offsets removed:", n - mark, "records:",
                [(payload(r["value"]) or {}).get("op") for r in col.data[mark:]])

        col.settle(1.0)
        col.stop = True
        col.join(5)
        col.consumer.close()
        recs = col.records
        topics = sorted({r["topic"] for r in recs})
        log("topics:", topics)
        seen, dups = set(), 0
        for r in col.data:
            p = payload(r["value"])
            if p and p["op"] != "r":
                k = (r["topic"], p["source"]["lsn"], json.dumps(r["key"]), p["op"])
                dups += k in seen
                seen.add(k)
        log("change events delivered more than once:", dups)
        with open(os.path.join(out, "records.jsonl"), "w") as f:
            for r in recs:
                f.write(json.dumps({k: r[k] for k in ("topic", "partition", "offset", "key", "value")}) + "\n")
        log("dumped", len(recs), "records to", os.path.join(out, "records.jsonl"))
        if a.fixture:
            os.makedirs(os.path.dirname(a.fixture), exist_ok=True)
            with open(a.fixture + ".jsonl", "w") as fv, open(a.fixture + ".keys.jsonl", "w") as fk:
                line = 0
                for r in recs:
                    ref = None
                    if r["value"] is not None:
                        line += 1
                        ref = line
                        fv.write(json.dumps(r["value"], separators=(",", ":")) + "\n")
                    fk.write(json.dumps({"topic": r["topic"], "partition": r["partition"], "offset": r["offset"],
                                         "key": r["key"], "value_line": ref}, separators=(",", ":")) + "\n")
            log("fixture written:", a.fixture + ".jsonl", a.fixture + ".keys.jsonl")
    finally:
        for name in ("connect", "tansu"):
            p = procs.get(name)
            if p and p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(["bash", os.path.join(HERE, "primary.sh"), "stop", pgdir])
        if a.keep:
            log("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
