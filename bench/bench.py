#!/usr/bin/env python3
"""Helpers for bench/run (Python 3 standard library only).

Subcommands:
  ports N                    N free TCP ports on 127.0.0.1
  setup DIR                  data files (1 KiB JSON, 10 MiB file), tokens, caller key
  render TMPL OUT k=v...     fill a template (string.Template; $$ is a literal $)
  kmconfig OUT ...           a kmproxy TOML config
  wait URL                   wait until URL answers 200
  measure ...  -- WRK...     run wrk, sample the proxy's /proc before/after, append a JSON line
  rss PID...                 VmRSS/VmHWM of the process trees, JSON
  logins LOG OFFSET          logins in the upstream access log past OFFSET bytes, JSON
  syscalls TRACE ...         syscalls per request, bytes per read/write, from an strace -f -s 0 -o TRACE
  conns LOG OFFSET           new upstream connections and TLS handshakes (full, resumed) past OFFSET, JSON
  warm ...                   one call per principal (x-kmproxy-act-as: pN), JSON
  storm ...                  N connections opened, then N calls fired at once, JSON
  stream ...                 N concurrent downloads of the 10 MiB file, rate-limited, JSON
  record FILE TYPE JSON      append {"type": TYPE, ...JSON} to the results file
  report RESULTS MD JSON     the tables, ratios and targets
  check RESULTS              exit 1 if a run had errors or no requests, or a burst/storm call failed
"""

import argparse
import asyncio
import base64
import hashlib
import http.client
import json
import os
import random
import resource
import socket
import ssl
import statistics
import string
import subprocess
import sys
import threading
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024


# ---------------------------------------------------------------- /proc


def proc_tree(pid):
    """pid and all its descendants."""
    out, i = [pid], 0
    while i < len(out):
        p = out[i]
        i += 1
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                try:
                    with open(f"/proc/{p}/task/{t}/children") as f:
                        out += [int(x) for x in f.read().split()]
                except (FileNotFoundError, ProcessLookupError):
                    pass
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def cpu_ticks(pid, which="both"):
    """utime + stime (or one of them) of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 (utime), 15 (stime)
    return {"both": utime + stime, "user": utime, "sys": stime}[which]


def sched_ns(pid):
    """On-CPU ns summed over the process's live threads (a finer cross-check)."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
    except FileNotFoundError:
        pass
    return total


def cpu_stat():
    """Machine-wide (busy, steal) clock ticks from /proc/stat: busy = user+nice+system."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2], (v[7] if len(v) > 7 else 0)


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def tree_sample(roots):
    pids = [p for r in roots for p in proc_tree(r)]
    return {
        "pids": pids,
        "ticks": sum(cpu_ticks(p) for p in pids),
        "user_ticks": sum(cpu_ticks(p, "user") for p in pids),
        "sched_ns": sum(sched_ns(p) for p in pids),
        "rss_kb": sum(status_kb(p, "VmRSS") for p in pids),
        "hwm_kb": sum(status_kb(p, "VmHWM") for p in pids),
    }


# ---------------------------------------------------------------- setup


def cmd_ports(a):
    ports = []
    for port in range(a.start, a.end):
        if len(ports) == a.n:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        # also refuse ports someone is listening on via another address
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=0.2)
            c.close()
            continue
        except OSError:
            pass
        ports.append(port)
    if len(ports) < a.n:
        sys.exit(f"bench.py: fewer than {a.n} free ports in {a.start}-{a.end}")
    print(" ".join(map(str, ports)))


def b64token(rng, nbytes):
    return base64.b64encode(bytes(rng.getrandbits(8) for _ in range(nbytes))).decode()


def cmd_setup(a):
    """Data files and secrets; prints shell assignments."""
    rng = random.Random(20240601)
    data = os.path.join(a.dir, "data")
    os.makedirs(data, exist_ok=True)
    # ~1 KiB JSON shaped like a Knowledge Advanced content list answer.
    items = []
    i = 0
    while True:
        items.append(
            {
                "recordId": f"0800{i:04d}E3C84F8A9C6B7F0A2D1E5{i:04d}",
                "contentId": f"0800{i:04d}E3C84F8A9C6B7F0A2D1E5",
                "documentId": f"FAQ{1000 + i}",
                "title": f"How do I reset my password (variant {i})?",
                "version": "3.0",
                "answerId": 1000 + i,
                "locale": {"recordId": "en_US", "localeId": "en_US"},
                "links": [{"rel": "canonical", "href": f"http://km/km/api/latest/content/0800{i:04d}"}],
            }
        )
        doc = {"items": items, "hasMore": True, "limit": 20, "offset": 0, "count": len(items)}
        body = json.dumps(doc, separators=(",", ":"))
        if len(body) >= 900:
            break
        i += 1
    body = body + " " * max(0, 1024 - len(body) - 1) + "\n"
    with open(os.path.join(data, "content.json"), "w") as f:
        f.write(body)
    # The same bytes for the upstream nginx to answer from memory (`return`
    # takes a quoted string; `$` would start a variable: there is none).
    assert "$" not in body
    with open(os.path.join(data, "content.return.conf"), "w") as f:
        f.write("return 200 '" + body.replace("\\", "\\\\").replace("'", "\\'") + "';\n")
    with open(os.path.join(data, "big.bin"), "wb") as f:
        block = bytes(rng.getrandbits(8) for _ in range(64 * 1024))
        for _ in range(10 * MiB // len(block)):
            f.write(block)
    integration = b64token(rng, 96)  # 128 base64 characters
    user = b64token(rng, 48)
    key = b64token(rng, 32)
    print(f"INTEGRATION_TOKEN='{integration}'")
    print(f"USER_TOKEN='{user}'")
    print(f"CALLER_KEY='{key}'")
    print(f"CALLER_KEY_SHA256='{hashlib.sha256(key.encode()).hexdigest()}'")
    print(f"CONTENT_BYTES={len(body)}")


def cmd_render(a):
    with open(a.template) as f:
        t = string.Template(f.read())
    values = dict(kv.split("=", 1) for kv in a.values)
    with open(a.out, "w") as f:
        f.write(t.substitute(values))


def toml_str(s):
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def cmd_kmconfig(a):
    lines = [
        "# generated by bench/bench.py kmconfig",
        "[server]",
        f"listen = {toml_str('127.0.0.1:%d' % a.port)}",
        'admin_listen = "off"',
        'default_principal = "public"',
    ]
    if a.max_in_flight:
        lines.append(f"max_in_flight = {a.max_in_flight}")
    if a.max_connections:
        lines.append(f"max_connections = {a.max_connections}")
    lines += [
        "",
        "[upstream]",
        f"base_url = {toml_str('%s://127.0.0.1:%d' % (a.upstream_scheme, a.upstream_port))}",
        'site_name = "S"',
    ]
    if a.ca_file:
        lines.append(f"ca_file = {toml_str(a.ca_file)}")
    if a.no_rewrite_links:
        lines.append("rewrite_links = false")
    lines += [
        "",
        "[api_user]",
        'login = "apiuser"',
        'password = "apipass1"',
        "",
        "[[principals]]",
        'name = "public"',
        'kind = "anonymous"',
        "",
        "[[principals]]",
        'name = "agent"',
        'kind = "account"',
        'user = "okcsuser"',
        'password = "Password1"',
        "",
        "[[callers]]",
        'name = "bench"',
        f"key_sha256 = {toml_str(a.key_sha256)}",
        'principal = "agent"',
    ]
    if a.principals:
        names = [f"p{i}" for i in range(a.principals)]
        lines.append("act_as = [" + ", ".join(toml_str(n) for n in names) + "]")
        for n in names:
            lines += ["", "[[principals]]", f"name = {toml_str(n)}", 'kind = "account"', f'user = "user-{n}"', 'password = "Password1"']
    if a.cache_url:
        # Fleet mode. Timeouts well above the defaults: bench/profile runs
        # kmproxy under valgrind, tens of times slower.
        lines += [
            "",
            "[cache]",
            f"redis_url = {toml_str(a.cache_url)}",
            f"encryption_key = {toml_str(a.cache_key)}",
            'connect_timeout = "5s"',
            'command_timeout = "2s"',
        ]
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")


def cmd_wait(a):
    deadline = time.time() + a.timeout
    last = None
    while time.time() < deadline:
        try:
            req = urllib.request.Request(a.url, headers=dict(h.split(": ", 1) for h in a.header))
            ctx = ssl.create_default_context(cafile=a.cafile) if a.cafile else None
            with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
                r.read()
                if r.status == 200:
                    return
                last = f"status {r.status}"
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = str(e)
        time.sleep(0.05)
    sys.exit(f"bench.py: {a.url} did not answer 200 within {a.timeout}s (last: {last})")


# ---------------------------------------------------------------- measuring


def append(path, rec):
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def measure_once(a):
    roots = [int(p) for p in a.pids.split(",")] if a.pids else []
    others = [int(p) for p in a.others.split(",")] if a.others else []
    before = tree_sample(roots) if roots else None
    obefore = tree_sample(others)["ticks"] if others else 0
    log_off = os.path.getsize(a.conn_log) if a.conn_log else 0
    sbefore = cpu_stat()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run(a.wrk, capture_output=True, text=True)
    wall = time.monotonic() - t0
    kids2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    safter = cpu_stat()
    oafter = tree_sample(others)["ticks"] if others else 0
    after = tree_sample(roots) if roots else None
    line = next((l for l in p.stdout.splitlines() if l.startswith("WRKJSON ")), None)
    if p.returncode != 0 or line is None:
        sys.stderr.write(p.stdout + p.stderr)
        sys.exit(f"bench.py: wrk failed for {a.scenario} (exit {p.returncode})")
    w = json.loads(line[len("WRKJSON ") :])
    secs = w["duration_us"] / 1e6
    rec = {
        "type": "wrk",
        "kind": a.kind,
        "scenario": a.scenario,
        "round": a.round,
        "connections": a.connections,
        "wall_s": wall,
        **w,
        "rps": w["requests"] / secs if secs else 0.0,
        "mibps": w["bytes"] / secs / MiB if secs else 0.0,
        "errors": w["err_connect"] + w["err_read"] + w["err_write"] + w["err_status"] + w["err_timeout"],
    }
    # CPU used by anything that is not this benchmark (other jobs on the machine).
    wrk_ticks = (kids2.ru_utime + kids2.ru_stime - kids.ru_utime - kids.ru_stime) * CLK_TCK
    ours = wrk_ticks + (oafter - obefore) + ((after["ticks"] - before["ticks"]) if roots else 0)
    rec["foreign_cores"] = max(0.0, (safter[0] - sbefore[0] - ours) / CLK_TCK / wall)
    # The load side (wrk + the upstream, both on the load CPU): how busy it was.
    load_ticks = wrk_ticks + (oafter - obefore)
    rec["load_cores"] = load_ticks / CLK_TCK / wall
    rec["load_us_per_req"] = load_ticks * 1e6 / CLK_TCK / w["requests"] if w["requests"] else None
    if a.conn_log:
        rec.update(conn_counts(a.conn_log, log_off))
    rec["steal_cores"] = (safter[1] - sbefore[1]) / CLK_TCK / wall
    if roots:
        ticks = after["ticks"] - before["ticks"]
        rec["cpu_s"] = ticks / CLK_TCK
        rec["cpu_sched_s"] = (after["sched_ns"] - before["sched_ns"]) / 1e9
        rec["cpu_us_per_req"] = ticks * 1e6 / CLK_TCK / w["requests"] if w["requests"] else None
        uticks = after["user_ticks"] - before["user_ticks"]
        rec["cpu_user_us_per_req"] = uticks * 1e6 / CLK_TCK / w["requests"] if w["requests"] else None
        rec["cpu_util"] = rec["cpu_s"] / secs if secs else None
        rec["rss_kb"] = after["rss_kb"]
        rec["hwm_kb"] = after["hwm_kb"]
        rec["nprocs"] = len(after["pids"])
    cpu = f" cpu {rec['cpu_us_per_req']:.1f} us/req ({rec['cpu_util'] * 100:.0f}%) rss {rec['rss_kb'] / 1024:.1f} MiB" if roots and rec["cpu_us_per_req"] else ""
    err = f" ERRORS {rec['errors']}" if rec["errors"] else ""
    if a.conn_log:
        err += f" upstream conns +{rec['up_conns']}" + (f" (TLS {rec['up_tls_full']} full, {rec['up_tls_resumed']} resumed)" if rec["up_tls"] else "")
    if rec["foreign_cores"] > 0.05 or rec["steal_cores"] > 0.05:
        err += f" [noise: other jobs {rec['foreign_cores']:.2f} cores, steal {rec['steal_cores']:.2f}]"
    sys.stderr.write(
        f"  r{a.round} {a.kind:6} {a.scenario:22} {rec['rps']:9.0f} req/s {rec['mibps']:8.1f} MiB/s "
        f"p50 {w['p50_us'] / 1000:6.3f} ms p99 {w['p99_us'] / 1000:6.3f} ms{cpu}{err}\n"
    )
    return rec


def machine_busy(seconds):
    b0, _ = cpu_stat()
    time.sleep(seconds)
    b1, _ = cpu_stat()
    return (b1 - b0) / CLK_TCK / seconds


def cmd_measure(a):
    """A wrk run; when other jobs used more than --noise-limit cores during it, wait
    for a quiet machine and run it again (up to --retries times); the last run counts."""
    for attempt in range(a.retries + 1):
        rec = measure_once(a)
        noise = rec["foreign_cores"] + rec["steal_cores"]
        if noise <= a.noise_limit or attempt == a.retries:
            break
        waited = 0.0
        while waited < a.quiet_wait and machine_busy(2) > a.noise_limit:
            waited += 2
        sys.stderr.write(f"    (noisy run discarded, {noise:.2f} cores used by other jobs; rerunning after {waited:.0f} s)\n")
    rec["attempts"] = attempt + 1
    append(a.results, rec)


def conn_counts(log, offset, end=None):
    """New upstream connections in the upstream's conns log past OFFSET bytes
    (one line per connection, at its first request: msec port connection
    ssl_protocol ssl_session_reused ssl_cipher uri)."""
    conns = tls = resumed = 0
    with open(log, "rb") as f:
        f.seek(offset)
        data = f.read() if end is None else f.read(max(0, end - offset))
        for line in data.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) < 5:
                continue
            conns += 1
            if parts[3] != "-":
                tls += 1
                resumed += parts[4] == "r"
    return {"up_conns": conns, "up_tls": tls, "up_tls_resumed": resumed, "up_tls_full": tls - resumed}


def cmd_conns(a):
    print(json.dumps(conn_counts(a.log, a.offset, a.to)))


READS = {"read", "readv", "recvfrom", "recvmsg", "pread64"}
WRITES = {"write", "writev", "sendto", "sendmsg", "sendfile", "sendfile64", "pwrite64", "sendmmsg"}


def cmd_syscalls(a):
    """Syscalls per request from an `strace -f -s 0 -o FILE` of a proxy under a
    wrk load (--wrk: its WRKJSON), with bytes per call of the read and write
    families. Prints a table; with --results, appends the figures as JSON."""
    import re

    w = json.loads(a.wrk) if a.wrk else {}
    reqs = w.get("requests") or 0
    start = re.compile(r"^\d+\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()")
    ret = re.compile(r"\)\s+=\s+(-?\d+|\?)(?:\s+(\w+))?")
    peer = re.compile(r"^\d+\s+\w+\(\d+<TCP:\[[^>]*->127\.0\.0\.1:(\d+)\]>")  # strace -yy
    ups = {int(p) for p in a.upstream_ports.split(",") if p}
    calls, nbytes, again = {}, {}, {}
    sides = {}  # (side, read|write) -> [calls, bytes]
    pending = {}  # pid -> side of an unfinished read/write
    with open(a.trace, errors="replace") as f:
        for line in f:
            m = start.match(line)
            if not m:
                continue
            name = m.group(1) or m.group(2)
            fam = "read" if name in READS else "write" if name in WRITES else None
            side = None
            if fam:
                pm = peer.match(line)
                if pm:
                    side = "upstream" if int(pm.group(1)) in ups else "caller"
                if line.rstrip().endswith("<unfinished ...>"):
                    pending[line.split()[0]] = side
                    continue
                if m.group(1):
                    side = pending.pop(line.split()[0], None)
            elif line.rstrip().endswith("<unfinished ...>"):
                continue
            calls[name] = calls.get(name, 0) + 1
            r = ret.search(line)
            v = int(r.group(1)) if r and r.group(1) != "?" else 0
            if v > 0:
                nbytes[name] = nbytes.get(name, 0) + v
            elif v < 0 and r.group(2) == "EAGAIN":
                again[name] = again.get(name, 0) + 1
            if fam and side:
                e = sides.setdefault(f"{side} {fam}", [0, 0, 0])
                e[0] += 1
                e[1] += max(v, 0)
                e[2] += v < 0
    total = sum(calls.values())
    out = {"scenario": a.scenario, "requests": reqs, "rps_under_strace": reqs / (w["duration_us"] / 1e6) if reqs else 0,
           "syscalls": total, "per_request": total / reqs if reqs else None,
           "by_call": {k: {"calls": v, "per_request": v / reqs if reqs else None, "bytes": nbytes.get(k, 0),
                           "bytes_per_call": nbytes.get(k, 0) / v if v else 0, "eagain": again.get(k, 0)}
                       for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}}
    out["by_side"] = {k: {"per_request": v[0] / reqs if reqs else None, "bytes_per_call": v[1] / v[0] if v[0] else 0,
                          "failed_per_request": v[2] / reqs if reqs else None} for k, v in sorted(sides.items())}
    fam = lambda names: [v for k, v in out["by_call"].items() if k in names]
    for key, names in (("reads", READS), ("writes", WRITES)):
        vs = fam(names)
        n = sum(v["calls"] for v in vs)
        out[key] = {"per_request": n / reqs if reqs else None, "bytes_per_call": sum(v["bytes"] for v in vs) / n if n else 0,
                    "eagain_per_request": sum(v["eagain"] for v in vs) / reqs if reqs else None}
    if a.perf_stat:
        # perf stat -x, output: count,unit,event,...; events per request at full speed
        pw = json.loads(a.perf_wrk) if a.perf_wrk else {}
        preqs = pw.get("requests") or 0
        counts = {}
        with open(a.perf_stat) as f:
            for line in f:
                fs = line.strip().split(",")
                if len(fs) > 2 and fs[0].strip().isdigit():
                    counts[fs[2].split(":")[-1].replace("sys_enter_", "")] = int(fs[0])
        out["full_speed"] = {"requests": preqs, "rps": preqs / (pw["duration_us"] / 1e6) if preqs else 0,
                             "per_request": {("syscalls" if k == "sys_enter" else k): v / preqs for k, v in counts.items()} if preqs else {}}
        fs_ = out["full_speed"]
        print(f"=== {a.scenario}: at full speed (perf stat, {preqs} requests, {fs_['rps']:.0f} req/s): "
              + ", ".join(f"{k} {v:.3f}" for k, v in sorted(fs_["per_request"].items(), key=lambda kv: -kv[1]) if v >= 0.0005) + " per request")
    print(f"=== {a.scenario}: {reqs} requests under strace ({out['rps_under_strace']:.0f} req/s), "
          f"{total} syscalls, {fmt(out['per_request'], '.2f')} per request")
    print(f"    reads {fmt(out['reads']['per_request'], '.2f')}/req ({out['reads']['bytes_per_call']:.0f} B each, "
          f"{fmt(out['reads']['eagain_per_request'], '.2f')} EAGAIN/req); writes {fmt(out['writes']['per_request'], '.2f')}/req "
          f"({out['writes']['bytes_per_call']:.0f} B each)")
    for k, v in out["by_side"].items():
        print(f"    {k:16} {fmt(v['per_request'], '.2f')}/req, {v['bytes_per_call']:.0f} B each, {fmt(v['failed_per_request'], '.2f')}/req failed (EAGAIN)")
    print(f"    {'syscall':18} {'per req':>8} {'calls':>9} {'B/call':>8} {'EAGAIN':>7}")
    for k, v in out["by_call"].items():
        if v["per_request"] is None or v["per_request"] >= 0.005:
            print(f"    {k:18} {fmt(v['per_request'], '8.3f')} {v['calls']:9d} {v['bytes_per_call']:8.0f} {v['eagain']:7d}")
    print()
    if a.results:
        append(a.results, {"type": "syscalls", **out})


def cmd_rss(a):
    s = tree_sample([int(p) for p in a.pids])
    print(json.dumps({"rss_kb": s["rss_kb"], "hwm_kb": s["hwm_kb"]}))


def cmd_logins(a):
    integration = user = other = 0
    with open(a.log, "rb") as f:
        f.seek(a.offset)
        for line in f.read().decode().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            if parts[2] == "/km/api/latest/auth/integration/authorize":
                integration += 1
            elif parts[2] == "/km/api/latest/auth/authorize":
                user += 1
            else:
                other += 1
    print(json.dumps({"integration_logins": integration, "user_logins": user, "other_auth_calls": other}))


def cmd_warm(a):
    """One GET per principal pN over `conc` keep-alive connections."""
    statuses = {}
    lock = threading.Lock()
    todo = list(range(a.n))
    errors = []

    def worker(idx):
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
        local = {}
        for i in todo[idx :: a.conc]:
            try:
                conn.request("GET", "/km/api/latest/content", headers={"x-kmproxy-key": a.key, "x-kmproxy-act-as": f"p{i}"})
                r = conn.getresponse()
                r.read()
                local[r.status] = local.get(r.status, 0) + 1
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
        conn.close()
        with lock:
            for k, v in local.items():
                statuses[k] = statuses.get(k, 0) + v

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(a.conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"calls": a.n, "statuses": {str(k): v for k, v in sorted(statuses.items())}, "client_errors": len(errors), "first_error": errors[0] if errors else None, "seconds": time.monotonic() - t0}))


async def storm(a):
    conns = []

    async def connect(i):
        for attempt in range(50):
            try:
                return await asyncio.open_connection("127.0.0.1", a.port)
            except OSError:
                await asyncio.sleep(0.05 * (attempt + 1))
        raise RuntimeError("cannot connect")

    opened = await asyncio.gather(*(connect(i) for i in range(a.n)), return_exceptions=True)
    conns = [c for c in opened if not isinstance(c, BaseException)]
    connect_failures = len(opened) - len(conns)
    go = asyncio.Event()

    async def call(i, reader, writer):
        key = f"x-kmproxy-key: {a.key}\r\n" if (a.key and i % 2 == 1) else ""
        req = f"GET /km/api/latest/content?n={i} HTTP/1.1\r\nHost: 127.0.0.1\r\n{key}Connection: close\r\n\r\n".encode()
        await go.wait()
        writer.write(req)
        try:
            await writer.drain()
            data = await asyncio.wait_for(reader.read(-1), timeout=60)
        except Exception as e:  # noqa: BLE001
            return f"error: {type(e).__name__}"
        finally:
            writer.close()
        line = data.split(b"\r\n", 1)[0].split()
        return line[1].decode() if len(line) > 1 else "error: empty"

    tasks = [asyncio.create_task(call(i, r, w)) for i, (r, w) in enumerate(conns)]
    await asyncio.sleep(0.2)  # every task is parked on the event
    t0 = time.monotonic()
    go.set()
    results = await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    statuses = {}
    for r in results:
        statuses[r] = statuses.get(r, 0) + 1
    return {"calls": a.n, "connected": len(conns), "connect_failures": connect_failures, "statuses": dict(sorted(statuses.items())), "seconds": elapsed}


def cmd_storm(a):
    print(json.dumps(asyncio.run(storm(a))))


def cmd_stream(a):
    """n concurrent downloads of the big file through the proxy, each read at most `rate` bytes/s."""
    results = []
    lock = threading.Lock()

    def one(i):
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=120)
        conn.request("GET", a.path)
        r = conn.getresponse()
        got = 0
        t0 = time.monotonic()
        while True:
            chunk = r.read(64 * 1024)
            if not chunk:
                break
            got += len(chunk)
            if a.rate:
                ahead = got / a.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        conn.close()
        with lock:
            results.append((r.status, got))

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(a.n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = sum(1 for s, g in results if s == 200 and g == 10 * MiB)
    print(json.dumps({"downloads": a.n, "complete": ok, "bytes": sum(g for _, g in results), "seconds": time.monotonic() - t0}))


def cmd_quiet(a):
    """Machine-wide busy CPU (in cores) over `seconds`, and the top consumers, JSON."""
    b0, s0 = cpu_stat()
    t0 = time.monotonic()
    ticks0 = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                ticks0[pid] = cpu_ticks(pid)
            except (OSError, ValueError):
                pass
    time.sleep(a.seconds)
    top = []
    for pid, t in ticks0.items():
        try:
            d = cpu_ticks(pid) - t
            if d > 0:
                with open(f"/proc/{pid}/comm") as f:
                    top.append((d, f"{f.read().strip()}[{pid}]"))
        except (OSError, ValueError):
            pass
    b1, s1 = cpu_stat()
    wall = time.monotonic() - t0
    top.sort(reverse=True)
    print(json.dumps({"busy_cores": (b1 - b0) / CLK_TCK / wall, "steal_cores": (s1 - s0) / CLK_TCK / wall,
                      "top": [f"{name} {d / CLK_TCK / wall:.2f}" for d, name in top[:5]]}))


def cmd_record(a):
    rec = {"type": a.type}
    rec.update(json.loads(a.json))
    append(a.results, rec)


# ---------------------------------------------------------------- report


def cmd_check(a):
    """Exit 1 (saying why) when a run of the harness did not work: a wrk run
    with errors or no requests, a burst or storm call that was not answered 200."""
    recs = [json.loads(l) for l in open(a.results) if l.strip()]
    bad = []
    for r in recs:
        if r["type"] == "wrk" and (r["errors"] or not r["requests"]):
            bad.append(f"{r['kind']} {r['scenario']} round {r['round']}: {r['requests']} requests, {r['errors']} errors")
        elif r["type"].startswith("burst_") and set(r["calls"]["statuses"]) != {"200"}:
            bad.append(f"{r['type']}: answers {r['calls']['statuses']}")
        elif r["type"] in ("storm", "storm_default") and set(r["statuses"]) != {"200"}:
            bad.append(f"{r['type']}: answers {r['statuses']}")
    kinds = {r["kind"] for r in recs if r["type"] == "wrk"}
    for k in a.expect:
        if k not in kinds:
            bad.append(f"no {k} runs")
    for b in bad:
        sys.stderr.write(f"bench.py check: {b}\n")
    sys.exit(1 if bad else 0)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".1f", none="—"):
    return none if x is None else format(x, spec)


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


LABELS = {
    "direct": "direct (no proxy)",
    "nginx": "nginx (peer)",
    "km-anon": "kmproxy anonymous",
    "km-user": "kmproxy console user",
    "km-anon-info": "kmproxy anonymous, RUST_LOG=info",
    "direct-tls": "direct over HTTPS (no proxy)",
    "nginx-tls": "nginx (peer), HTTPS upstream",
    "km-anon-tls": "kmproxy anonymous, HTTPS upstream",
    "km-user-tls": "kmproxy console user, HTTPS upstream",
}


def cmd_report(a):
    recs = [json.loads(l) for l in open(a.results) if l.strip()]
    meta = next((r for r in recs if r["type"] == "meta"), {})
    wrk = [r for r in recs if r["type"] == "wrk"]
    sysc = [r for r in recs if r["type"] == "syscalls"]
    extra = {r["type"]: r for r in recs if r["type"] not in ("wrk", "meta", "syscalls")}
    smoke = meta.get("mode") == "smoke"

    def agg(kind):
        out = {}
        for sc in dict.fromkeys(r["scenario"] for r in wrk if r["kind"] == kind):
            rs = [r for r in wrk if r["kind"] == kind and r["scenario"] == sc]
            out[sc] = {
                "runs": len(rs),
                "rps": med([r["rps"] for r in rs]),
                "mibps": med([r["mibps"] for r in rs]),
                "p50_ms": med([r["p50_us"] / 1000 for r in rs]),
                "p99_ms": med([r["p99_us"] / 1000 for r in rs]),
                "cpu_us_per_req": med([r.get("cpu_us_per_req") for r in rs]),
                "cpu_user_us_per_req": med([r.get("cpu_user_us_per_req") for r in rs]),
                "cpu_sched_us_per_req": med([r["cpu_sched_s"] * 1e6 / r["requests"] if r.get("cpu_sched_s") is not None and r["requests"] else None for r in rs]),
                "cpu_util": med([r.get("cpu_util") for r in rs]),
                "load_cores": med([r.get("load_cores") for r in rs]),
                "load_us_per_req": med([r.get("load_us_per_req") for r in rs]),
                "rss_mib": med([r["rss_kb"] / 1024 if "rss_kb" in r else None for r in rs]),
                "errors": sum(r["errors"] for r in rs),
                "noise": max((r.get("foreign_cores", 0) + r.get("steal_cores", 0) for r in rs), default=0),
                "requests": sum(r["requests"] for r in rs),
                "up_conns": sum(r.get("up_conns", 0) for r in rs),
                "up_tls_full": sum(r.get("up_tls_full", 0) for r in rs),
                "up_tls_resumed": sum(r.get("up_tls_resumed", 0) for r in rs),
            }
        return out

    G = {k: agg(k) for k in ("small", "small-tls", "paced", "paced-tls", "stream", "stream-tls", "c1")}
    small, small_tls, c1 = G["small"], G["small-tls"], G["c1"]
    noise = max([v["noise"] for g in G.values() for v in g.values()], default=0)

    def pct(x):
        return "—" if x is None else f"{x * 100:.0f} %"

    # Ratios are paired: each round's kmproxy run against the same round's
    # nginx run (minutes apart at most), then the median over rounds. The
    # machine's speed drifts by ±25 % over tens of seconds (shared host), so
    # a ratio of medians taken from different moments can show a gap that
    # is only drift; adjacent runs share most of it.
    RAW = {"p99_ms": ("p99_us", 1e-3), "rss_mib": ("rss_kb", 1 / 1024)}

    def run_value(r, key):
        k, scale = RAW.get(key, (key, 1))
        v = r.get(k)
        return None if v is None else v * scale

    def paired(kind, sc, ref, key):
        """Median over rounds of SCENARIO's KEY over REF's in the same round."""
        rs = []
        for r in wrk:
            if r["kind"] == kind and r["scenario"] == sc:
                o = next((x for x in wrk if x["kind"] == kind and x["scenario"] == ref and x["round"] == r["round"]), None)
                rs.append(ratio(run_value(r, key), run_value(o, key) if o else None))
        return med(rs)

    def paired_added(kind, sc, ref, base, key="p99_ms"):
        """Median over rounds of (SC - BASE) / (REF - BASE), e.g. p99 added over direct."""
        rs = []
        for r in wrk:
            if r["kind"] == kind and r["scenario"] == sc:
                same = {x["scenario"]: x for x in wrk if x["kind"] == kind and x["round"] == r["round"]}
                if ref in same and base in same:
                    k_add = run_value(r, key) - run_value(same[base], key)
                    n_add = run_value(same[ref], key) - run_value(same[base], key)
                    rs.append(k_add / n_add if n_add > 0 else None)
        return med(rs)

    # ---- is the proxy the bottleneck? (per saturated run, against the same round's direct run)
    DIRECT_OF = {"small": "direct", "small-tls": "direct-tls", "stream": "direct", "stream-tls": "direct-tls"}
    checks = []
    for kind, dsc in DIRECT_OF.items():
        for r in wrk:
            if r["kind"] != kind or r["scenario"] == dsc:
                continue
            d = next((x for x in wrk if x["kind"] == kind and x["scenario"] == dsc and x["round"] == r["round"]), None)
            dr = d["rps"] if d else None
            over = ratio(dr, r["rps"])
            util = r.get("cpu_util")
            load = r.get("load_cores")
            # The load side has headroom when direct calls went 1.25x faster, or
            # when it was itself at most 80 % busy (over HTTPS, direct calls also
            # pay wrk's own TLS, which the proxied runs do not: direct-tls
            # understates what the load side can do for them).
            room = (over is not None and over >= 1.25) or (load is not None and load <= 0.80)
            ok = None if util is None or (over is None and load is None) else (room and util >= 0.90)
            why = None if ok is not False else ("its CPU use was below 90 %" if util < 0.90 else "the load side had no headroom")
            checks.append({"kind": kind, "round": r["round"], "scenario": r["scenario"], "direct_rps": dr, "rps": r["rps"],
                           "direct_mibps": d["mibps"] if d else None, "mibps": r["mibps"],
                           "direct_over_proxy": over, "proxy_cpu_util": util, "load_cores": load, "bottleneck": ok, "why_not": why})
    failed_small = [c for c in checks if c["kind"] in ("small", "small-tls") and c["bottleneck"] is False]
    n_small = len([c for c in checks if c["kind"] in ("small", "small-tls")])

    def not_bottleneck(kinds, scs):
        return [c for c in checks if c["kind"] in kinds and c["scenario"] in scs and c["bottleneck"] is False]

    L = []
    L.append(f"# kmproxy benchmark — {meta.get('mode', '?')} run")
    L.append("")
    if smoke:
        L.append("> **Smoke mode**: 1-second runs, 1 round. The figures mean nothing; this run only proves that every workload of the harness works.")
        L.append("")
    if failed_small:
        L.append(
            f"> **⚠ THE PROXY WAS NOT THE BOTTLENECK in {len(failed_small)} of {n_small} saturated ~1 KiB runs** "
            f"({', '.join(sorted(set(LABELS.get(c['scenario'], c['scenario']) + ' r' + str(c['round']) for c in failed_small)))}): "
            "it used less than 90 % of its CPU, or the load side had no headroom (direct calls less than 1.25× its req/s and wrk + upstream more than 80 % busy). "
            "Those runs' req/s and latency compare the load side, not the proxies; CPU µs per request still holds. See \"Is the proxy the bottleneck?\"."
        )
        L.append("")
    elif n_small:
        L.append(f"> The proxy was the bottleneck in all {n_small} saturated ~1 KiB runs (≥ 90 % of its CPU used, and direct ≥ 1.25× its req/s or the load side ≤ 80 % busy).")
        L.append("")
    L.append(f"- date: {meta.get('date', '?')}; commit: `{meta.get('commit', '?')}`")
    L.append(f"- machine: {meta.get('nproc', '?')} CPUs, {meta.get('cpu_model', '?')}; kernel {meta.get('kernel', '?')}")
    L.append(f"- tools: {meta.get('nginx', '?')}; {meta.get('wrk', '?')}; {meta.get('openssl', '?')}; {meta.get('rustc', '?')}")
    L.append(
        f"- method: {meta.get('rounds', '?')} round(s), interleaved; each wrk run {meta.get('duration', '?')} s "
        f"(streaming and 1-connection runs {meta.get('short_duration', '?')} s); medians over rounds. Each proxy alone on CPU 0; "
        "wrk and the upstream nginx on CPU 1 (the upstream answers the 1 KiB JSON from memory). CPU from /proc/PID/stat utime+stime "
        "of the proxy's processes (nginx: master + worker)."
    )
    L.append(
        f"- HTTPS upstream: TLS 1.3, a P-256 certificate for IP:127.0.0.1 made at run time, verified by both proxies "
        f"(nginx: `proxy_ssl_verify on`, `proxy_ssl_session_reuse on`, keepalive 32; kmproxy: `ca_file`). "
        f"The upstream sends {meta.get('upstream_tickets') or 2} session tickets per full handshake"
        f"{'' if meta.get('upstream_tickets') else ' (OpenSSL default)'}. "
        f"direct-tls is wrk over HTTPS straight to the upstream. Paced: {meta.get('connections', 32)} connections, "
        f"each waiting {meta.get('pace_ms', 2)} ms after every answer (wrk `delay()`)."
    )
    br = meta.get("before_run", {})
    L.append(
        f"- machine noise: other jobs used {br.get('busy_cores', 0) * 100:.0f}% of a CPU just before the run; "
        f"during the runs at most {noise * 100:.0f}% of a CPU (other jobs + steal, per run, in the tables' last column)"
        + (" — **figures are skewed by other jobs**" if noise > 0.05 else "")
    )
    L.append("")

    def small_table(title, g, tls):
        if not g:
            return
        L.append(title)
        L.append("")
        L.append("| scenario | req/s | p50 ms | p99 ms | proxy CPU µs/req | of which user | proxy CPU use | proxy RSS MiB | new upstream conns" + (" (TLS full / resumed)" if tls else "") + " | errors | noise |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for sc, v in g.items():
            conns = f"{v['up_conns']}" + (f" ({v['up_tls_full']} / {v['up_tls_resumed']})" if tls else "")
            L.append(
                f"| {LABELS.get(sc, sc)} | {fmt(v['rps'], ',.0f')} | {fmt(v['p50_ms'], '.3f')} | {fmt(v['p99_ms'], '.3f')} | "
                f"{fmt(v['cpu_us_per_req'], '.1f')} | {fmt(v['cpu_user_us_per_req'], '.1f')} | {pct(v['cpu_util'])} | "
                f"{fmt(v['rss_mib'], '.1f')} | {conns} | {v['errors']} | {v['noise'] * 100:.0f} % |"
            )
        L.append("")

    c = meta.get("connections", 32)
    small_table(f"## ~1 KiB JSON answer, HTTPS upstream, wrk -t1 -c{c} (the headline: what deployments run)", small_tls, True)
    small_table(f"## ~1 KiB JSON answer, plaintext upstream, wrk -t1 -c{c}", small, False)
    L.append("\"new upstream conns\" are the connections the upstream saw opened during the runs (summed over rounds); "
             "direct runs count wrk's own. Idle upstream connections survive between runs; those a proxy dropped when wrk closed "
             "its connections with calls in flight at the end of the previous run are reopened here.")
    L.append("")

    # ---- bottleneck table
    if checks:
        L.append("## Is the proxy the bottleneck?")
        L.append("")
        L.append("Per saturated run: the proxy is the bottleneck when it used ≥ 90 % of its CPU **and** the load side had headroom: "
                 "direct calls (same round, same upstream transport) did ≥ 1.25× its throughput, or wrk + the upstream (\"load CPU\", "
                 "both on CPU 1) were ≤ 80 % busy during the run. (Over HTTPS, direct calls also pay wrk's own TLS, which proxied runs "
                 "do not, so direct-tls understates the load side's capacity; load CPU measures it.)")
        L.append("")
        L.append("| workload | round | scenario | direct | proxy | direct ÷ proxy | proxy CPU use | load CPU | proxy the bottleneck? |")
        L.append("|---|---:|---|---:|---:|---:|---:|---:|---|")
        WL = {"small": "1 KiB, plaintext", "small-tls": "1 KiB, HTTPS", "stream": "10 MiB, plaintext", "stream-tls": "10 MiB, HTTPS"}
        for ch in checks:
            unit = "MiB/s" if ch["kind"].startswith("stream") else "req/s"
            dv, pv = (ch["direct_mibps"], ch["mibps"]) if unit == "MiB/s" else (ch["direct_rps"], ch["rps"])
            verdict = "—" if ch["bottleneck"] is None else ("yes" if ch["bottleneck"] else f"**NO**: {ch['why_not']}")
            L.append(
                f"| {WL[ch['kind']]} | {ch['round']} | {LABELS.get(ch['scenario'], ch['scenario'])} | {fmt(dv, ',.0f')} {unit} | {fmt(pv, ',.0f')} {unit} | "
                f"{fmt(ch['direct_over_proxy'], '.2f')}× | {pct(ch['proxy_cpu_util'])} | {pct(ch['load_cores'])} | {verdict} |"
            )
        L.append("")
        sf = [c_ for c_ in checks if c_["kind"].startswith("stream") and c_["bottleneck"] is False]
        if sf:
            L.append(f"For 10 MiB answers the proxy was not the bottleneck in {len(sf)} of {len([c_ for c_ in checks if c_['kind'].startswith('stream')])} runs: "
                     "MiB/s there is bounded by the load side (wrk reading, the upstream sending); CPU per 10 MiB is the proxy's figure.")
            L.append("")

    # ---- paced
    if G["paced"] or G["paced-tls"]:
        L.append(f"## Paced load: {c} connections, each waiting {meta.get('pace_ms', 2)} ms between requests (latency below saturation)")
        L.append("")
        L.append("| upstream | scenario | req/s | p50 ms | p99 ms | p50 added | p99 added | p99 added ÷ nginx's | proxy CPU µs/req | proxy CPU use | errors | noise |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for kind, dsc, ngx, up in (("paced", "direct", "nginx", "plaintext"), ("paced-tls", "direct-tls", "nginx-tls", "HTTPS")):
            g = G[kind]
            d = g.get(dsc, {})
            n_add = None if ngx not in g or not d else g[ngx]["p99_ms"] - d["p99_ms"]
            for sc, v in g.items():
                add50 = None if sc == dsc or not d else v["p50_ms"] - d["p50_ms"]
                add99 = None if sc == dsc or not d else v["p99_ms"] - d["p99_ms"]
                rel = None if sc in (dsc, ngx) or add99 is None or not n_add or n_add <= 0 else add99 / n_add
                L.append(
                    f"| {up} | {LABELS.get(sc, sc)} | {fmt(v['rps'], ',.0f')} | {fmt(v['p50_ms'], '.3f')} | {fmt(v['p99_ms'], '.3f')} | "
                    f"{fmt(None if add50 is None else add50 * 1000, '+.0f')}{'' if add50 is None else ' µs'} | "
                    f"{fmt(None if add99 is None else add99 * 1000, '+.0f')}{'' if add99 is None else ' µs'} | "
                    f"{fmt(rel, '.2f')}{'' if rel is None else '×'} | {fmt(v['cpu_us_per_req'], '.1f')} | {pct(v['cpu_util'])} | {v['errors']} | {v['noise'] * 100:.0f} % |"
                )
        L.append("")
        L.append("\"added\" is over direct with the same upstream transport (direct-tls: wrk over HTTPS to the upstream).")
        L.append("")

    if c1:
        L.append("## Latency without queueing: ~1 KiB JSON, wrk -t1 -c1, plaintext")
        L.append("")
        L.append("| scenario | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | proxy CPU µs/req | errors | noise |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        d = c1.get("direct", {})
        for sc, v in c1.items():
            add50 = None if sc == "direct" else v["p50_ms"] - d.get("p50_ms", 0)
            add99 = None if sc == "direct" else v["p99_ms"] - d.get("p99_ms", 0)
            L.append(
                f"| {LABELS.get(sc, sc)} | {fmt(v['rps'], ',.0f')} | {fmt(v['p50_ms'], '.3f')} | {fmt(v['p99_ms'], '.3f')} | "
                f"{fmt(add50, '+.3f')} | {fmt(add99, '+.3f')} | {fmt(v['cpu_us_per_req'], '.1f')} | {v['errors']} | {v['noise'] * 100:.0f} % |"
            )
        L.append("")

    if G["stream"] or G["stream-tls"]:
        L.append(f"## 10 MiB answers, wrk -t1 -c{meta.get('stream_connections', 4)}")
        L.append("")
        L.append("| upstream | scenario | MiB/s | bodies/s | proxy CPU ms per 10 MiB | proxy CPU µs per MiB | proxy CPU use | proxy RSS MiB | errors | noise |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for kind, up in (("stream", "plaintext"), ("stream-tls", "HTTPS")):
            for sc, v in G[kind].items():
                cpu = v["cpu_us_per_req"]
                L.append(
                    f"| {up} | {LABELS.get(sc, sc)} | {fmt(v['mibps'], ',.0f')} | {fmt(v['rps'], '.1f')} | "
                    f"{fmt(None if cpu is None else cpu / 1000, '.2f')} | {fmt(None if cpu is None else cpu / 10, ',.0f')} | "
                    f"{pct(v['cpu_util'])} | {fmt(v['rss_mib'], '.1f')} | {v['errors']} | {v['noise'] * 100:.0f} % |"
                )
        L.append("")

    # ---- connections and handshakes
    L.append("## Upstream connections and TLS handshakes")
    L.append("")
    L.append("Counted by the upstream: one log line per connection at its first request, with `$ssl_session_reused`.")
    L.append("")
    L.append("| scenario | calls | new upstream connections | TLS full handshakes | TLS resumed |")
    L.append("|---|---:|---:|---:|---:|")
    per = {}
    for r in wrk:
        if r["scenario"].startswith("direct"):
            continue
        p_ = per.setdefault(r["scenario"], [0, 0, 0, 0])
        p_[0] += r["requests"]
        p_[1] += r.get("up_conns", 0)
        p_[2] += r.get("up_tls_full", 0)
        p_[3] += r.get("up_tls_resumed", 0)
    for sc, (n_, cn, fu, re_) in per.items():
        tls = sc.endswith("-tls")
        L.append(f"| {LABELS.get(sc, sc)} (all its runs) | {n_:,} | {cn} | {fu if tls else '—'} | {re_ if tls else '—'} |")
    L.append("")
    bursts = {k: extra.get(f"burst_{k}") for k in ("nginx", "kmproxy")}
    if any(bursts.values()):
        L.append(f"**Burst**: a fresh proxy with the HTTPS upstream, one warm-up call, then {meta.get('burst', 32)} calls at once on new connections:")
        L.append("")
        L.append("| proxy | warm-up: connections (full / resumed) | burst: new upstream connections | of which full handshakes | resumed | answers |")
        L.append("|---|---:|---:|---:|---:|---|")
        for k, b in bursts.items():
            if not b:
                continue
            w_, u_ = b["warmup"], b["burst"]
            L.append(f"| {'nginx (peer)' if k == 'nginx' else 'kmproxy'} | {w_['up_conns']} ({w_['up_tls_full']} / {w_['up_tls_resumed']}) | "
                     f"{u_['up_conns']} | {u_['up_tls_full']} | **{u_['up_tls_resumed']}** | {b['calls'].get('statuses')} |")
        L.append("")

    # ---- ratios
    ratios = {}
    L.append("## Ratios (paired: each round's kmproxy run over the same round's nginx run, median over rounds)")
    L.append("")
    L.append("| metric | anon / nginx | user / nginx |")
    L.append("|---|---:|---:|")
    rows = [
        ("CPU µs/req, 1 KiB c32, HTTPS", "cpu_us_per_req", "small-tls", "-tls"),
        ("req/s, 1 KiB c32, HTTPS", "rps", "small-tls", "-tls"),
        ("p99, 1 KiB c32, HTTPS", "p99_ms", "small-tls", "-tls"),
        ("CPU µs/req, 1 KiB c32, plaintext", "cpu_us_per_req", "small", ""),
        ("req/s, 1 KiB c32, plaintext", "rps", "small", ""),
        ("p99, 1 KiB c32, plaintext", "p99_ms", "small", ""),
        ("RSS, 1 KiB c32, plaintext", "rss_mib", "small", ""),
        ("p99 paced, plaintext", "p99_ms", "paced", ""),
        ("p99 paced, HTTPS", "p99_ms", "paced-tls", "-tls"),
        ("p99, c1", "p99_ms", "c1", ""),
        ("MiB/s, 10 MiB, plaintext", "mibps", "stream", ""),
        ("CPU per 10 MiB, plaintext", "cpu_us_per_req", "stream", ""),
        ("MiB/s, 10 MiB, HTTPS", "mibps", "stream-tls", "-tls"),
        ("CPU per 10 MiB, HTTPS", "cpu_us_per_req", "stream-tls", "-tls"),
    ]
    for label, key, kind, sfx in rows:
        g = G[kind]
        cells = []
        for km_ in ("km-anon", "km-user"):
            r_ = paired(kind, km_ + sfx, "nginx" + sfx, key) if km_ + sfx in g else None
            ratios[f"{km_}{sfx}/nginx{sfx}:{label}"] = r_
            cells.append(fmt(r_, ".2f") + ("×" if r_ is not None else ""))
        if cells != ["—", "—"]:
            L.append(f"| {label} | {cells[0]} | {cells[1]} |")
    L.append("")

    # ---- syscalls
    if sysc:
        L.append("## Syscalls per request, 32 connections")
        L.append("")
        L.append("At full speed (perf stat on the syscall tracepoints, where available), and under strace (slower, but it sees the bytes "
                 "each call moved). Details in `syscalls.txt`.")
        L.append("")
        L.append("| scenario | syscalls/req (full speed) | epoll_wait/req (full speed) | context switches/req | syscalls/req (strace) | caller side: reads/req × bytes, writes/req × bytes | upstream side: reads/req × bytes, writes/req × bytes | EAGAIN reads/req | most frequent (strace) |")
        L.append("|---|---:|---:|---:|---:|---|---|---:|---|")
        for s_ in sysc:
            top = ", ".join(f"{k} {v['per_request']:.2f}" for k, v in list(s_["by_call"].items())[:6] if v["per_request"] is not None)
            fsp = s_.get("full_speed", {}).get("per_request", {})

            def side(which):
                bs = s_.get("by_side", {})
                r_, w_ = bs.get(f"{which} read"), bs.get(f"{which} write")
                cell = lambda x: "—" if not x else f"{fmt(x['per_request'], '.2f')} × {x['bytes_per_call']:.0f} B"
                return f"{cell(r_)}, {cell(w_)}"
            L.append(f"| {LABELS.get(s_['scenario'], s_['scenario'])} | {fmt(fsp.get('syscalls'), '.2f')} | {fmt(fsp.get('epoll_wait'), '.3f')} | "
                     f"{fmt(fsp.get('context-switches'), '.3f')} | {fmt(s_['per_request'], '.2f')} | {side('caller')} | {side('upstream')} | "
                     f"{fmt(s_['reads']['eagain_per_request'], '.2f')} | {top} |")
        L.append("")

    # ---- memory and logins (kept)
    L.append("## Memory and logins")
    L.append("")
    sp = extra.get("stream_peak")
    if sp:
        L.append(
            f"- streaming {sp['downloads'] * 10} MiB ({sp['downloads']} × 10 MiB at once, each client reading at ≤ {sp['rate_mib']} MiB/s) "
            f"through a fresh kmproxy: peak RSS (VmHWM) **{sp['km_hwm_kb'] / 1024:.1f} MiB** (idle before: {sp['km_rss_before_kb'] / 1024:.1f} MiB); "
            f"{sp['complete']}/{sp['downloads']} complete. Same through the nginx peer: worker+master peak {sp['nginx_hwm_kb'] / 1024:.1f} MiB "
            f"({sp['nginx_complete']}/{sp['downloads']} complete)."
        )
    pr = extra.get("principals")
    if pr:
        L.append(
            f"- {pr['n']:,} account principals, each warmed with one call through one caller's `act_as`: "
            f"RSS **{pr['rss_after_kb'] / 1024:.1f} MiB** after (peak {pr['hwm_after_kb'] / 1024:.1f} MiB; "
            f"{pr['rss_before_kb'] / 1024:.1f} MiB after start, before any call); warm-up answers {pr['warm']['statuses']} "
            f"in {pr['warm']['seconds']:.1f} s; upstream saw {pr['logins']['integration_logins']} integration + "
            f"{pr['logins']['user_logins']:,} user logins (expected 1 + {pr['n']:,})."
        )
    for key, title in (("storm", "cold storm"), ("storm_default", "cold storm, default limits")):
        st = extra.get(key)
        if st:
            L.append(
                f"- {title} ({st['limits']}): {st['calls']:,} calls fired at once at a fresh kmproxy "
                f"(half anonymous, half the console user) → answers {st['statuses']} in {st['seconds']:.2f} s; "
                f"upstream saw **{st['logins']['integration_logins']} integration + {st['logins']['user_logins']} user logins** (expected 1 + 1)."
            )
    kl = extra.get("kmproxy_logs")
    if kl:
        L.append(f"- kmproxy warnings/errors logged during the run (RUST_LOG=warn instances): {kl['lines']}" + (f"; first: `{kl['first']}`" if kl.get("first") else ""))
    L.append("")

    # ---- targets
    def verdict(ok, shaky=None):
        if ok is None:
            return "—"
        v = "met" if ok else "**not met**"
        if shaky:
            v += f" (inconclusive: the proxy was not the bottleneck in {shaky})"
        return v

    def worst(xs, hi):
        xs = [x for x in xs if x is not None]
        return (max(xs) if hi else min(xs)) if xs else None

    def km_ratios(kind, key, sfx):
        return [paired(kind, k + sfx, "nginx" + sfx, key) if k + sfx in G[kind] else None for k in ("km-anon", "km-user")]

    def both(rs):
        return f"anon {fmt(rs[0], '.2f')}×, user {fmt(rs[1], '.2f')}×"

    def shaky(kind, sfx):
        bad = not_bottleneck((kind,), {"nginx" + sfx, "km-anon" + sfx, "km-user" + sfx})
        return ", ".join(sorted(set(f"{LABELS.get(c_['scenario'], c_['scenario'])} r{c_['round']}" for c_ in bad))) or None

    def paced_rel(kind, dsc, ngx, km_):
        g = G[kind]
        if dsc not in g or ngx not in g or km_ not in g:
            return None, None, None
        # The µs figures are medians; the ratio is paired per round.
        n_add = g[ngx]["p99_ms"] - g[dsc]["p99_ms"]
        k_add = g[km_]["p99_ms"] - g[dsc]["p99_ms"]
        return paired_added(kind, km_, ngx, dsc), k_add, n_add

    targets = []
    for label, key, kind, sfx, lim, hi in (
        ("CPU per request, plaintext upstream", "cpu_us_per_req", "small", "", 1.1, True),
        ("CPU per request, HTTPS upstream", "cpu_us_per_req", "small-tls", "-tls", 0.9, True),
        ("requests/s on one core, plaintext upstream", "rps", "small", "", 0.95, False),
        ("requests/s on one core, HTTPS upstream", "rps", "small-tls", "-tls", 1.1, False),
    ):
        rs = km_ratios(kind, key, sfx)
        w_ = worst(rs, hi)
        ok = None if w_ is None else (w_ <= lim if hi else w_ >= lim)
        targets.append({"target": label, "measured": both(rs), "goal": f"{'≤' if hi else '≥'} {lim}× nginx",
                        "met": ok, "inconclusive": shaky(kind, sfx) if key == "rps" else None})
    for kind, dsc, ngx, km_, up in (("paced", "direct", "nginx", "km-anon", "plaintext"), ("paced-tls", "direct-tls", "nginx-tls", "km-anon-tls", "HTTPS")):
        rel, k_add, n_add = paced_rel(kind, dsc, ngx, km_)
        meas = "—" if k_add is None else f"{fmt(rel, '.2f')}× (kmproxy +{k_add * 1000:.0f} µs, nginx +{n_add * 1000:.0f} µs)"
        targets.append({"target": f"paced p99 added over direct, {up} upstream", "measured": meas, "goal": "≤ 1.2× nginx's",
                        "met": None if rel is None else rel <= 1.2, "inconclusive": None if k_add is None or rel is not None else "nginx added nothing measurable"})
    bn, bk = bursts.get("nginx"), bursts.get("kmproxy")
    if bn and bk:
        rn, rk = bn["burst"]["up_tls_resumed"], bk["burst"]["up_tls_resumed"]
        targets.append({"target": f"a burst of {meta.get('burst', 32)} new upstream connections resumes TLS sessions as nginx does",
                        "measured": f"kmproxy resumed {rk} of {bk['burst']['up_tls']}, nginx {rn} of {bn['burst']['up_tls']}",
                        "goal": "within 1 of nginx's", "met": rk >= rn - 1, "inconclusive": None})
    L.append("## Targets (issue 13), as ratios measured in this run")
    L.append("")
    L.append("| target | measured | goal | |")
    L.append("|---|---|---|---|")
    for t_ in targets:
        L.append(f"| {t_['target']} | {t_['measured']} | {t_['goal']} | {verdict(t_['met'], t_['inconclusive'])} |")
    L.append("")
    L.append("Judged on the worse of the anonymous and console-user principals where both run.")
    L.append("")

    st_r = paired("stream", "km-anon", "nginx", "mibps")
    other = [
        {"target": "streaming ≥ 0.9× nginx (plaintext)", "measured": f"{fmt(st_r, '.2f')}×", "met": None if st_r is None else st_r >= 0.9},
        {"target": "peak RSS ≤ 30 MiB streaming 200 MiB", "measured": f"{fmt(sp['km_hwm_kb'] / 1024 if sp else None, '.1f')} MiB", "met": None if not sp else sp["km_hwm_kb"] / 1024 <= 30},
        {"target": "RSS ≤ 40 MiB with 10,000 principals", "measured": f"{fmt(pr['rss_after_kb'] / 1024 if pr else None, '.1f')} MiB with {pr['n'] if pr else 0:,} principals", "met": None if not pr or pr["n"] < 10000 else pr["rss_after_kb"] / 1024 <= 40},
        {"target": "cold storm: 1 integration + 1 user login", "measured": f"{extra['storm']['logins']['integration_logins']} + {extra['storm']['logins']['user_logins']}" if "storm" in extra else "—", "met": None if "storm" not in extra else (extra["storm"]["logins"]["integration_logins"], extra["storm"]["logins"]["user_logins"]) == (1, 1)},
    ]
    L.append("Earlier targets, still watched:")
    L.append("")
    L.append("| target | measured | |")
    L.append("|---|---|---|")
    for t_ in other:
        L.append(f"| {t_['target']} | {t_['measured']} | {verdict(t_['met'])} |")
    L.append("")
    if smoke:
        L.append("Smoke mode: runs too short to mean anything; this only proves the harness works.")
        L.append("")

    md = "\n".join(L)
    with open(a.md, "w") as f:
        f.write(md)
    with open(a.json, "w") as f:
        json.dump({"meta": meta, "runs": wrk, **{k.replace("-", "_"): v for k, v in G.items()}, "bottleneck": checks,
                   "bursts": bursts, "syscalls": sysc, "ratios": ratios, "extra": extra, "targets": targets, "other_targets": other}, f, indent=1)
    print(md)


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p.add_argument("--start", type=int, default=18100)
    p.add_argument("--end", type=int, default=18999)
    p.set_defaults(f=cmd_ports)
    p = sub.add_parser("setup")
    p.add_argument("dir")
    p.set_defaults(f=cmd_setup)
    p = sub.add_parser("render")
    p.add_argument("template")
    p.add_argument("out")
    p.add_argument("values", nargs="*")
    p.set_defaults(f=cmd_render)
    p = sub.add_parser("kmconfig")
    p.add_argument("out")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--key-sha256", required=True)
    p.add_argument("--principals", type=int, default=0, help="extra account principals p0..pN-1 the caller may act as")
    p.add_argument("--max-in-flight", type=int, default=0)
    p.add_argument("--max-connections", type=int, default=0)
    p.add_argument("--cache-url", default="", help="adds [cache] (fleet mode) on this redis:// URL")
    p.add_argument("--cache-key", default="11" * 32, help="the [cache] encryption_key (64 hex digits)")
    p.add_argument("--upstream-scheme", choices=("http", "https"), default="http")
    p.add_argument("--ca-file", default="", help="[upstream] ca_file (the HTTPS upstream's CA)")
    p.add_argument("--no-rewrite-links", action="store_true", help="[upstream] rewrite_links = false")
    p.set_defaults(f=cmd_kmconfig)
    p = sub.add_parser("wait")
    p.add_argument("url")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--timeout", type=float, default=20)
    p.add_argument("--cafile", default="", help="trust this CA for an https URL")
    p.set_defaults(f=cmd_wait)
    p = sub.add_parser("measure")
    p.add_argument("--results", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--kind", required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--pids", default="", help="the proxy's process(es), comma-separated")
    p.add_argument("--others", default="", help="other benchmark processes (the upstream), for the noise estimate")
    p.add_argument("--retries", type=int, default=0, help="reruns of a run skewed by other jobs")
    p.add_argument("--noise-limit", type=float, default=0.1, help="cores other jobs may use during a run")
    p.add_argument("--quiet-wait", type=float, default=120, help="seconds to wait for quiet before a rerun")
    p.add_argument("--conn-log", default="", help="the upstream's conns log: count new connections and TLS handshakes")
    p.add_argument("wrk", nargs=argparse.REMAINDER)
    p.set_defaults(f=cmd_measure)
    p = sub.add_parser("rss")
    p.add_argument("pids", nargs="+")
    p.set_defaults(f=cmd_rss)
    p = sub.add_parser("logins")
    p.add_argument("log")
    p.add_argument("offset", type=int)
    p.set_defaults(f=cmd_logins)
    p = sub.add_parser("conns")
    p.add_argument("log")
    p.add_argument("offset", type=int)
    p.add_argument("--to", type=int, default=None, help="stop at this offset")
    p.set_defaults(f=cmd_conns)
    p = sub.add_parser("syscalls")
    p.add_argument("trace")
    p.add_argument("--scenario", default="?")
    p.add_argument("--wrk", default="", help="wrk's WRKJSON object for the same window")
    p.add_argument("--perf-stat", default="", help="a perf stat -x, file of syscall tracepoints at full speed")
    p.add_argument("--upstream-ports", default="", help="comma-separated: sockets to these ports are the upstream side (strace -yy)")
    p.add_argument("--perf-wrk", default="", help="wrk's WRKJSON object for the perf stat window")
    p.add_argument("--results", default="")
    p.set_defaults(f=cmd_syscalls)
    p = sub.add_parser("warm")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--conc", type=int, default=32)
    p.set_defaults(f=cmd_warm)
    p = sub.add_parser("storm")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", default="")
    p.add_argument("--n", type=int, default=1000)
    p.set_defaults(f=cmd_storm)
    p = sub.add_parser("stream")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/km/api/latest/files/big")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--rate", type=float, default=0, help="bytes/s per download (0 = unlimited)")
    p.set_defaults(f=cmd_stream)
    p = sub.add_parser("quiet")
    p.add_argument("--seconds", type=float, default=1.0)
    p.set_defaults(f=cmd_quiet)
    p = sub.add_parser("record")
    p.add_argument("results")
    p.add_argument("type")
    p.add_argument("json")
    p.set_defaults(f=cmd_record)
    p = sub.add_parser("check")
    p.add_argument("results")
    p.add_argument("--expect", nargs="*", default=[], help="workload kinds that must have runs")
    p.set_defaults(f=cmd_check)
    p = sub.add_parser("report")
    p.add_argument("results")
    p.add_argument("md")
    p.add_argument("json")
    p.set_defaults(f=cmd_report)
    a = ap.parse_args()
    if a.cmd == "measure" and a.wrk and a.wrk[0] == "--":
        a.wrk = a.wrk[1:]
    a.f(a)


if __name__ == "__main__":
    main()
