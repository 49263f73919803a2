"""Interleaved A/B at a fine grain: two servers, one client alternating between them a block at a time.

The script as it ran on 2026-12-03 (paths and all): "0" is the code before, a worktree of a92c5d0 at
/tmp/before, "1" the code with one-write.diff applied at /work/main. Run from the project root over a
migrated, empty database (DATABASE_URL as for `bench`), `python alternate-blocks.py BLOCKS CYCLES`,
WC=gthread for SQLite's worker class (W: workers per server, 1). A cycle sends one message,
receives it and acks it; per block, the wall time per cycle and the CPU per cycle of the server's
processes, of this client and of PostgreSQL's backends of that database, from /proc. Blocks
alternate 0/1 and 1/0, so a drift of the VM's speed weighs on both alike. (Its first runs toggled
the same patch with WQ_COALESCE in one checkout, as a monkeypatch of gunicorn's Response.)
"""
import os, sys, time, subprocess, statistics as st, resource, urllib.request, json
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wonderq_project.settings")
import django; django.setup()
from django.contrib.auth import get_user_model
from django.conf import settings
from queues.services import token_create, queue_create
from queues.bench import load
from queues.management.gunicorn import gunicorn_command
from queues.management.commands.bench import _free_port, process_children

wc = os.environ.get("WC", "gevent")
user, _ = get_user_model().objects.get_or_create(username="bench")
_, token = token_create(user=user, name="pp")
servers = {}
for v in ("0", "1"):
    port = _free_port()
    code = "/tmp/before" if v == "0" else "/work/main"
    env = {"WONDERQ_RATE_PER_TOKEN": "10000000/m", **os.environ, "DJANGO_DEBUG": "0", "PYTHONPATH": code}
    p = subprocess.Popen([*gunicorn_command(bind=f"127.0.0.1:{port}", workers=int(os.environ.get("W", "1")), worker_class=("gunicorn.workers.gthread.ThreadWorker" if (v == "0" and wc == "gthread") else wc), threads=4, connections=100), "--log-level", "warning"], cwd=code, env=env)
    base = f"http://127.0.0.1:{port}/api/v1"
    for _ in range(150):
        try:
            urllib.request.urlopen(f"{base}/health/", timeout=2); break
        except OSError: time.sleep(0.2)
    q = f"pp{v}-{int(time.time())}"
    queue_create(name=q, owner=user, visibility_timeout=60)
    servers[v] = (p, base, q)

def tree(pid):
    kids = process_children(); out = [pid]; i = 0
    while i < len(out):
        out += kids.get(out[i], []); i += 1
    return out
def cpu(pids):
    t = 0
    for pid in pids:
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            t += int(f[11]) + int(f[12])
        except OSError: pass
    return t / os.sysconf("SC_CLK_TCK")
def pgcpu():
    t = 0
    for pid in subprocess.run(["pgrep", "-f", "postgres: .*benchx"], capture_output=True, text=True).stdout.split():
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split(); t += int(f[11]) + int(f[12])
        except OSError: pass
    return t / os.sysconf("SC_CLK_TCK")

clients = {v: load.Client(servers[v][1], token) for v in servers}
def cycle(v):
    c, q = clients[v], servers[v][2]
    c.post(f"/queues/{q}/messages/", {"messages": [{"body": "x" * 64}]})
    s, d, _ = c.post(f"/queues/{q}/receive/", {"max_messages": 1, "consumer": "pp"})
    c.post(f"/queues/{q}/ack/", {"receipts": [m["receipt"] for m in d["messages"]]})
for v in servers:
    for _ in range(300): cycle(v)
blocks = int(sys.argv[1]) if len(sys.argv) > 1 else 40
n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
res = {"0": [], "1": []}
for b in range(blocks):
    order = ("0", "1") if b % 2 == 0 else ("1", "0")
    for v in order:
        pids = tree(servers[v][0].pid)
        s0, c0, p0, t0 = cpu(pids), resource.getrusage(resource.RUSAGE_SELF), pgcpu(), time.perf_counter()
        for _ in range(n): cycle(v)
        t1, c1, s1, p1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF), cpu(pids), pgcpu()
        res[v].append(((t1 - t0) / n * 1e3, (s1 - s0) / n * 1e3, ((c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)) / n * 1e3, (p1 - p0) / n * 1e3))
for v in servers: servers[v][0].terminate()
names = ("wall ms/cycle", "server CPU ms/cycle", "client CPU ms/cycle", "pg CPU ms/cycle")
for k, name in enumerate(names):
    a = [r[k] for r in res["0"]]; b = [r[k] for r in res["1"]]
    ratios = [y / x for x, y in zip(a, b) if x]
    print(f"  sum ratio {sum(b)/sum(a):.3f}")
    print(f"{name}: off {st.median(a):.3f} on {st.median(b):.3f}  ratio median {st.median(ratios):.3f}, lower in {sum(r < 1 for r in ratios)}/{len(ratios)}")
json.dump(res, open(f"/tmp/b/pp-{wc}-{int(time.time())}.json", "w"))
