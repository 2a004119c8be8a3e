#!/usr/bin/env python3
"""bench/bench.py - the measuring half of `make bench`; bench/run.sh is the other half (packages,
build, captures) and calls the phases below in order:

  probe     what else is using the CPU (recorded again at the end: it skews every figure)
  offline   `ns2flows ingest` of each capture: wall and CPU time, then a daemon on the result
            proves that it stored exactly the generator's totals
  live      stepped UDP rates with ns2flows-replay into a fresh ns2flows and a fresh nfcapd,
            one at a time, same captures, same receive buffer
  storage   the store-format capture replayed into nfcapd at half its loss-free rate; its
            files as written and converted to LZ4; ns2flows' segments from `offline`
  queries   hyperfine on the same questions to both stores, and the answers compared
  engine    ns2flows alone: seal rows/s with and without the WAL (`ns2flows ingest`), and
            compaction rows/s (`ns2flows compact`) on a capture with hours small enough to merge
  http      wrk against /api/v1/top and /api/v1/devices/{addr} (one hour) while live flows
            are replayed into the same daemon: latency percentiles, requests/s, errors, loss
  soak      a sustained replay into a small db_budget with queries running: RSS and disk
            sampled, loss counted
  report    bench/results.json (replaced) and a dated section appended to bench/RESULTS.md

Every phase leaves its figures in RUN/data/<phase>.json; `report` reads only those, so every
number in the results comes from this run. Every command that is run is logged to
RUN/commands.txt. Processes started here are stopped by pid on the way out, however it ends.
Only the standard library is used.
"""
import argparse
import atexit
import datetime
import glob
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
ARGS = None          # parsed command line, set in main()
STARTED = []         # Popen objects still running, stopped at exit


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def fail(msg):
    log(f"error: {msg}")
    sys.exit(1)


# -------------------------------------------------------------------------------------------
# Commands: logged, run, and (for daemons) stopped again.

def shown(cmd):
    """The command as a shell line, with the repository root shortened to '.'."""
    root = ARGS.root.rstrip("/") + "/"
    return " ".join(shlex.quote(str(c)) for c in cmd).replace(root, "./")


def record(cmd, note=""):
    with open(os.path.join(ARGS.run, "commands.txt"), "a") as f:
        f.write(shown(cmd) + (f"   # {note}" if note else "") + "\n")


def run(cmd, note="", check=True, **kw):
    record(cmd, note)
    r = subprocess.run([str(c) for c in cmd], text=True, **kw)
    if check and r.returncode != 0:
        fail(f"command failed ({r.returncode}): {shown(cmd)}\n{r.stderr or ''}")
    return r


def run_timed(cmd, note=""):
    """Runs cmd to the end; returns (stdout, wall seconds, stderr). Fails the run on a
    non-zero exit. CPU time, where wanted, is taken by the caller from os.times()."""
    record(cmd, note)
    t0 = time.monotonic()
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    out, err = p.communicate()
    wall = time.monotonic() - t0
    if p.returncode != 0:
        fail(f"command failed ({p.returncode}): {shown(cmd)}\n{err}")
    return out, wall, err


def start(cmd, logname, note=""):
    record(cmd, note)
    logf = open(os.path.join(ARGS.run, "logs", logname), "a")
    p = subprocess.Popen([str(c) for c in cmd], stdout=logf, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    logf.close()
    STARTED.append(p)
    return p


def stop(p, timeout=120):
    """SIGTERM, wait (the collectors write what they hold), SIGKILL only if it hangs. Returns
    the exit status; p.cpu_total is the CPU time (user + system, all threads) of its whole life,
    from wait4(), so the work it does on the way out (ns2flows seals its open minutes then)
    is counted too."""
    p.cpu_total = None
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        t_end = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                p.cpu_total = ru.ru_utime + ru.ru_stime
                break
            if time.monotonic() > t_end:
                log(f"pid {p.pid} did not stop in {timeout} s; killing it")
                p.kill()
                p.wait()
                break
            time.sleep(0.02)
    if p in STARTED:
        STARTED.remove(p)
    return p.returncode


def stop_all():
    for p in list(STARTED):
        stop(p, timeout=30)


def on_signal(sig, frame):
    sys.exit(128 + sig)  # unwinds through finally blocks; atexit stops what is left


# -------------------------------------------------------------------------------------------
# The system under test, seen from outside.

def cpu_sets():
    """(sender CPUs, collector CPUs) as taskset lists. With two CPUs or more, the replay tool
    gets the first and the system under test the rest, so the two never compete for a core
    (on loopback the kernel delivers datagrams mostly on the sender's CPU). With one, no
    pinning: (None, None)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return str(cpus[0]), ",".join(str(c) for c in cpus[1:])


def pinned(cmd, which):
    """which: "sender", "collector", or "all" (not pinned: the queries phase, see --query-cpus)."""
    if which == "all":
        return list(cmd)
    sender, collector = cpu_sets()
    cpus = sender if which == "sender" else collector
    return (["taskset", "-c", cpus] if cpus else []) + list(cmd)


def collector_threads():
    """ns2flows' receive threads: one per CPU it may run on. (Its own default counts the
    machine's online CPUs, affinity or not; see bench/README.md.)"""
    _, collector = cpu_sets()
    return len(collector.split(",")) if collector else 1


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1 (collector and HTTP may share the number
    space; asking the kernel avoids clashing with anything else on the machine)."""
    for _ in range(100):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    fail("no free port on 127.0.0.1")


def stat_cpu(path):
    """(name, utime + stime in seconds) from a /proc stat file (a process's or a thread's)."""
    with open(path) as f:
        name, rest = f.read().split("(", 1)[1].rsplit(")", 1)
    rest = rest.split()
    return name, (int(rest[11]) + int(rest[12])) / CLK_TCK


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads), from /proc."""
    return stat_cpu(f"/proc/{pid}/stat")[1]


def cpu_jiffies():
    """{cpu number: (busy, steal)} from /proc/stat, in seconds. busy counts user, nice, system,
    irq and softirq time; steal is time the hypervisor gave to someone else."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                out[int(m.group(1))] = ((v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK,
                                        v[7] / CLK_TCK if len(v) > 7 else 0.0)
    return out


def thread_cpu(pid):
    """{thread name: CPU seconds} summed over the process's threads of each name (ns2flows names
    its own: ns2f-rx-netflow, ns2f-store, ns2f-seal, ...), from /proc."""
    out = {}
    for t in glob.glob(f"/proc/{pid}/task/*"):
        try:
            name, sec = stat_cpu(t + "/stat")
        except OSError:
            continue  # the thread ended
        out[name] = out.get(name, 0.0) + sec
    return out


def udp_sockets(port):
    """(rx_queue bytes, drops) of every UDP socket bound to port, from /proc/net/udp[6]."""
    out = []
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port:
                out.append((int(f[4].split(":")[1], 16), int(f[12])))
    return out


def socket_buffers(port):
    """What the kernel actually granted (skmem rb), as `ss` shows it."""
    r = run(["ss", "-uanm", f"sport = :{port}"], note="receive buffers granted",
            capture_output=True, check=False)
    return [int(x) for x in re.findall(r"rb(\d+)", r.stdout)]


def http_json(port, path, timeout=120):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.loads(r.read())


def wait_for(cond, what, timeout=30.0, p=None):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if p is not None and p.poll() is not None:
            fail(f"{what}: the process exited with status {p.returncode} (see {ARGS.run}/logs)")
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.05)
    fail(f"{what}: not ready after {timeout} s")


class Ns2flows:
    """A daemon on loopback ports of its own, on database folder db."""

    def __init__(self, db, tag, extra_conf="", cpus="collector"):
        self.db = db
        self.http, self.udp, sflow = free_port(), free_port(), free_port()
        conf = os.path.join(ARGS.run, f"{tag}.conf")
        threads = collector_threads() if cpus == "collector" else os.cpu_count() or 1
        with open(conf, "w") as f:
            f.write(f"# written by bench/bench.py\nrcvbuf = {ARGS.rcvbuf}\n"
                    f"ingest_threads = {threads}\n{extra_conf}")
        self.p = start(pinned([f"{ARGS.bin}/ns2flows", "-f", "-c", conf, "--db", db,
                               "--http", f"127.0.0.1:{self.http}",
                               "--listen", f"127.0.0.1:{self.udp}",
                               "--listen-sflow", f"127.0.0.1:{sflow}"], cpus),
                       f"{tag}.log")
        wait_for(lambda: http_json(self.http, "/api/v1/status", 2) is not None,
                 f"ns2flows ({tag})", p=self.p)

    def summary(self, query=""):
        return http_json(self.http, "/api/v1/summary" + query)

    def stop(self):
        rc = stop(self.p)
        if rc != 0:
            fail(f"ns2flows exited with status {rc} (see {ARGS.run}/logs)")
        return self.p.cpu_total


class Nfcapd:
    def __init__(self, flowdir, tag):
        os.makedirs(flowdir, exist_ok=True)
        self.dir = flowdir
        self.udp = free_port()
        # -t 3600: no rotation inside a measurement; -B: the same buffer ns2flows is given
        self.p = start(pinned(["nfcapd", "-b", "127.0.0.1", "-p", self.udp, "-w", flowdir,
                               "-B", ARGS.rcvbuf, "-t", "3600"], "collector"), f"{tag}.log")
        wait_for(lambda: len(udp_sockets(self.udp)) > 0, f"nfcapd ({tag})", p=self.p)

    def stop(self):
        rc = stop(self.p)
        if rc != 0:
            fail(f"nfcapd exited with status {rc} (see {ARGS.run}/logs)")
        return self.p.cpu_total


def nfdump_totals(flowdir):
    r = run(["nfdump", "-R", flowdir, "-I"], capture_output=True)
    kv = dict(re.findall(r"^(\w+): (\d+)$", r.stdout, re.M))
    return {"flows": int(kv.get("Flows", 0)), "packets": int(kv.get("Packets", 0)),
            "bytes": int(kv.get("Bytes", 0))}


def nfcapd_files(flowdir):
    return sorted(f for f in glob.glob(os.path.join(flowdir, "nfcapd.*"))
                  if re.search(r"nfcapd\.\d{12}$", f))


def seg_files(db):
    return sorted(glob.glob(os.path.join(db, "*.seg")))


def size_of(files):
    return sum(os.path.getsize(f) for f in files)


def capture_totals(path):
    """The generator's totals line kept beside each capture (run.sh writes it from --check)."""
    with open(path + ".totals") as f:
        line = f.read().split("\n")[0]
    t = dict(kv.split("=", 1) for kv in line.split())
    return {k: (v if k == "format" else int(v)) for k, v in t.items()}


def save(name, data):
    with open(os.path.join(ARGS.run, "data", f"{name}.json"), "w") as f:
        json.dump(data, f, indent=1)


def load(name):
    path = os.path.join(ARGS.run, "data", f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def capture(fmt):
    return os.path.join(ARGS.work, "captures", f"{fmt}-{ARGS.flows}-s{ARGS.seed}.pcap")


# -------------------------------------------------------------------------------------------
# Phase: probe. Other work on the machine skews every figure, so the harness records what else
# was running (CPU share over one second, per process) at the start and at the end.

def busy_processes(seconds=1.0):
    def snapshot():
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    head, rest = f.read().rsplit(")", 1)
                r = rest.split()
                out[int(pid)] = (head.split("(", 1)[1], int(r[11]) + int(r[12]))
            except (OSError, IndexError, ValueError):
                continue
        return out
    a = snapshot()
    time.sleep(seconds)
    b = snapshot()
    me = os.getpid()
    busy = []
    for pid, (name, ticks) in b.items():
        if pid in a and pid != me:
            share = (ticks - a[pid][1]) / CLK_TCK / seconds
            if share >= 0.05:
                busy.append({"pid": pid, "name": name, "cpu": round(share, 2)})
    with open("/proc/loadavg") as f:
        load = [float(x) for x in f.read().split()[:3]]
    return {"loadavg": load, "busy": sorted(busy, key=lambda x: -x["cpu"])}


def phase_probe():
    p = busy_processes()
    t_end = time.monotonic() + ARGS.wait_quiet
    if p["busy"] and ARGS.wait_quiet > 0:
        log(f"waiting up to {ARGS.wait_quiet} s for the other processes on the CPU to finish")
        while p["busy"] and time.monotonic() < t_end:
            time.sleep(4)
            p = busy_processes()
    save("probe-start", p)
    if p["busy"]:
        log("other processes are using the CPU, the figures will be skewed: " +
            ", ".join(f"{x['name']} ({x['cpu'] * 100:.0f}%)" for x in p["busy"]))


# -------------------------------------------------------------------------------------------
# Phase: offline ingest.

def phase_offline():
    res = {}
    for fmt in ARGS.formats:
        cap = capture(fmt)
        want = capture_totals(cap)
        db = os.path.join(ARGS.work, "offline", fmt)
        shutil.rmtree(db, ignore_errors=True)
        os.makedirs(os.path.dirname(db), exist_ok=True)
        before = os.times()
        out, wall, _ = run_timed(pinned([f"{ARGS.bin}/ns2flows", "ingest", "--db", db, cap],
                                        "collector"), note=f"offline ingest, {fmt}")
        after = os.times()
        cpu = (after.children_user - before.children_user) + \
              (after.children_system - before.children_system)
        m = re.search(r"(\d+) datagrams, (\d+) flows, (\d+) decode errors, (\d+) skipped, "
                      r"(\d+) not stored", out)
        if not m:
            fail(f"unexpected ingest output: {out!r}")
        datagrams, flows, errors, skipped, dropped = map(int, m.groups())
        # Proof that what was stored is what was generated: a daemon on the folder answers.
        d = Ns2flows(db, f"verify-{fmt}")
        try:
            s = d.summary()
        finally:
            d.stop()
        got = {"flows": s["flows"], "packets": s["packets"], "bytes": s["bytes"],
               "first_ms": round(s["first"] * 1000), "last_ms": round(s["last"] * 1000)}
        mism = [k for k in got if got[k] != want[k]]
        segs = seg_files(db)
        res[fmt] = {
            "capture": os.path.relpath(cap, ARGS.root), "capture_bytes": os.path.getsize(cap),
            "generated": want, "datagrams": datagrams, "flows_decoded": flows,
            "decode_errors": errors, "not_stored": dropped, "wall_s": wall, "cpu_s": cpu,
            "flows_per_s": flows / wall if wall else None,
            "cpu_us_per_flow": cpu * 1e6 / flows if flows else None,
            "stored": got, "verified": not mism and errors == 0 and dropped == 0,
            "mismatch": mism, "segments": len(segs), "segment_bytes": size_of(segs),
            "bytes_per_flow": size_of(segs) / got["flows"] if got["flows"] else None,
        }
        log(f"offline {fmt}: {flows} flows in {wall:.2f} s wall, {cpu:.2f} s CPU; "
            f"stored totals {'match' if not mism else 'DIFFER in ' + ','.join(mism)}")
    save("offline", res)


# -------------------------------------------------------------------------------------------
# Phase: live UDP ingest at stepped rates.

def step_capture(fmt, rate):
    """A capture whose flows span STEP seconds at `rate` flows/s, made on first use."""
    n = int(rate * ARGS.step_seconds)
    path = os.path.join(ARGS.work, "captures", "steps",
                        f"{fmt}-{n}-{ARGS.step_seconds}s-k{ARGS.exporters}-s{ARGS.seed}.pcap")
    cmd = [f"{ARGS.bin}/ns2flows-gen", "--format", fmt, "--flows", n, "--seed", ARGS.seed,
           "--start", ARGS.start, "--duration", ARGS.step_seconds, "--exporters", ARGS.exporters,
           "--out", path]
    # remade whenever the generator was rebuilt since
    if not os.path.exists(path) or not os.path.exists(path + ".totals") or \
            os.path.getmtime(path + ".totals") < os.path.getmtime(f"{ARGS.bin}/ns2flows-gen"):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        r = run(cmd, note="step capture", capture_output=True)
        with open(path + ".totals", "w") as f:
            f.write(r.stdout)
    else:
        with open(os.path.join(ARGS.run, "commands.txt"), "a") as f:
            f.write(f"# reused, made earlier by: {shown(cmd)}\n")
    return path


def drain(port, pid, flows_now=None, expected=None, timeout=60.0):
    """Waits until the collector has read everything queued for it: the sockets' receive
    queues are empty and it has stopped working (CPU, or the stored count, flat for 0.3 s)."""
    t_end = time.monotonic() + timeout
    last, flat_since = None, None
    while time.monotonic() < t_end:
        rx = sum(q for q, _ in udp_sockets(port))
        mark = flows_now() if flows_now else cpu_seconds(pid)
        if flows_now and expected is not None and mark == expected and rx == 0:
            return
        now = time.monotonic()
        if rx == 0 and mark == last:
            if flat_since is None:
                flat_since = now
            elif now - flat_since >= 0.3:
                return
        else:
            flat_since = None
        last = mark
        time.sleep(0.1)
    log(f"port {port}: still busy after {timeout} s; measuring anyway")


def live_step(system, fmt, cap, speed_args, label):
    want = capture_totals(cap)
    tag = f"live-{system}-{fmt}-{label}"
    if system == "ns2flows":
        db = os.path.join(ARGS.work, "live", "ns2flows-db")
        shutil.rmtree(db, ignore_errors=True)
        os.makedirs(os.path.dirname(db), exist_ok=True)  # ns2flows creates the folder, not its parent
        c = Ns2flows(db, tag)
        port = c.udp
    else:
        flowdir = os.path.join(ARGS.work, "live", "nfcapd")
        shutil.rmtree(flowdir, ignore_errors=True)
        c = Nfcapd(flowdir, tag)
        port = c.udp
    try:
        rb = socket_buffers(port)
        time.sleep(0.2)  # let start-up work finish before the CPU count starts
        cpu0, sys0 = cpu_seconds(c.p.pid), cpu_jiffies()
        th0 = thread_cpu(c.p.pid) if system == "ns2flows" else {}
        out, wall, _ = run_timed(pinned([f"{ARGS.bin}/ns2flows-replay", cap, "--to",
                                         f"127.0.0.1:{port}", *speed_args, "--quiet"], "sender"),
                                 note=f"live {system} {fmt} {label}")
        m = re.search(r"sent (\d+) datagrams", out)
        sent_dgrams = int(m.group(1)) if m else -1
        if sent_dgrams != want["datagrams"]:
            fail(f"replay sent {sent_dgrams} of {want['datagrams']} datagrams")
        if system == "ns2flows":
            drain(port, c.p.pid, lambda: c.summary()["flows"], want["flows"])
        else:
            drain(port, c.p.pid)
        cpu1, sys1 = cpu_seconds(c.p.pid), cpu_jiffies()
        drops = sum(d for _, d in udp_sockets(port))
        stored = c.summary()["flows"] if system == "ns2flows" else None
        if system == "ns2flows":
            # where the time went (receive, store with the WAL, seal) and where flows were
            # lost inside the collector: its ring to the store thread, or the database
            th1 = thread_cpu(c.p.pid)
            threads = {k: round(v - th0.get(k, 0.0), 3) for k, v in sorted(th1.items())
                       if v - th0.get(k, 0.0) > 0}
            st = http_json(c.http, "/api/v1/status")
            inner = {"queue_dropped": st["ingest"]["queue_dropped"],
                     "store_dropped": st["ingest"]["store_dropped"],
                     "db_dropped": st["database"]["flows_dropped"],
                     "db_dropped_memory": st["database"]["flows_dropped_memory"]}
    finally:
        cpu_life = c.stop()
    if system == "nfcapd":
        stored = nfdump_totals(flowdir)["flows"]
    loss = want["flows"] - stored
    r = {"system": system, "format": fmt, "step": label, "capture": cap,
         "target_fps": want["flows"] / ARGS.step_seconds if label != "max" else None,
         "sent_flows": want["flows"], "sent_datagrams": sent_dgrams, "replay_wall_s": wall,
         "achieved_fps": want["flows"] / wall, "stored_flows": stored, "loss_flows": loss,
         "loss_pct": 100.0 * loss / want["flows"], "kernel_drops_datagrams": drops,
         "cpu_s": cpu1 - cpu0,
         "cpu_us_per_flow": (cpu1 - cpu0) * 1e6 / stored if stored else None,
         # the whole life: start, receive, and what is written at exit (ns2flows compresses
         # and writes its minutes there when the step is shorter than a minute)
         "cpu_life_s": cpu_life,
         "cpu_life_us_per_flow": cpu_life * 1e6 / stored if stored and cpu_life else None,
         "rcvbuf_granted": rb}
    if system == "ns2flows":
        r["thread_cpu_s"] = threads
        r["inner_drops_flows"] = inner
    # Interference, to read the loss with: CPU time the hypervisor stole from this machine, and
    # busy time on the collector's CPUs that was not the collector's (other processes, and the
    # kernel's share of receiving, which both collectors pay alike).
    _, coll = cpu_sets()
    coll_cpus = [int(x) for x in coll.split(",")] if coll else list(sys1)
    r["steal_s"] = sum(sys1[k][1] - sys0[k][1] for k in sys1 if k in sys0)
    r["other_busy_s"] = max(0.0, sum(sys1[k][0] - sys0[k][0] for k in coll_cpus
                                     if k in sys0 and k in sys1) - r["cpu_s"])
    log(f"live {system:8} {fmt:5} {label:>8}: {r['achieved_fps']:10.0f} flows/s sent, "
        f"loss {loss} ({r['loss_pct']:.2f}%), CPU {r['cpu_s']:.2f} s, stolen "
        f"{r['steal_s']:.2f} s")
    return r


def measured_step(system, fmt, cap, speed_args, label):
    """A step, repeated once if it lost flows: on a shared machine a neighbour can cost a
    collector a burst now and then. The attempt with the smaller loss counts; both are kept."""
    r = live_step(system, fmt, cap, speed_args, label)
    if r["loss_flows"] > 0:
        again = live_step(system, fmt, cap, speed_args, label)
        best, other = (again, r) if again["loss_flows"] < r["loss_flows"] else (r, again)
        best["other_attempt"] = {k: other[k] for k in ("achieved_fps", "loss_flows", "loss_pct",
                                                       "cpu_s", "cpu_life_s", "steal_s",
                                                       "other_busy_s")}
        r = best
    return r


def phase_live():
    res = {}
    systems = ["ns2flows", "nfcapd"]
    for fmt in ARGS.live_formats:
        steps, alive, last_cap = [], {s: True for s in systems}, None
        for rate in ARGS.rates:
            if not any(alive.values()):
                break
            cap = last_cap = step_capture(fmt, rate)
            for s in systems:  # one at a time: the other is not running
                if alive[s]:
                    r = measured_step(s, fmt, cap, ["--speed", "1"], f"{rate}")
                    steps.append(r)
                    alive[s] = r["loss_flows"] == 0
        # Between the last clean and the first lossy step, the geometric middle, ARGS.refine
        # times, so the highest loss-free rate is known closer than the ladder's factor.
        for s in systems:
            for _ in range(ARGS.refine):
                mine = [r for r in steps if r["system"] == s and r["step"] != "max"]
                lossy = [int(r["step"]) for r in mine if r["loss_flows"] > 0]
                if not lossy:
                    break
                hi = min(lossy)
                clean = [int(r["step"]) for r in mine if r["loss_flows"] == 0 and int(r["step"]) < hi]
                if not clean or hi <= max(clean) * 1.1:
                    break
                mid = int(round(math.sqrt(max(clean) * hi), -4))
                steps.append(measured_step(s, fmt, step_capture(fmt, mid), ["--speed", "1"],
                                           f"{mid}"))
        # Whoever lost nothing on the ladder gets the largest capture as fast as replay can.
        for s in systems:
            if alive[s] and last_cap:
                r = measured_step(s, fmt, last_cap, ["--max"], "max")
                steps.append(r)
        # Step captures are quick to make again and large (up to a few GB a format): not kept.
        for r in {r["capture"] for r in steps}:
            for f in (r, r + ".totals"):
                if os.path.exists(f):
                    os.unlink(f)
        steps.sort(key=lambda r: (systems.index(r["system"]),
                                  float("inf") if r["step"] == "max" else int(r["step"])))
        summary = {}
        for s in systems:
            mine = [r for r in steps if r["system"] == s]
            clean = [r for r in mine if r["loss_flows"] == 0]
            first_loss = min((r for r in mine if r["loss_flows"] > 0),
                             key=lambda r: r["achieved_fps"], default=None)
            best = max(clean, key=lambda r: r["achieved_fps"]) if clean else None
            summary[s] = {
                "max_loss_free_fps": best["achieved_fps"] if best else None,
                "cpu_us_per_flow_at_max": best["cpu_us_per_flow"] if best else None,
                "cpu_life_us_per_flow_at_max": best["cpu_life_us_per_flow"] if best else None,
                "first_lossy_fps": first_loss["achieved_fps"] if first_loss else None,
                # nothing lost even at --max: the sender, not the collector, was the limit
                "sender_bound": first_loss is None,
            }
        res[fmt] = {"steps": steps, "summary": summary}
    shutil.rmtree(os.path.join(ARGS.work, "live"), ignore_errors=True)
    save("live", res)


# -------------------------------------------------------------------------------------------
# Phase: storage.

def phase_storage():
    fmt = ARGS.store_format
    cap = capture(fmt)
    want = capture_totals(cap)
    live = load("live") or {}
    best = ((live.get(fmt) or {}).get("summary") or {}).get("nfcapd", {}).get("max_loss_free_fps")
    # Half the highest loss-free rate leaves room for the machine's noise; the goal here is
    # nfcapd's files holding every flow, not speed.
    rate = min(best / 2, 500000) if best else 100000
    speed = rate * ARGS.duration / want["flows"]
    base = os.path.join(ARGS.work, "store")
    plain, lz4 = os.path.join(base, "nfcapd"), os.path.join(base, "nfcapd-lz4")
    shutil.rmtree(base, ignore_errors=True)
    c = Nfcapd(plain, "store-nfcapd")
    try:
        run_timed(pinned([f"{ARGS.bin}/ns2flows-replay", cap, "--to", f"127.0.0.1:{c.udp}",
                          "--speed", f"{speed:.6g}", "--quiet"], "sender"),
                  note=f"fill nfcapd at ~{rate:.0f} flows/s")
        drain(c.udp, c.p.pid)
    finally:
        c.stop()
    stored = nfdump_totals(plain)
    shutil.copytree(plain, lz4)
    run(["nfdump", "-R", lz4, "-J", "3"], note="convert the copy to LZ4 (what nfcapd -y writes)",
        capture_output=True)
    off = (load("offline") or {}).get(fmt)
    if not off:
        fail("storage needs the offline phase's database")
    res = {
        "format": fmt, "flows_generated": want["flows"], "nfcapd_fill_fps": rate,
        "nfcapd": {"flows": stored["flows"], "files": len(nfcapd_files(plain)),
                   "bytes": size_of(nfcapd_files(plain)),
                   "bytes_per_flow": size_of(nfcapd_files(plain)) / stored["flows"]
                   if stored["flows"] else None,
                   "totals_match": stored == {k: want[k] for k in ("flows", "packets", "bytes")}},
        "nfcapd_lz4": {"flows": stored["flows"], "bytes": size_of(nfcapd_files(lz4)),
                       "bytes_per_flow": size_of(nfcapd_files(lz4)) / stored["flows"]
                       if stored["flows"] else None},
        "ns2flows": {"flows": off["stored"]["flows"], "segments": off["segments"],
                     "bytes": off["segment_bytes"], "bytes_per_flow": off["bytes_per_flow"],
                     "db": os.path.relpath(os.path.join(ARGS.work, "offline", fmt), ARGS.root)},
    }
    log(f"storage {fmt}: ns2flows {res['ns2flows']['bytes_per_flow']:.2f} B/flow, nfcapd "
        f"{res['nfcapd']['bytes_per_flow']:.2f}, nfcapd LZ4 {res['nfcapd_lz4']['bytes_per_flow']:.2f}")
    save("storage", res)


# -------------------------------------------------------------------------------------------
# Phase: queries.

def utc(sec):
    return datetime.datetime.fromtimestamp(sec, datetime.timezone.utc)


def queries_list(http, nfdir, host=None):
    """(name, ns2flows URL, nfdump arguments, ns2flows-query arguments) for each question.
    host: an address for the filtered questions, None when this ns2flows has no `filter`
    parameter."""
    w0, w1 = ARGS.start + ARGS.duration // 2, ARGS.start + ARGS.duration // 2 + 300
    nf_win = f"{utc(w0):%Y/%m/%d.%H:%M:%S}-{utc(w1):%Y/%m/%d.%H:%M:%S}"
    base = f"http://127.0.0.1:{http}/api/v1"
    qs = [
        ("summary", f"{base}/summary", ["-I"], ["-I"]),
        ("top10_src_bytes", f"{base}/top?by=srcaddr&metric=bytes&limit=10",
         ["-s", "srcip/bytes", "-n", "10"], ["-s", "srcip/bytes", "-n", "10"]),
        ("top10_dstport_bytes", f"{base}/top?by=dstport&metric=bytes&limit=10",
         ["-s", "dstport/bytes", "-n", "10"], ["-s", "dstport/bytes", "-n", "10"]),
        # who talks to whom: nfdump aggregates directed pairs (-A srcip,dstip); ns2flows asks
        # the same, and its unordered conversations are timed beside it
        ("top10_pairs_bytes", f"{base}/top?by=srcaddr,dstaddr&metric=bytes&limit=10",
         ["-s", "record/bytes", "-A", "srcip,dstip", "-n", "10"],
         ["-A", "srcip,dstip", "-n", "10"]),
        ("top10_conversations_bytes", f"{base}/top?by=conversation&metric=bytes&limit=10",
         ["-s", "record/bytes", "-A", "srcip,dstip", "-n", "10"],
         ["-s", "conversation/bytes", "-n", "10"]),
        ("window5m_top10_src_bytes",
         f"{base}/top?by=srcaddr&metric=bytes&limit=10&from={w0}&to={w1}",
         ["-t", nf_win, "-s", "srcip/bytes", "-n", "10"],
         ["-t", f"{w0}-{w1}", "-s", "srcip/bytes", "-n", "10"]),
    ]
    if host:
        net16 = ".".join(host.split(".")[:2]) + ".0.0/16"
        q = urllib.parse.quote
        # nfdump has no filtered -I: its totals come with a (small) statistic, by protocol
        qs.append(("one_host_summary", f"{base}/summary?filter={q('host ' + host)}",
                   ["-s", "proto/bytes", "-n", "10", f"host {host}"], ["-I", f"host {host}"]))
        qs.append(("net16_top10_dstport_bytes",
                   f"{base}/top?by=dstport&metric=bytes&limit=10&filter={q('net ' + net16)}",
                   ["-s", "dstport/bytes", "-n", "10", f"net {net16}"],
                   ["-s", "dstport/bytes", "-n", "10", f"net {net16}"]))
    return qs


def peak_rss_cmd(cmd, where, note):
    """The peak resident memory (bytes) of one run of cmd, as GNU time reports it (ru_maxrss).
    Not wait4() from here: a child started from Python (vfork, then exec) keeps the
    interpreter's own peak, ~28 MB, as its floor."""
    tf = os.path.join(ARGS.run, "data", "peak-rss.txt")
    cmd = ["/usr/bin/time", "-f", "%M", "-o", tf, *[str(c) for c in pinned(cmd, where)]]
    run(cmd, note=note, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, TZ="UTC"))
    with open(tf) as f:
        return int(f.read().split()[-1]) * 1024


def proc_mem(pid):
    """(VmRSS, VmHWM) of a running process, bytes: its resident memory now and at its peak (0
    for a process past its exit, which has no memory lines)."""
    with open(f"/proc/{pid}/status") as f:
        kv = dict(line.split(":", 1) for line in f if ":" in line)
    return tuple(int(kv.get(k, "0 kB").split()[0]) * 1024 for k in ("VmRSS", "VmHWM"))


def hyperfine(cmds, out_json, where):
    """where: the CPUs hyperfine and what it runs are pinned to (curl is a client, on the
    sender's CPU; nfdump is the system under test, on the collector's)."""
    cmd = ["hyperfine", "-N", "--style", "basic", "--warmup", ARGS.warmup, "--runs", ARGS.runs,
           "--export-json", out_json]
    for name, line in cmds:
        cmd += ["-n", name, line]
    run(pinned(cmd, where), note="query timings", capture_output=True,
        env=dict(os.environ, TZ="UTC"))
    with open(out_json) as f:
        return {r["command"]: r for r in json.load(f)["results"]}


def stats(r):
    t = r["times"]
    return {"median_s": r["median"], "mean_s": r["mean"], "stddev_s": r["stddev"],
            "min_s": r["min"], "max_s": r["max"], "runs": len(t),
            "iqr_s": (statistics.quantiles(t, n=4)[2] - statistics.quantiles(t, n=4)[0])
            if len(t) >= 2 else 0.0}


def nfdump_csv_rows(text):
    """The ranked rows of `nfdump -s ... -o csv`: [(key, flows, packets, bytes)], and the
    summary's totals {flows, packets, bytes} (None if absent)."""
    rows, total, lines = [], None, text.splitlines()
    for i, line in enumerate(lines):
        f = line.split(",")
        if len(f) >= 10 and f[0][:2] == "20" and f[4] != "val":
            rows.append((f[4], int(f[5]), int(f[7]), int(f[9])))
        if line.startswith("flows,bytes,packets") and i + 1 < len(lines):
            v = lines[i + 1].split(",")
            total = {"flows": int(v[0]), "bytes": int(v[1]), "packets": int(v[2])}
    return rows, total


def nfdump_record_rows(text):
    """The aggregated records of `nfdump -s record/... -A srcip,dstip -o csv`:
    [(srcip, dstip, packets, bytes)]."""
    rows = []
    for line in text.splitlines():
        f = line.split(",")
        if len(f) > 12 and f[0][:2] == "20":
            rows.append((f[3], f[4], int(f[11]), int(f[12])))
    return rows


def compare(name, ns_answer, nfdir, nf_args):
    """Asks nfdump the same question once more and says whether the answers agree."""
    env = dict(os.environ, TZ="UTC")
    ns_tot = {k: (ns_answer if "summary" in name else ns_answer["total"])[k]
              for k in ("flows", "packets", "bytes")}
    if name == "summary":
        nf = nfdump_totals(nfdir)
        return {"agree": ns_tot == nf, "ns2flows": ns_tot, "nfdump": nf}
    r = run(["nfdump", "-R", nfdir, *nf_args, "-o", "csv"], note=f"answer of {name}",
            capture_output=True, env=env)
    rows, nf_tot = nfdump_csv_rows(r.stdout)
    if "pairs" in name or "conversations" in name:
        nf_rows = nfdump_record_rows(r.stdout)
        if "conversations" in name:  # unordered pairs: nfdump has no such grouping
            return {"agree": None, "note": "nfdump groups directed pairs only",
                    "ns2flows_first": ns_answer["rows"][0] if ns_answer["rows"] else None,
                    "nfdump_first": nf_rows[0] if nf_rows else None}
        ns_rows = [(x["key"]["srcaddr"], x["key"]["dstaddr"], x["packets"], x["bytes"])
                   for x in ns_answer["rows"]]
        diff = next(({"rank": i + 1, "ns2flows": a, "nfdump": b}
                     for i, (a, b) in enumerate(zip(ns_rows, nf_rows)) if a != b), None)
        return {"agree": ns_rows == nf_rows, "first_difference": diff}
    if "summary" in name:  # totals only
        return {"agree": ns_tot == nf_tot, "ns2flows": ns_tot, "nfdump": nf_tot}
    key = next(iter(ns_answer["rows"][0]["key"])) if ns_answer["rows"] else None
    ns_rows = [(str(x["key"][key]), x["flows"], x["packets"], x["bytes"])
               for x in ns_answer["rows"]]
    diff = next(({"rank": i + 1, "ns2flows": a, "nfdump": b}
                 for i, (a, b) in enumerate(zip(ns_rows, rows)) if a != b), None)
    return {"agree": ns_rows == rows, "first_difference": diff,
            "ns2flows_flows_matched": ns_tot["flows"],
            "nfdump_flows_matched": nf_tot["flows"] if nf_tot else None}


def has_filter(http):
    """Whether this ns2flows takes the `filter` parameter (it answers 400 to unknown ones)."""
    try:
        http_json(http, "/api/v1/summary?filter=any&from=0&to=0")
        return True
    except urllib.error.HTTPError:
        return False


def phase_queries():
    fmt = ARGS.store_format
    db = os.path.join(ARGS.work, "offline", fmt)
    nfdir = os.path.join(ARGS.work, "store", "nfcapd")
    if not os.path.isdir(db) or not nfcapd_files(nfdir):
        fail("queries need the offline and storage phases' stores")
    # Queries have no sender to keep apart: with --query-cpus all (the default) ns2flows, nfdump
    # and curl may each use every CPU, as they would on an operator's machine (ns2flows scans
    # with one worker a CPU; nfdump 1.7 decompresses on threads of its own).
    qcpu = "all" if ARGS.query_cpus == "all" else "collector"
    d = Ns2flows(db, "queries", cpus=qcpu)
    try:
        host = None
        if has_filter(d.http):  # the busiest source: the host an operator would look at
            host = http_json(d.http, "/api/v1/top?by=srcaddr&metric=bytes&limit=1")["rows"][0][
                "key"]["srcaddr"]
        qs = queries_list(d.http, nfdir, host)
        rss_start = proc_mem(d.p.pid)[0]
        out = os.path.join(ARGS.run, "data")
        # curl's own cost (its start and one request the daemon answers from counters) is in
        # every HTTP figure: timed beside them, so the report can say how much of each it is
        base_u = f"http://127.0.0.1:{d.http}/api/v1/status"
        ns_t = hyperfine([(f"ns2flows {n}", f"curl -sf -o /dev/null {shlex.quote(u)}")
                          for n, u, _, _ in qs]
                         + [("curl baseline", f"curl -sf -o /dev/null {shlex.quote(base_u)}")],
                         os.path.join(out, "hyperfine-ns2flows.json"),
                         "all" if qcpu == "all" else "sender")
        nf_t = hyperfine([(f"nfdump {n}", " ".join(shlex.quote(a) for a in
                                                  ["nfdump", "-R", nfdir, *args]))
                          for n, _, args, _ in qs], os.path.join(out, "hyperfine-nfdump.json"),
                         qcpu)
        qtool = os.path.join(ARGS.bin, "ns2flows-query")
        # TZ=UTC comes from hyperfine's environment (as for nfdump): an `env` in the command
        # would add its own exec to every timing
        q_cmd = {n: [qtool, "--db", db, *qa] for n, _, _, qa in qs}
        q_t = hyperfine([(f"ns2flows-query {n}", " ".join(shlex.quote(a) for a in q_cmd[n]))
                         for n, _, _, _ in qs], os.path.join(out, "hyperfine-ns2flows-query.json"),
                        qcpu)
        res = {}
        for n, u, args, _ in qs:
            with urllib.request.urlopen(u, timeout=600) as r:
                answer = json.loads(r.read())
            record(["curl", "-s", u], note=f"answer of {n}")
            res[n] = {"ns2flows": stats(ns_t[f"ns2flows {n}"]),
                      "nfdump": stats(nf_t[f"nfdump {n}"]),
                      "ns2flows_query": stats(q_t[f"ns2flows-query {n}"]),
                      "ns2flows_query_command": shown(q_cmd[n]),
                      "ns2flows_command": f"curl -sf -o /dev/null '{u}'",
                      "nfdump_command": shown(["nfdump", "-R", nfdir, *args]),
                      "answers": compare(n, answer, nfdir, args)}
            # peak memory (issue 6 point 7): one more run of each, after the timings
            res[n]["peak_rss_bytes"] = {
                "ns2flows_query": peak_rss_cmd(q_cmd[n], qcpu, f"peak memory of {n}"),
                "nfdump": peak_rss_cmd(["nfdump", "-R", nfdir, *args], qcpu,
                                       f"peak memory of {n}")}
            res[n]["ratio_nfdump_over_ns2flows"] = \
                res[n]["nfdump"]["median_s"] / res[n]["ns2flows"]["median_s"]
            res[n]["ratio_nfdump_over_ns2flows_query"] = \
                res[n]["nfdump"]["median_s"] / res[n]["ns2flows_query"]["median_s"]
            log(f"query {n}: ns2flows {res[n]['ns2flows']['median_s'] * 1000:.1f} ms, nfdump "
                f"{res[n]['nfdump']['median_s'] * 1000:.1f} ms (median), answers "
                f"{'agree' if res[n]['answers']['agree'] else 'differ'}")
        rss_end, rss_peak = proc_mem(d.p.pid)
    finally:
        d.stop()
    save("queries", {"format": fmt, "flows": capture_totals(capture(fmt))["flows"],
                     "cpus": qcpu,
                     "daemon_rss_bytes": {"start": rss_start, "end": rss_end, "peak": rss_peak},
                     "curl_baseline": stats(ns_t["curl baseline"]),
                     "curl_baseline_command": f"curl -sf -o /dev/null '{base_u}'",
                     "filters": host is not None, "host": host,
                     "window": [ARGS.start + ARGS.duration // 2,
                                ARGS.start + ARGS.duration // 2 + 300],
                     "queries": res})


# -------------------------------------------------------------------------------------------
# Phase: engine. The storage engine's own rates (issue 5 point 10): sealing (sort, encode,
# write a minute segment) with and without the WAL, and compaction (minute segments of a closed
# hour merged into one hour segment). Merged segments are capped at 2^18 rows, so this phase
# uses a capture of its own whose hours hold about ENGINE_ROWS_PER_HOUR flows each.

ENGINE_ROWS_PER_HOUR = 200000  # under the compactor's cap of 262144 rows a merged segment


def made_capture(name, fmt, flows, duration, exporters, seed):
    """A capture made on first use (or when the generator was rebuilt since) under
    captures/; returns (path, totals)."""
    path = os.path.join(ARGS.work, "captures", name)
    cmd = [f"{ARGS.bin}/ns2flows-gen", "--format", fmt, "--flows", flows, "--seed", seed,
           "--start", ARGS.start, "--duration", duration, "--exporters", exporters, "--out", path]
    if not os.path.exists(path) or not os.path.exists(path + ".totals") or \
            os.path.getmtime(path + ".totals") < os.path.getmtime(f"{ARGS.bin}/ns2flows-gen"):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        r = run(cmd, note="capture", capture_output=True)
        with open(path + ".totals", "w") as f:
            f.write(r.stdout)
    else:
        with open(os.path.join(ARGS.run, "commands.txt"), "a") as f:
            f.write(f"# reused, made earlier by: {shown(cmd)}\n")
    return path, capture_totals(path)


def engine_ingest(cap, db, wal):
    shutil.rmtree(db, ignore_errors=True)
    os.makedirs(os.path.dirname(db), exist_ok=True)
    before = os.times()
    out, wall, _ = run_timed(pinned([f"{ARGS.bin}/ns2flows", "ingest", "--db", db,
                                     *([] if wal else ["--no-wal"]), cap], "collector"),
                             note=f"engine: ingest {'with' if wal else 'without'} the WAL")
    after = os.times()
    cpu = (after.children_user - before.children_user) + \
          (after.children_system - before.children_system)
    m = re.search(r"ingest: .*?(\d+) flows,.*?(\d+) not stored", out)
    s = re.search(r"seal: (\d+) rows, (\d+) segments, ([\d.]+) s", out)
    if not m or not s:
        fail(f"unexpected ingest output: {out!r}")
    flows, rows, secs = int(m.group(1)), int(s.group(1)), float(s.group(3))
    segs = seg_files(db)
    return {"wal": wal, "flows": flows, "not_stored": int(m.group(2)), "wall_s": wall,
            "cpu_s": cpu, "flows_per_s": flows / wall if wall else None,
            "rows_sealed": rows, "segments": int(s.group(2)), "seal_s": secs,
            "seal_rows_per_s": rows / secs if secs else None,
            "segment_bytes": size_of(segs),
            "bytes_per_flow": size_of(segs) / flows if flows else None}


def phase_engine():
    hours = max(2, math.ceil(ARGS.flows / ENGINE_ROWS_PER_HOUR))
    cap, want = made_capture(f"engine-v9-{ARGS.flows}-{hours}h-s{ARGS.seed}.pcap", "v9",
                             ARGS.flows, hours * 3600, ARGS.exporters, ARGS.seed)
    base = os.path.join(ARGS.work, "engine")
    wal = engine_ingest(cap, os.path.join(base, "wal"), True)
    nowal = engine_ingest(cap, os.path.join(base, "nowal"), False)
    shutil.rmtree(os.path.join(base, "wal"), ignore_errors=True)
    db = os.path.join(base, "nowal")
    out, wall, _ = run_timed(pinned([f"{ARGS.bin}/ns2flows", "compact", "--db", db],
                                    "collector"), note="engine: compaction")
    m = re.search(r"compact: (\d+) merges, (\d+) segments merged, (\d+) -> (\d+) segments, "
                  r"(\d+) -> (\d+) bytes, (\d+) rows written, ([\d.]+) s merging", out)
    if not m:
        fail(f"unexpected compact output: {out!r}")
    merges, merged, s0, s1, b0, b1, rows = (int(x) for x in m.groups()[:7])
    msecs = float(m.group(8))
    segs = seg_files(db)
    hour_segs = [f for f in segs if os.path.basename(f).startswith("h")]
    # the store must still answer the generator's totals after the merges
    d = Ns2flows(db, "engine-verify")
    try:
        s = d.summary()
    finally:
        d.stop()
    same = all(s[k] == want[k] for k in ("flows", "packets", "bytes"))
    res = {"capture": os.path.relpath(cap, ARGS.root), "flows": want["flows"], "hours": hours,
           "flows_per_hour": want["flows"] / hours, "cap_rows": 262144,
           "ingest_wal": wal, "ingest_no_wal": nowal,
           "wal_cost_pct": 100.0 * (wal["wall_s"] - nowal["wall_s"]) / nowal["wall_s"]
           if nowal["wall_s"] else None,
           "compaction": {"merges": merges, "segments_merged": merged, "segments_before": s0,
                          "segments_after": s1, "hour_segments": len(hour_segs),
                          "rows_written": rows, "merge_s": msecs, "wall_s": wall,
                          "rows_per_s": rows / msecs if msecs else None,
                          "bytes_before": b0, "bytes_after": b1,
                          "bytes_per_flow_after": size_of(segs) / want["flows"],
                          "totals_after_match": same}}
    log(f"engine: seal {fmt_n(wal['seal_rows_per_s'])} rows/s with WAL, "
        f"{fmt_n(nowal['seal_rows_per_s'])} without; ingest {wal['wall_s']:.2f} s vs "
        f"{nowal['wall_s']:.2f} s; compaction {merges} merges, "
        f"{fmt_n(res['compaction']['rows_per_s'])} rows/s; totals after "
        f"{'match' if same else 'DIFFER'}")
    save("engine", res)
    if not same:
        fail("the compacted store's totals differ from the generated ones")


# -------------------------------------------------------------------------------------------
# Phase: http. wrk against /api/v1/top and /api/v1/devices/{addr} over one hour of the engine
# phase's (compacted) store while live flows are replayed into the same daemon (issue 7
# point 5): p50/p90/p99, requests/s, errors, and the ingest's loss meanwhile.

def wrk_parse(text):
    def ms(v):
        n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
        return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
    lat = dict((p, ms(v)) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     text)
    return {"p50_ms": lat.get("50"), "p90_ms": lat.get("90"), "p99_ms": lat.get("99"),
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
            "requests": int(re.search(r"(\d+) requests in", text).group(1)),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0}


def ingest_counts(d):
    st = http_json(d.http, "/api/v1/status")
    return {"flows": st["ingest"]["flows"], "datagrams": st["ingest"]["datagrams"],
            "store_dropped": st["ingest"].get("store_dropped", 0),
            "db_dropped": st["database"]["flows_dropped"]}


def phase_http():
    eng = load("engine")
    src = os.path.join(ARGS.work, "engine", "nowal")
    if not eng or not os.path.isdir(src):
        fail("http needs the engine phase's store")
    db = os.path.join(ARGS.work, "http", "db")
    shutil.rmtree(os.path.dirname(db), ignore_errors=True)
    shutil.copytree(src, db, ignore=shutil.ignore_patterns("ns2flows.lock"))
    secs = ARGS.http_seconds
    # live traffic while wrk runs: LIVE_FPS flows/s for the length of both runs
    live_s = 2 * secs + 2
    cap, want = made_capture(f"http-live-v9-{ARGS.http_live_fps}x{live_s}s.pcap", "v9",
                             ARGS.http_live_fps * live_s, live_s, 4, ARGS.seed + 1)
    d = Ns2flows(db, "http", f"http_threads = {ARGS.http_threads}\n")
    replay = None
    try:
        mid = ARGS.start + (eng["hours"] // 2) * 3600
        frm, to = mid, mid + 3600
        dev = http_json(d.http, f"/api/v1/top?by=srcaddr&metric=bytes&limit=1&from={frm}&to={to}"
                        )["rows"][0]["key"]["srcaddr"]
        urls = {"top_1h": f"http://127.0.0.1:{d.http}/api/v1/top?by=srcaddr&limit=10"
                          f"&from={frm}&to={to}",
                "device_1h": f"http://127.0.0.1:{d.http}/api/v1/devices/{dev}?from={frm}&to={to}"}
        for u in urls.values():  # both answer before they are loaded
            http_json(d.http, u.split(str(d.http), 1)[1])
        c0 = ingest_counts(d)
        replay = start(pinned([f"{ARGS.bin}/ns2flows-replay", cap, "--to",
                               f"127.0.0.1:{d.udp}", "--speed", "1", "--quiet"], "sender"),
                       "http-replay.log", note="http: live ingest while wrk runs")
        res = {}
        for name, u in urls.items():
            # --timeout: a slow answer is measured, not counted as a socket error at 2 s
            r = run(pinned(["wrk", "-t", "1", "-c", ARGS.http_connections, "-d", f"{secs}s",
                            "--timeout", "30s", "--latency", u], "sender"),
                    note=f"http: load {name}", capture_output=True)
            with open(os.path.join(ARGS.run, "logs", f"wrk-{name}.txt"), "w") as f:
                f.write(r.stdout)
            res[name] = wrk_parse(r.stdout)
            log(f"http {name}: p50 {res[name]['p50_ms']:.1f} ms, p99 {res[name]['p99_ms']:.1f} "
                f"ms, {res[name]['requests_per_s']:.0f} req/s, non-2xx {res[name]['non_2xx']}, "
                f"socket errors {res[name]['socket_errors']}")
        try:
            replay.wait(timeout=live_s + 30)
        except subprocess.TimeoutExpired:
            pass
        stop(replay)
        replay_rc = replay.returncode
        replay = None
        drain(d.udp, d.p.pid, lambda: ingest_counts(d)["flows"], c0["flows"] + want["flows"])
        c1 = ingest_counts(d)
        drops = sum(x for _, x in udp_sockets(d.udp))
    finally:
        if replay is not None:
            stop(replay)
        d.stop()
    got = c1["flows"] - c0["flows"]
    live = {"flows_sent": want["flows"], "fps": ARGS.http_live_fps, "seconds": live_s,
            "store_refused": c1["store_dropped"] - c0["store_dropped"],
            "flows_ingested": got, "loss_flows": want["flows"] - got
            + (c1["store_dropped"] - c0["store_dropped"]),
            "kernel_drops_datagrams": drops, "replay_exit": replay_rc}
    out = {"store_flows": eng["flows"], "store_hours": eng["hours"], "device": dev,
           "window": [frm, to], "seconds_each": secs, "connections": ARGS.http_connections,
           "http_threads": ARGS.http_threads, "endpoints": res, "live": live,
           "urls": {k: v.replace(f"127.0.0.1:{d.http}", "127.0.0.1:PORT") for k, v in urls.items()}}
    log(f"http: live ingest meanwhile lost {live['loss_flows']} of {want['flows']} flows")
    save("http", out)


# -------------------------------------------------------------------------------------------
# Phase: soak. A sustained replay into a database with a small budget while queries run
# (issue 8 point 7): RSS and disk use sampled, loss counted at the end.

def dir_bytes(path):
    n = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                n += os.path.getsize(os.path.join(dp, f))
            except OSError:
                pass
    return n


def phase_soak():
    import threading
    secs, fps = ARGS.soak_seconds, ARGS.soak_fps
    if secs <= 0:  # the quick mode leaves it out: it needs minutes to mean anything
        log("soak: skipped (BENCH_SOAK_SECONDS=0)")
        return
    budget = ARGS.soak_budget_mb * 1024 * 1024
    # one 10-second capture at the soak's rate, sent over and over (--loop): the daemon files
    # flows by when it received them, so repeats are new flows to it
    piece = 10
    cap, want = made_capture(f"soak-v9-{fps}x{piece}s.pcap", "v9", fps * piece, piece,
                             ARGS.exporters, ARGS.seed + 2)
    loops = max(1, round(secs / piece))
    db = os.path.join(ARGS.work, "soak", "db")
    shutil.rmtree(os.path.dirname(db), ignore_errors=True)
    os.makedirs(os.path.dirname(db))
    # the daemon on the whole machine (the sender pinned to its CPU takes its share), as an
    # operator runs it; --soak-cpus collector pins it to the collector's CPU as `live` does
    d = Ns2flows(db, "soak", f"db_budget = {ARGS.soak_budget_mb}M\n", cpus=ARGS.soak_cpus)
    samples, qlat, qerr, stop_q = [], [], [0], threading.Event()

    def asker():  # queries running all the time, as a dashboard would
        urls = ["/api/v1/top?by=srcaddr&metric=bytes&limit=10", "/api/v1/summary",
                "/api/v1/top?by=dstport&metric=bytes&limit=10"]
        i = 0
        while not stop_q.is_set():
            t0 = time.monotonic()
            try:
                http_json(d.http, urls[i % len(urls)], 60)
                qlat.append(time.monotonic() - t0)
            except (OSError, ValueError):
                qerr[0] += 1
            i += 1
            stop_q.wait(0.5)

    replay = None
    th = threading.Thread(target=asker, daemon=True)
    try:
        c0 = ingest_counts(d)
        cpu0 = cpu_seconds(d.p.pid)
        t_start = time.monotonic()
        replay = start(pinned([f"{ARGS.bin}/ns2flows-replay", cap, "--to", f"127.0.0.1:{d.udp}",
                               "--speed", "1", "--loop", loops, "--quiet"], "sender"),
                       "soak-replay.log", note=f"soak: {loops} passes of {piece} s")
        th.start()
        while replay.poll() is None and time.monotonic() - t_start < secs + 120:
            st = http_json(d.http, "/api/v1/status")
            samples.append({"t_s": round(time.monotonic() - t_start, 1),
                            "rss_bytes": proc_mem(d.p.pid)[0], "du_bytes": dir_bytes(db),
                            "db_bytes_used": st["database"]["bytes_used"],
                            "wal_bytes": st["database"]["wal_bytes"],
                            # rows waiting to be sealed: the part of the RSS a backlog explains
                            "unsealed_bytes": st["database"].get("unsealed_bytes", 0),
                            "open_flows": st["database"]["open_flows"],
                            "flows": st["ingest"]["flows"],
                            "segments_deleted": st["database"]["segments_deleted"]})
            time.sleep(2)
        stop(replay)
        replay_rc = replay.returncode
        replay = None
        wall = time.monotonic() - t_start
        drain(d.udp, d.p.pid)
        stop_q.set()
        th.join(70)
        cpu1 = cpu_seconds(d.p.pid)
        c1 = ingest_counts(d)
        st = http_json(d.http, "/api/v1/status")
        drops = sum(x for _, x in udp_sockets(d.udp))
    finally:
        stop_q.set()
        if replay is not None:
            stop(replay)
        d.stop()
    sent = want["flows"] * loops
    got = c1["flows"] - c0["flows"]
    loss = sent - got + (c1["store_dropped"] - c0["store_dropped"])
    # RSS: after the first quarter (buffers and caches fill), is it flat?
    steady = [x for x in samples if x["t_s"] >= wall / 4]
    half = len(steady) // 2
    first = statistics.mean(x["rss_bytes"] for x in steady[:half]) if half else None
    second = statistics.mean(x["rss_bytes"] for x in steady[half:]) if half else None
    res = {"seconds_target": secs, "wall_s": wall, "fps_target": fps, "loops": loops,
           "flows_sent": sent, "flows_ingested": got, "loss_flows": loss,
           "store_refused": c1["store_dropped"] - c0["store_dropped"],
           "loss_pct": 100.0 * loss / sent if sent else None, "kernel_drops_datagrams": drops,
           "replay_exit": replay_rc, "achieved_fps": sent / wall if wall else None,
           # the daemon's CPU (receiving, decoding, the WAL, sealing, the budget and the
           # queries) a flow: on its one CPU, 1 us a flow at 1M flows/s leaves no room
           "cpu_s": cpu1 - cpu0, "cpu_us_per_flow": (cpu1 - cpu0) * 1e6 / got if got else None,
           "budget_bytes": budget, "daemon_cpus": ARGS.soak_cpus,
           "max_du_bytes": max((x["du_bytes"] for x in samples), default=None),
           "max_db_bytes_used": max((x["db_bytes_used"] for x in samples), default=None),
           "budget_held": all(x["du_bytes"] <= budget for x in samples),
           "segments_deleted": st["database"]["segments_deleted"],
           "rss_max_bytes": max((x["rss_bytes"] for x in samples), default=None),
           # open minutes live in memory until sealed: RSS is read minute by minute
           "rss_max_per_minute": [max(x["rss_bytes"] for x in samples if x["t_s"] // 60 == m)
                                  for m in sorted({int(x["t_s"] // 60) for x in samples})],
           "max_wal_bytes": max((x["wal_bytes"] for x in samples), default=None),
           "max_unsealed_bytes": max((x["unsealed_bytes"] for x in samples), default=None),
           "rss_steady_first_half_mean": first, "rss_steady_second_half_mean": second,
           "rss_growth_pct": 100.0 * (second - first) / first if first else None,
           "queries": len(qlat), "query_errors": qerr[0],
           "query_p50_ms": statistics.median(qlat) * 1e3 if qlat else None,
           "query_max_ms": max(qlat) * 1e3 if qlat else None,
           "samples": samples}
    log(f"soak: {fmt_n(res['achieved_fps'])} flows/s for {wall:.0f} s, loss {loss} "
        f"({fmt_n(res['loss_pct'], 3)}%), RSS max {res['rss_max_bytes'] / 2**20:.0f} MiB "
        f"(growth {fmt_n(res['rss_growth_pct'], 1)}% over the steady part), disk max "
        f"{res['max_du_bytes'] / 2**20:.0f} MiB of {ARGS.soak_budget_mb}, {len(qlat)} queries, "
        f"{qerr[0]} errors")
    shutil.rmtree(os.path.dirname(db), ignore_errors=True)
    save("soak", res)


# -------------------------------------------------------------------------------------------
# Phase: report.

def machine():
    info = {"cpu": None, "cores": os.cpu_count(), "nproc": None, "mem_bytes": None,
            "kernel": platform.release(), "os": None}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                info["mem_bytes"] = int(line.split()[1]) * 1024
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    info["nproc"] = int(run(["nproc"], capture_output=True).stdout.strip())
    return info


def versions():
    def first_line(cmd):
        r = run(cmd, capture_output=True, check=False)
        return ((r.stdout or r.stderr).strip().splitlines() or [""])[0]
    return {"ns2flows": first_line([f"{ARGS.bin}/ns2flows", "--version"]),
            "nfdump": first_line(["nfdump", "-V"]),
            "hyperfine": first_line(["hyperfine", "--version"]),
            "cc": first_line(["cc", "--version"])}


def git_state():
    def g(*a):
        # --no-optional-locks: read only, not even the index refresh
        r = run(["git", "--no-optional-locks", "-C", ARGS.root, *a], capture_output=True,
                check=False)
        return r.stdout.strip() if r.returncode == 0 else None
    status = g("status", "--porcelain")
    return {"commit": g("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def fmt_n(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def ratio(a, b):
    return a / b if a and b else None


def phase_report():
    off, live, sto, qry = load("offline"), load("live"), load("storage"), load("queries")
    eng, htl, soak = load("engine"), load("http"), load("soak")
    meta = {"date": ARGS.date, "mode": ARGS.mode, "flows": ARGS.flows, "seed": ARGS.seed,
            "exporters": ARGS.exporters, "start": ARGS.start, "duration_s": ARGS.duration,
            "rcvbuf": ARGS.rcvbuf, "cpus_sender": cpu_sets()[0], "cpus_collector": cpu_sets()[1],
            "ns2flows_ingest_threads": collector_threads(), "machine": machine(), "versions": versions(),
            "git": git_state(), "elapsed_s": time.time() - ARGS.t0,
            "other_load": {"start": load("probe-start"), "end": busy_processes()}}
    live_sum = {f: v["summary"] for f, v in (live or {}).items()}
    ns = {"ingest": {"offline": {f: {k: v[k] for k in ("flows_per_s", "wall_s", "cpu_s",
                                                          "cpu_us_per_flow", "verified")}
                                 for f, v in (off or {}).items()},
                     "live": {f: s["ns2flows"] for f, s in live_sum.items()}},
          "bytes_per_flow": sto["ns2flows"]["bytes_per_flow"] if sto else None,
          "queries": {n: q["ns2flows"] for n, q in (qry or {}).get("queries", {}).items()},
          "engine": {"seal_rows_per_s_wal": eng["ingest_wal"]["seal_rows_per_s"],
                     "seal_rows_per_s_no_wal": eng["ingest_no_wal"]["seal_rows_per_s"],
                     "ingest_wal_cost_pct": eng["wal_cost_pct"],
                     "compaction_rows_per_s": eng["compaction"]["rows_per_s"]} if eng else None,
          "http_load": htl["endpoints"] if htl else None,
          "soak": {k: soak[k] for k in ("achieved_fps", "wall_s", "loss_flows", "budget_held",
                                        "max_du_bytes", "rss_max_bytes", "rss_growth_pct",
                                        "query_errors")} if soak else None,
          "queries_ns2flows_query": {n: q.get("ns2flows_query")
                                     for n, q in (qry or {}).get("queries", {}).items()}}
    nf = {"ingest": {"offline": None,  # nfcapd has no offline NetFlow input
                     "live": {f: s["nfcapd"] for f, s in live_sum.items()}},
          "bytes_per_flow": {"uncompressed": sto["nfcapd"]["bytes_per_flow"],
                             "lz4": sto["nfcapd_lz4"]["bytes_per_flow"]} if sto else None,
          "queries": {n: q["nfdump"] for n, q in (qry or {}).get("queries", {}).items()}}
    ratios = {
        "live_max_loss_free_ns2flows_over_nfcapd": {
            f: ratio(s["ns2flows"]["max_loss_free_fps"], s["nfcapd"]["max_loss_free_fps"])
            for f, s in live_sum.items()},
        "live_cpu_per_flow_nfcapd_over_ns2flows": {
            f: ratio(s["nfcapd"]["cpu_us_per_flow_at_max"], s["ns2flows"]["cpu_us_per_flow_at_max"])
            for f, s in live_sum.items()},
        "live_cpu_life_per_flow_nfcapd_over_ns2flows": {
            f: ratio(s["nfcapd"]["cpu_life_us_per_flow_at_max"],
                     s["ns2flows"]["cpu_life_us_per_flow_at_max"])
            for f, s in live_sum.items()},
        "bytes_per_flow_nfcapd_over_ns2flows": {
            "uncompressed": ratio(sto["nfcapd"]["bytes_per_flow"], sto["ns2flows"]["bytes_per_flow"]),
            "lz4": ratio(sto["nfcapd_lz4"]["bytes_per_flow"], sto["ns2flows"]["bytes_per_flow"]),
        } if sto else None,
        "query_time_nfdump_over_ns2flows": {n: q["ratio_nfdump_over_ns2flows"]
                                            for n, q in (qry or {}).get("queries", {}).items()},
    }
    not_asked = []
    if not (qry or {}).get("filters"):
        not_asked += [{"query": "one host", "why": "this ns2flows has no filter parameter"},
                      {"query": "a /16 with top ports",
                       "why": "this ns2flows has no filter parameter"}]
    if not os.path.exists(os.path.join(ARGS.bin, "ns2flows-query")):
        not_asked.append({"query": "every question through ns2flows-query",
                          "why": "ns2flows-query does not exist yet (issue #6): only HTTP is timed"})
    results = {"meta": meta, "systems": {"ns2flows": ns, "nfdump": nf}, "ratios": ratios,
               "details": {"offline": off, "live": live, "storage": sto, "queries": qry,
                           "engine": eng, "http": htl, "soak": soak},
               "not_measured": not_asked}
    with open(os.path.join(ARGS.root, "bench", "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    md = render_md(meta, off, live, sto, qry, ratios, not_asked, eng, htl, soak)
    with open(os.path.join(ARGS.root, "bench", "RESULTS.md"), "a") as f:
        f.write(md)
    log("wrote bench/results.json and appended to bench/RESULTS.md")
    bad = [f for f, v in (off or {}).items() if not v["verified"]]
    if bad:
        fail(f"stored totals differ from the generated ones for {', '.join(bad)} (see RESULTS.md)")


def render_md(meta, off, live, sto, qry, ratios, not_asked, eng=None, htl=None, soak=None):
    m, v, g = meta["machine"], meta["versions"], meta["git"]
    L = []
    A = L.append
    A(f"\n## {meta['date']}, {meta['mode']} mode, {meta['flows']:,} flows\n")
    A(f"- Machine: {m['cpu']}, {m['nproc']} cores (nproc), "
      f"{m['mem_bytes'] / 2**30:.1f} GiB memory; {m['os']}; kernel {m['kernel']}")
    A(f"- Commit {g['commit']}{' with uncommitted changes' if g['dirty'] else ''}; "
      f"{v['ns2flows']}; {v['nfdump']}; {v['hyperfine']}; {v['cc']}")
    A(f"- Captures from `ns2flows-gen --seed {meta['seed']} --start {meta['start']} --duration "
      f"{meta['duration_s']} --exporters {meta['exporters']}`; receive buffer {meta['rcvbuf']:,} "
      f"bytes asked of both collectors; the whole run took {meta['elapsed_s']:.0f} s")
    if meta["cpus_sender"] is not None:
        A(f"- Everything ran on this one machine. The system under test (ns2flows, nfcapd, "
          f"nfdump, `ns2flows ingest`) was pinned with taskset to CPU {meta['cpus_collector']}, "
          f"the replay tool and curl to CPU {meta['cpus_sender']}; ns2flows ran "
          f"{meta['ns2flows_ingest_threads']} receive thread(s), one per CPU it may use.")
    else:
        A("- Everything ran on this one machine, on its one CPU: the replay tool, the collector "
          "and the kernel's loopback shared it.")
    for when in ("start", "end"):
        p = meta["other_load"][when]
        if p is None:
            continue
        others = ", ".join(f"{x['name']} {x['cpu'] * 100:.0f}%" for x in p["busy"])
        A(f"- Load average at the {when}: {' '.join(str(x) for x in p['loadavg'])}; other "
          f"processes using the CPU then: {others or 'none'}"
          f"{' (the figures are skewed by them)' if others else ''}")
    A("")
    A("### Headline\n")
    A("Every ratio is arranged so that above 1 favours ns2flows.\n")
    A("| measure | ns2flows | nfdump / nfcapd | ratio |")
    A("|---|---:|---:|---:|")
    for f, d in (live or {}).items():
        a, b = d["summary"]["ns2flows"], d["summary"]["nfcapd"]
        A(f"| live {f}: highest loss-free rate, flows/s | {fmt_n(a['max_loss_free_fps'])} | "
          f"{fmt_n(b['max_loss_free_fps'])} | "
          f"{fmt_n(ratios['live_max_loss_free_ns2flows_over_nfcapd'].get(f), 2)} |")
        A(f"| live {f}: CPU µs per flow there, receiving | {fmt_n(a['cpu_us_per_flow_at_max'], 3)}"
          f" | {fmt_n(b['cpu_us_per_flow_at_max'], 3)} | "
          f"{fmt_n(ratios['live_cpu_per_flow_nfcapd_over_ns2flows'].get(f), 2)} |")
        A(f"| live {f}: CPU µs per flow there, whole run with writing | "
          f"{fmt_n(a['cpu_life_us_per_flow_at_max'], 3)} | "
          f"{fmt_n(b['cpu_life_us_per_flow_at_max'], 3)} | "
          f"{fmt_n(ratios['live_cpu_life_per_flow_nfcapd_over_ns2flows'].get(f), 2)} |")
    for f, o in (off or {}).items():
        A(f"| offline {f}: flows/s (CPU µs/flow) | {fmt_n(o['flows_per_s'])} "
          f"({o['cpu_us_per_flow']:.3f}) | no offline reader | |")
    if sto:
        A(f"| bytes per flow on disk, nfcapd uncompressed | {sto['ns2flows']['bytes_per_flow']:.2f}"
          f" | {sto['nfcapd']['bytes_per_flow']:.2f} | "
          f"{fmt_n(ratios['bytes_per_flow_nfcapd_over_ns2flows']['uncompressed'], 2)} |")
        A(f"| bytes per flow on disk, nfcapd LZ4 | {sto['ns2flows']['bytes_per_flow']:.2f} | "
          f"{sto['nfcapd_lz4']['bytes_per_flow']:.2f} | "
          f"{fmt_n(ratios['bytes_per_flow_nfcapd_over_ns2flows']['lz4'], 2)} |")
    if eng:
        A(f"| seal rows/s, with WAL (without) | {fmt_n(eng['ingest_wal']['seal_rows_per_s'])} "
          f"({fmt_n(eng['ingest_no_wal']['seal_rows_per_s'])}) | no counterpart | |")
        A(f"| compaction rows/s | {fmt_n(eng['compaction']['rows_per_s'])} | no counterpart | |")
    for k, v in ((htl or {}).get("endpoints") or {}).items():
        A(f"| HTTP {k} under wrk: p99 ms (requests/s) | {fmt_n(v['p99_ms'], 1)} "
          f"({fmt_n(v['requests_per_s'])}) | no counterpart | |")
    if soak:
        A(f"| soak {soak['wall_s']:.0f} s at {fmt_n(soak['achieved_fps'])} flows/s: loss, "
          f"largest folder MiB of {soak['budget_bytes'] / 2**20:.0f} | "
          f"{fmt_n(soak['loss_flows'])}, {soak['max_du_bytes'] / 2**20:.0f} | no counterpart | |")
    for n, x in ((qry or {}).get("queries") or {}).items():
        A(f"| query {n}: median ms | {x['ns2flows']['median_s'] * 1e3:.1f} | "
          f"{x['nfdump']['median_s'] * 1e3:.1f} | {x['ratio_nfdump_over_ns2flows']:.2f} |")
    A("")
    if off:
        A("### Offline ingest: `ns2flows ingest` (nfdump has no offline NetFlow reader)\n")
        A("| format | flows | datagrams | capture MB | wall s | CPU s | flows/s (wall) "
          "| CPU µs/flow | stored = generated |")
        A("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for f, o in off.items():
            A(f"| {f} | {fmt_n(o['flows_decoded'])} | {fmt_n(o['datagrams'])} | "
              f"{o['capture_bytes'] / 1e6:.1f} | {o['wall_s']:.2f} | {o['cpu_s']:.2f} | "
              f"{fmt_n(o['flows_per_s'])} | {o['cpu_us_per_flow']:.3f} | "
              f"{'yes' if o['verified'] else 'NO: ' + ', '.join(o['mismatch'])} |")
        A("\n\"stored = generated\": flows, packets, bytes, first and last time from "
          "`/api/v1/summary` of a daemon on the ingested folder equal `ns2flows-gen --check`.\n")
    if live:
        A("### Live UDP ingest: `ns2flows-replay` at stepped rates\n")
        A("Each step: a fresh collector, one capture whose flows span the step, replayed at its "
          "own pace (`--speed 1`), then `--max` for a collector that lost nothing. Loss = flows "
          "sent − flows stored (ns2flows: `/api/v1/summary`; nfcapd: `nfdump -R dir -I`). "
          "CPU is the collector's (all threads): \"receiving\" from the first datagram until "
          "it went idle; \"whole run\" its whole life from wait4(), start-up and the writing at "
          "exit included (ns2flows seals a buffer into a segment once it holds 2^18 rows or its "
          "minute is over: most of a step's sealing happens while it receives, the rest at "
          "exit). "
          "A step that lost flows is run once more and the better attempt counts (the other "
          "is listed): on a shared virtual machine the hypervisor steals CPU time now and then "
          "(\"stolen s\", from /proc/stat, whole machine), and \"other busy s\" is time on the "
          "collector's CPU that was not the collector's (the kernel's receive work, other "
          "processes).\n")
        for f, d in live.items():
            A(f"#### {f}\n")
            A("| collector | step (flows/s) | sent flows/s | sent | stored | loss | kernel drops "
              "(datagrams) | CPU s receiving | CPU µs/flow receiving | CPU µs/flow whole run "
              "| stolen s | other busy s | other attempt: loss (stolen s) |")
            A("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
            for r in d["steps"]:
                step = r["step"] if r["step"] == "max" else fmt_n(int(r["step"]))
                A(f"| {r['system']} | {step} | {fmt_n(r['achieved_fps'])} | "
                  f"{fmt_n(r['sent_flows'])} | {fmt_n(r['stored_flows'])} | "
                  f"{fmt_n(r['loss_flows'])} ({r['loss_pct']:.2f}%) | "
                  f"{fmt_n(r['kernel_drops_datagrams'])} | {r['cpu_s']:.2f} | "
                  f"{fmt_n(r['cpu_us_per_flow'], 3)} | {fmt_n(r['cpu_life_us_per_flow'], 3)} | "
                  f"{r['steal_s']:.2f} | "
                  f"{r['other_busy_s']:.2f} | " + (
                      f"{fmt_n(r['other_attempt']['loss_flows'])} "
                      f"({r['other_attempt']['steal_s']:.2f})" if r.get("other_attempt") else "")
                  + " |")
            s = d["summary"]
            A("")
            for sysname in ("ns2flows", "nfcapd"):
                x = s[sysname]
                A(f"- {sysname}: highest loss-free rate {fmt_n(x['max_loss_free_fps'])} flows/s"
                  f"{' (no loss even at --max: the sender was the limit)' if x['sender_bound'] else ''}"
                  f", CPU {fmt_n(x['cpu_us_per_flow_at_max'], 3)} µs/flow there while receiving, "
                  f"{fmt_n(x['cpu_life_us_per_flow_at_max'], 3)} over its whole run")
            rr = ratios["live_max_loss_free_ns2flows_over_nfcapd"].get(f)
            rc = ratios["live_cpu_per_flow_nfcapd_over_ns2flows"].get(f)
            A(f"- ratio ns2flows / nfcapd, highest loss-free rate: {fmt_n(rr, 2)}; "
              f"nfcapd / ns2flows, CPU per flow: {fmt_n(rc, 2)}")
            mine = [r for r in d["steps"] if r["system"] == "ns2flows" and "thread_cpu_s" in r]
            if mine:
                A("\nns2flows inside each step: CPU µs a stored flow by thread (named by the "
                  "daemon; from /proc/PID/task, while receiving), and flows lost inside the "
                  "collector (the rest of a step's loss is the kernel's: socket buffer full)\n")
                A("| step (flows/s) | receive | store (WAL) | seal | other | lost in the ring to "
                  "the store thread | lost by the database |")
                A("|---:|---:|---:|---:|---:|---:|---:|")
                for r in mine:
                    th, n = r["thread_cpu_s"], r["stored_flows"] or 1
                    rx = sum(v for k, v in th.items() if k.startswith("ns2f-rx"))
                    grp = {"rx": rx, "store": th.get("ns2f-store", 0.0) + th.get("ns2f-wal", 0.0),
                           "seal": th.get("ns2f-seal", 0.0)}
                    other = max(0.0, sum(th.values()) - sum(grp.values()))
                    inn = r["inner_drops_flows"]
                    step = r["step"] if r["step"] == "max" else fmt_n(int(r["step"]))
                    A(f"| {step} | {grp['rx'] * 1e6 / n:.3f} | {grp['store'] * 1e6 / n:.3f} | "
                      f"{grp['seal'] * 1e6 / n:.3f} | {other * 1e6 / n:.3f} | "
                      f"{fmt_n(inn['queue_dropped'])} | "
                      f"{fmt_n(inn['db_dropped'])} |")
                A("")
            grants = sorted({tuple(r["rcvbuf_granted"]) for r in d["steps"]
                             if r["system"] == "ns2flows"})
            grantf = sorted({tuple(r["rcvbuf_granted"]) for r in d["steps"]
                             if r["system"] == "nfcapd"})
            A(f"- receive buffers granted (ss skmem rb): ns2flows {grants}, nfcapd {grantf} "
              "(ns2flows: one socket per receive thread, SO_REUSEPORT; nfcapd: one)\n")
    if sto:
        A(f"### Storage: bytes per flow on disk ({sto['format']}, "
          f"{sto['flows_generated']:,} flows)\n")
        A("| store | flows | files | bytes | bytes/flow | nfcapd ÷ ns2flows |")
        A("|---|---:|---:|---:|---:|---:|")
        n = sto["ns2flows"]
        A(f"| ns2flows segments (`ns2flows ingest`, one per minute) | {fmt_n(n['flows'])} | "
          f"{n['segments']} | {fmt_n(n['bytes'])} | {n['bytes_per_flow']:.2f} | |")
        A(f"| nfcapd, uncompressed (default) | {fmt_n(sto['nfcapd']['flows'])} | "
          f"{sto['nfcapd']['files']} | {fmt_n(sto['nfcapd']['bytes'])} | "
          f"{sto['nfcapd']['bytes_per_flow']:.2f} | "
          f"{fmt_n(ratios['bytes_per_flow_nfcapd_over_ns2flows']['uncompressed'], 2)} |")
        A(f"| nfcapd, LZ4 (`nfdump -J 3`, as `nfcapd -y` writes) | "
          f"{fmt_n(sto['nfcapd_lz4']['flows'])} | {sto['nfcapd']['files']} | "
          f"{fmt_n(sto['nfcapd_lz4']['bytes'])} | {sto['nfcapd_lz4']['bytes_per_flow']:.2f} | "
          f"{fmt_n(ratios['bytes_per_flow_nfcapd_over_ns2flows']['lz4'], 2)} |")
        A(f"\nnfcapd was filled by replaying the capture at ~{sto['nfcapd_fill_fps']:,.0f} "
          f"flows/s; its totals {'equal' if sto['nfcapd']['totals_match'] else 'DIFFER from'} "
          "the generated ones.\n")
    if qry:
        q = qry["queries"]
        w = qry["window"]
        A(f"### Queries ({qry['format']}, {qry['flows']:,} flows; hyperfine, "
          f"{next(iter(q.values()))['ns2flows']['runs']} runs after a warm-up)\n")
        A("| question | ns2flows HTTP median ms (min–max, σ) | ns2flows-query median ms "
          "(min–max) | nfdump median ms (min–max, σ) | nfdump ÷ HTTP | nfdump ÷ ns2flows-query "
          "| same answer |")
        A("|---|---:|---:|---:|---:|---:|---|")
        for name, x in q.items():
            a, b, c = x["ns2flows"], x["nfdump"], x.get("ns2flows_query")
            ans = x["answers"]
            same = ("n/a: " + ans["note"] if ans["agree"] is None
                    else "yes" if ans["agree"] else "no: " + answer_note(name, ans))
            A(f"| {name} | {a['median_s'] * 1e3:.1f} ({a['min_s'] * 1e3:.1f}–"
              f"{a['max_s'] * 1e3:.1f}, {a['stddev_s'] * 1e3:.1f}) | "
              + (f"{c['median_s'] * 1e3:.1f} ({c['min_s'] * 1e3:.1f}–{c['max_s'] * 1e3:.1f}) | "
                 if c else "– | ")
              + f"{b['median_s'] * 1e3:.1f} "
              f"({b['min_s'] * 1e3:.1f}–{b['max_s'] * 1e3:.1f}, {b['stddev_s'] * 1e3:.1f}) | "
              f"{x['ratio_nfdump_over_ns2flows']:.2f} | "
              f"{fmt_n(x.get('ratio_nfdump_over_ns2flows_query'), 2)} | {same} |")
        A("\n" + ("Queries ran unpinned: ns2flows (one scan worker a CPU), nfdump and curl could "
                  "each use every CPU of the machine, one command at a time."
                  if qry.get("cpus") == "all" else
                  "Queries ran pinned: ns2flows and nfdump on the collector's CPU, curl on the "
                  "sender's.")
          + " The daemon answers HTTP with its default `query_cache` (decoded columns of "
          "sealed segments kept between questions; only scans of up to 32 segments fill it, so "
          "the whole-store questions here are decoded every time, the 5-minute window and "
          "similar small ones are warm after hyperfine's warm-up run); `ns2flows-query` is a "
          "new process each run, so its column is the cold figure (only the kernel's page "
          "cache, as for nfdump).")
        A("\nhyperfine and every command it times ran with `TZ=UTC` in their environment.")
        cb = qry.get("curl_baseline")
        if cb:
            A(f"\nEvery HTTP figure includes curl's own start and request: "
              f"`{qry['curl_baseline_command']}` (the daemon answers from counters) took "
              f"{cb['median_s'] * 1e3:.1f} ms (median; {cb['min_s'] * 1e3:.1f}–"
              f"{cb['max_s'] * 1e3:.1f}) in the same hyperfine run.")
        A(f"\nThe window is [{w[0]}, {w[1]}] (epoch s, 5 minutes in the middle of the hour)."
          + (f" The host is the busiest source, {qry['host']}, and the /16 its network; nfdump "
             "has no filtered `-I`, so its filtered totals come with a statistic by protocol."
             if qry.get("filters") else "") + "\n")
        if all("peak_rss_bytes" in x for x in q.values()):
            A("Peak memory, MiB: one more run of each command after the timings, its peak "
              "resident set as GNU time reports it (`/usr/bin/time -f %M`).\n")
            A("| question | ns2flows-query | nfdump | nfdump ÷ ns2flows-query |")
            A("|---|---:|---:|---:|")
            for name, x in q.items():
                m = x["peak_rss_bytes"]
                A(f"| {name} | {m['ns2flows_query'] / 2**20:.1f} | {m['nfdump'] / 2**20:.1f} | "
                  f"{m['nfdump'] / m['ns2flows_query']:.2f} |")
            dm = qry.get("daemon_rss_bytes")
            if dm:
                A(f"\nThe daemon that answered over HTTP: {dm['start'] / 2**20:.1f} MiB resident "
                  f"when the questions began, {dm['end'] / 2**20:.1f} MiB after them all, "
                  f"{dm['peak'] / 2**20:.1f} MiB at its peak (VmHWM; it keeps freed memory for "
                  "the next query and its query cache, and gives the rest back every 10 s).")
            A("")
        A("Commands timed:\n")
        for name, x in q.items():
            A(f"- {name}: `{x['ns2flows_command']}`, "
              f"`{x.get('ns2flows_query_command', '–')}` vs `{x['nfdump_command']}`")
        A("")
    L.extend(render_engine_md(eng, htl, soak))
    A("### Not measured yet\n")
    for x in not_asked:
        A(f"- {x['query']}: {x['why']}")
    A("- nfdump's summary (`-I`) reads the files' statistics records, not the flows.")
    A("")
    A("### Commands run\n")
    A("```")
    with open(os.path.join(ARGS.run, "commands.txt")) as f:
        L.extend(line.rstrip("\n") for line in f)
    A("```\n")
    return "\n".join(L) + "\n"


def render_engine_md(eng, htl, soak):
    L = []
    A = L.append
    if eng:
        w, n, c = eng["ingest_wal"], eng["ingest_no_wal"], eng["compaction"]
        A(f"### Storage engine: sealing and compaction ({eng['flows']:,} v9 flows over "
          f"{eng['hours']} hours, ~{eng['flows_per_hour']:,.0f} an hour)\n")
        A("Sealing: `ns2flows ingest` of the same capture with the WAL (the default) and with "
          "`--no-wal`; its `seal:` line gives the rows written into minute segments and the time "
          "spent sorting, encoding and writing them (the engine's own clock). Compaction: "
          "`ns2flows compact` on the folder afterwards merges each closed hour's minute "
          f"segments into one hour segment (at most {eng['cap_rows']:,} rows a merge, hence the "
          "capture's small hours); rows/s is rows written over the time spent in merges.\n")
        A("| measure | with WAL | without WAL |")
        A("|---|---:|---:|")
        A(f"| ingest wall s (flows/s) | {w['wall_s']:.2f} ({fmt_n(w['flows_per_s'])}) | "
          f"{n['wall_s']:.2f} ({fmt_n(n['flows_per_s'])}) |")
        A(f"| ingest CPU s | {w['cpu_s']:.2f} | {n['cpu_s']:.2f} |")
        A(f"| seal: rows, segments, s | {fmt_n(w['rows_sealed'])}, {w['segments']}, "
          f"{w['seal_s']:.2f} | {fmt_n(n['rows_sealed'])}, {n['segments']}, {n['seal_s']:.2f} |")
        A(f"| seal rows/s | {fmt_n(w['seal_rows_per_s'])} | {fmt_n(n['seal_rows_per_s'])} |")
        A(f"| bytes per flow, minute segments | {w['bytes_per_flow']:.2f} | "
          f"{n['bytes_per_flow']:.2f} |")
        A(f"\nThe WAL costs {fmt_n(eng['wal_cost_pct'], 1)}% of ingest wall time.\n")
        A("| compaction | value |")
        A("|---|---:|")
        A(f"| merges (hour segments written) | {c['merges']} ({c['hour_segments']}) |")
        A(f"| segments before → after | {c['segments_before']} → {c['segments_after']} |")
        A(f"| rows written | {fmt_n(c['rows_written'])} |")
        A(f"| time merging s (whole command s) | {c['merge_s']:.2f} ({c['wall_s']:.2f}) |")
        A(f"| compaction rows/s | {fmt_n(c['rows_per_s'])} |")
        A(f"| bytes on disk before → after | {fmt_n(c['bytes_before'])} → "
          f"{fmt_n(c['bytes_after'])} |")
        A(f"| bytes per flow after | {c['bytes_per_flow_after']:.2f} |")
        A(f"| totals after = generated | {'yes' if c['totals_after_match'] else 'NO'} |\n")
    if htl:
        lv = htl["live"]
        A(f"### HTTP load: wrk on a store of {htl['store_flows']:,} flows while ingest runs\n")
        A(f"wrk (1 thread, {htl['connections']} connections, {htl['seconds_each']} s each, "
          f"`--timeout 30s --latency`) against a daemon with http_threads = {htl['http_threads']} on the "
          f"compacted store of the engine phase, one-hour window {htl['window']}, device "
          f"{htl['device']} (the busiest source of that hour); meanwhile "
          f"{lv['flows_sent']:,} flows were replayed into it at {lv['fps']:,} flows/s.\n")
        A("| endpoint | p50 ms | p90 ms | p99 ms | requests/s | requests | non-2xx | socket errors |")
        A("|---|---:|---:|---:|---:|---:|---:|---:|")
        for k, v in htl["endpoints"].items():
            A(f"| {k}: `{htl['urls'][k]}` | {fmt_n(v['p50_ms'], 1)} | {fmt_n(v['p90_ms'], 1)} | "
              f"{fmt_n(v['p99_ms'], 1)} | {fmt_n(v['requests_per_s'])} | {fmt_n(v['requests'])} "
              f"| {v['non_2xx']} | {v['socket_errors']} |")
        A(f"\nLive ingest meanwhile: {lv['flows_ingested']:,} of {lv['flows_sent']:,} flows "
          f"taken, loss {lv['loss_flows']:,}; kernel drops {lv['kernel_drops_datagrams']} "
          "datagrams.\n")
    if soak:
        A(f"### Soak: {soak['wall_s']:.0f} s of replay into a "
          f"{soak['budget_bytes'] / 2**20:.0f} MiB budget with queries running\n")
        where = ("on one CPU (pinned as in the live phase)"
                 if soak.get("daemon_cpus") == "collector" else
                 "not pinned (both CPUs, less what the sender, pinned to its own, takes)")
        A(f"A {soak['fps_target']:,} flows/s capture of 10 s sent {soak['loops']} times "
          "(`ns2flows-replay --speed 1 --loop N`); a client asked top sources, the summary and "
          "top ports every 0.5 s; every 2 s the daemon's RSS (/proc) and the database folder's "
          f"size (all files) were sampled. The daemon ran {where}.\n")
        A("| measure | value |")
        A("|---|---:|")
        A(f"| flows sent (rate achieved) | {fmt_n(soak['flows_sent'])} "
          f"({fmt_n(soak['achieved_fps'])}/s) |")
        A(f"| flows decoded, of them refused by the store; loss | "
          f"{fmt_n(soak['flows_ingested'])}, {fmt_n(soak['store_refused'])}; "
          f"{fmt_n(soak['loss_flows'])} ({fmt_n(soak['loss_pct'], 3)}%) |")
        A(f"| kernel drops (datagrams) | {fmt_n(soak['kernel_drops_datagrams'])} |")
        if soak.get("cpu_us_per_flow") is not None:
            A(f"| daemon CPU s (µs a flow, queries included) | {fmt_n(soak['cpu_s'], 1)} "
              f"({fmt_n(soak['cpu_us_per_flow'], 3)}) |")
        A(f"| largest folder size sampled, MiB (budget held) | "
          f"{soak['max_du_bytes'] / 2**20:.1f} ({'yes' if soak['budget_held'] else 'NO'}) |")
        A(f"| segments deleted by the budget | {fmt_n(soak['segments_deleted'])} |")
        A(f"| RSS max MiB | {soak['rss_max_bytes'] / 2**20:.1f} |")
        A("| RSS max by minute of the run, MiB | " + ", ".join(
            f"{x / 2**20:.0f}" for x in soak["rss_max_per_minute"]) + " |")
        A(f"| WAL max MiB (open minutes, inside the folder size) | "
          f"{soak['max_wal_bytes'] / 2**20:.1f} |")
        if soak.get("max_unsealed_bytes") is not None:
            A(f"| memory of rows waiting to be sealed, max MiB (inside the RSS) | "
              f"{soak['max_unsealed_bytes'] / 2**20:.1f} |")
        A(f"| RSS mean, steady part first half → second half, MiB (growth) | "
          f"{fmt_n((soak['rss_steady_first_half_mean'] or 0) / 2**20, 1)} → "
          f"{fmt_n((soak['rss_steady_second_half_mean'] or 0) / 2**20, 1)} "
          f"({fmt_n(soak['rss_growth_pct'], 1)}%) |")
        A(f"| queries (errors), median ms, max ms | {soak['queries']} ({soak['query_errors']}), "
          f"{fmt_n(soak['query_p50_ms'], 1)}, {fmt_n(soak['query_max_ms'], 1)} |\n")
        A("The steady part is the run after its first quarter (buffers fill first).\n")
    return L


def answer_note(name, ans):
    d = ans.get("first_difference")
    if name.startswith("window"):
        return (f"{ans['ns2flows_flows_matched']:,} vs {ans['nfdump_flows_matched']:,} flows "
                "matched: ns2flows counts flows overlapping the window, nfdump -t those inside it")
    if d is None:  # same rows as far as both go, but not as many
        return "the lists differ in length" if "ns2flows" not in ans else \
            f"{ans['ns2flows']} vs {ans['nfdump']}"
    text = f"rank {d['rank']}: {d['ns2flows']} vs {d['nfdump']} (key, flows, packets, bytes)"
    if "dstport" in name:
        text += "; ns2flows keys ICMP by type·256+code in the port, nfdump by port 0"
    return text


# -------------------------------------------------------------------------------------------

def main():
    global ARGS
    ap = argparse.ArgumentParser(description="ns2flows benchmark phases (see bench/README.md)")
    ap.add_argument("phase", choices=["probe", "offline", "live", "storage", "queries", "engine",
                                      "http", "soak", "report"])
    ap.add_argument("--root", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--run", required=True, help="this run's folder: data/, logs/, commands.txt")
    ap.add_argument("--mode", required=True)
    ap.add_argument("--date", default="")
    ap.add_argument("--t0", type=float, default=time.time(), help="when the run started")
    ap.add_argument("--flows", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, required=True)
    ap.add_argument("--duration", type=int, required=True)
    ap.add_argument("--exporters", type=int, required=True)
    ap.add_argument("--formats", nargs="+", required=True)
    ap.add_argument("--live-formats", nargs="+", required=True)
    ap.add_argument("--store-format", required=True)
    ap.add_argument("--rates", nargs="+", type=int, required=True)
    ap.add_argument("--step-seconds", type=int, required=True)
    ap.add_argument("--refine", type=int, default=1, help="bisection steps after the ladder")
    ap.add_argument("--rcvbuf", type=int, required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--http-seconds", type=int, default=10, help="http: wrk seconds per URL")
    ap.add_argument("--query-cpus", choices=["all", "collector"], default="all",
                    help="queries phase: every CPU for each side (default), or pinned as ingest")
    ap.add_argument("--http-connections", type=int, default=4,
                    help="http: wrk connections (default: one per HTTP thread, so latency is "
                         "an answer's, not a queue's)")
    ap.add_argument("--http-threads", type=int, default=4, help="http: the daemon's http_threads")
    ap.add_argument("--http-live-fps", type=int, default=100000,
                    help="http: flows/s replayed while wrk runs")
    ap.add_argument("--soak-seconds", type=int, default=60)
    ap.add_argument("--soak-fps", type=int, default=1000000)
    ap.add_argument("--soak-budget-mb", type=int, default=200)
    ap.add_argument("--soak-cpus", choices=["all", "collector"], default="all",
                    help="soak: the daemon not pinned (all) or pinned as in live (collector)")
    ap.add_argument("--wait-quiet", type=int, default=0,
                    help="probe: wait up to this many seconds for the CPU to be free of others")
    ARGS = ap.parse_args()
    ARGS.bin = os.path.join(ARGS.root, "build", "bin")
    for d in ("data", "logs"):
        os.makedirs(os.path.join(ARGS.run, d), exist_ok=True)
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    {"probe": phase_probe, "offline": phase_offline, "live": phase_live, "storage": phase_storage,
     "queries": phase_queries, "engine": phase_engine, "http": phase_http, "soak": phase_soak,
     "report": phase_report}[ARGS.phase]()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
