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
  warm ...                   one call per principal (x-kmproxy-act-as: pN), JSON
  storm ...                  N connections opened, then N calls fired at once, JSON
  stream ...                 N concurrent downloads of the 10 MiB file, rate-limited, JSON
  record FILE TYPE JSON      append {"type": TYPE, ...JSON} to the results file
  report RESULTS MD JSON     the tables, ratios and targets
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
        f"base_url = {toml_str('http://127.0.0.1:%d' % a.upstream_port)}",
        'site_name = "S"',
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
            with urllib.request.urlopen(req, timeout=5) as r:
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
}


def cmd_report(a):
    recs = [json.loads(l) for l in open(a.results) if l.strip()]
    meta = next((r for r in recs if r["type"] == "meta"), {})
    wrk = [r for r in recs if r["type"] == "wrk"]
    extra = {r["type"]: r for r in recs if r["type"] not in ("wrk", "meta")}

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
                "rss_mib": med([r["rss_kb"] / 1024 if "rss_kb" in r else None for r in rs]),
                "errors": sum(r["errors"] for r in rs),
                "noise": max((r.get("foreign_cores", 0) + r.get("steal_cores", 0) for r in rs), default=0),
                "requests": sum(r["requests"] for r in rs),
            }
        return out

    small, c1, stream = agg("small"), agg("c1"), agg("stream")
    noise = max([v["noise"] for g in (small, c1, stream) for v in g.values()], default=0)
    L = []
    L.append(f"# kmproxy benchmark — {meta.get('mode', '?')} run")
    L.append("")
    L.append(f"- date: {meta.get('date', '?')}; commit: `{meta.get('commit', '?')}`")
    L.append(f"- machine: {meta.get('nproc', '?')} CPUs, {meta.get('cpu_model', '?')}; kernel {meta.get('kernel', '?')}")
    L.append(f"- tools: {meta.get('nginx', '?')}; {meta.get('wrk', '?')}; {meta.get('rustc', '?')}")
    L.append(
        f"- method: {meta.get('rounds', '?')} round(s), interleaved; each wrk run {meta.get('duration', '?')} s "
        f"(streaming and 1-connection runs {meta.get('short_duration', '?')} s); medians over rounds. Proxies pinned to CPU 0, "
        "wrk and the upstream nginx to CPU 1. CPU from /proc/PID/stat utime+stime of the proxy's processes "
        "(nginx: master + worker)."
    )
    br = meta.get("before_run", {})
    L.append(
        f"- machine noise: other jobs used {br.get('busy_cores', 0) * 100:.0f}% of a CPU just before the run; "
        f"during the runs at most {noise * 100:.0f}% of a CPU (other jobs + steal, per run, in the tables' last column)"
        + (" — **figures are skewed by other jobs**" if noise > 0.05 else "")
    )
    L.append("")
    L.append(f"## ~1 KiB JSON answer, wrk -t1 -c{meta.get('connections', 32)}")
    L.append("")
    L.append("| scenario | req/s | p50 ms | p99 ms | proxy CPU µs/req | of which user | proxy CPU use | proxy RSS MiB | errors | noise |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sc, v in small.items():
        L.append(
            f"| {LABELS.get(sc, sc)} | {fmt(v['rps'], ',.0f')} | {fmt(v['p50_ms'], '.3f')} | {fmt(v['p99_ms'], '.3f')} | "
            f"{fmt(v['cpu_us_per_req'], '.1f')} | {fmt(v['cpu_user_us_per_req'], '.1f')} | {fmt(None if v['cpu_util'] is None else v['cpu_util'] * 100, '.0f')}{'' if v['cpu_util'] is None else ' %'} | "
            f"{fmt(v['rss_mib'], '.1f')} | {v['errors']} | {v['noise'] * 100:.0f} % |"
        )
    L.append("")
    if c1:
        L.append("## Latency without queueing: ~1 KiB JSON, wrk -t1 -c1")
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
    if stream:
        L.append(f"## 10 MiB answers, wrk -t1 -c{meta.get('stream_connections', 4)}")
        L.append("")
        L.append("| scenario | MiB/s | bodies/s | proxy CPU ms per 10 MiB | proxy CPU use | proxy RSS MiB | errors | noise |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for sc, v in stream.items():
            L.append(
                f"| {LABELS.get(sc, sc)} | {fmt(v['mibps'], ',.0f')} | {fmt(v['rps'], '.1f')} | "
                f"{fmt(None if v['cpu_us_per_req'] is None else v['cpu_us_per_req'] / 1000, '.2f')} | "
                f"{fmt(None if v['cpu_util'] is None else v['cpu_util'] * 100, '.0f')}{'' if v['cpu_util'] is None else ' %'} | {fmt(v['rss_mib'], '.1f')} | {v['errors']} | {v['noise'] * 100:.0f} % |"
            )
        L.append("")

    # ratios
    n, d = small.get("nginx", {}), small.get("direct", {})
    ratios = {}
    L.append("## Ratios (medians of this run)")
    L.append("")
    L.append("| metric | anon / nginx | user / nginx | anon / direct | user / direct |")
    L.append("|---|---:|---:|---:|---:|")
    for label, key, src in [
        ("req/s (c32)", "rps", small),
        ("p50 (c32)", "p50_ms", small),
        ("p99 (c32)", "p99_ms", small),
        ("CPU µs/req (c32)", "cpu_us_per_req", small),
        ("RSS (c32)", "rss_mib", small),
        ("p99 (c1)", "p99_ms", c1),
        ("MiB/s (10 MiB)", "mibps", stream),
        ("CPU per 10 MiB", "cpu_us_per_req", stream),
    ]:
        row = []
        for km in ("km-anon", "km-user"):
            for base in ("nginx", "direct"):
                r = ratio(src.get(km, {}).get(key), src.get(base, {}).get(key))
                ratios[f"{km}/{base}:{label}"] = r
                row.append((km, base, r))
        cells = {(k, b): fmt(r, ".2f") + ("×" if r is not None else "") for k, b, r in row}
        L.append(f"| {label} | {cells[('km-anon', 'nginx')]} | {cells[('km-user', 'nginx')]} | {cells[('km-anon', 'direct')]} | {cells[('km-user', 'direct')]} |")
    L.append("")
    L.append("(Ratios over `direct` for CPU and RSS are blank: there is no proxy process to measure.)")
    L.append("")

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

    # targets
    def t(ok):
        return "—" if ok is None else ("met" if ok else "**missed**")

    km = small.get("km-anon", {})
    kmu = small.get("km-user", {})
    cpu_r = [ratio(x.get("cpu_us_per_req"), n.get("cpu_us_per_req")) for x in (km, kmu)]
    rps_r = [ratio(x.get("rps"), n.get("rps")) for x in (km, kmu)]
    add99 = [None if x.get("p99_ms") is None or d.get("p99_ms") is None else x["p99_ms"] - d["p99_ms"] for x in (km, kmu)]
    st_r = ratio(stream.get("km-anon", {}).get("mibps"), stream.get("nginx", {}).get("mibps"))

    def worst(xs, hi):
        xs = [x for x in xs if x is not None]
        return (max(xs) if hi else min(xs)) if xs else None

    targets = [
        ("CPU per request ≤ 1.0× nginx (aim 0.8×)", f"anon {fmt(cpu_r[0], '.2f')}×, user {fmt(cpu_r[1], '.2f')}×", None if worst(cpu_r, True) is None else worst(cpu_r, True) <= 1.0),
        ("requests/s ≥ nginx", f"anon {fmt(rps_r[0], '.2f')}×, user {fmt(rps_r[1], '.2f')}×", None if worst(rps_r, False) is None else worst(rps_r, False) >= 1.0),
        ("p99 added over direct ≤ 0.5 ms at 32 connections", f"anon {fmt(add99[0], '+.3f')} ms, user {fmt(add99[1], '+.3f')} ms", None if worst(add99, True) is None else worst(add99, True) <= 0.5),
        ("streaming ≥ 0.9× nginx", f"{fmt(st_r, '.2f')}×", None if st_r is None else st_r >= 0.9),
        ("peak RSS ≤ 30 MiB streaming 200 MiB", f"{fmt(sp['km_hwm_kb'] / 1024 if sp else None, '.1f')} MiB", None if not sp else sp["km_hwm_kb"] / 1024 <= 30),
        (f"RSS ≤ 40 MiB with 10,000 principals", f"{fmt(pr['rss_after_kb'] / 1024 if pr else None, '.1f')} MiB with {pr['n'] if pr else '?':,} principals", None if not pr or pr["n"] < 10000 else pr["rss_after_kb"] / 1024 <= 40),
        ("cold storm: 1 integration + 1 user login", f"{extra['storm']['logins']['integration_logins']} + {extra['storm']['logins']['user_logins']}" if "storm" in extra else "—", None if "storm" not in extra else (extra["storm"]["logins"]["integration_logins"], extra["storm"]["logins"]["user_logins"]) == (1, 1)),
    ]
    L.append("## Targets (issue: Performance)")
    L.append("")
    L.append("| target | measured | |")
    L.append("|---|---|---|")
    for name, val, ok in targets:
        L.append(f"| {name} | {val} | {t(ok)} |")
    L.append("")
    if meta.get("mode") == "smoke":
        L.append("Smoke mode: runs too short to mean anything; this only proves the harness works.")
        L.append("")

    md = "\n".join(L)
    with open(a.md, "w") as f:
        f.write(md)
    with open(a.json, "w") as f:
        json.dump({"meta": meta, "runs": wrk, "small": small, "c1": c1, "stream": stream, "ratios": ratios, "extra": extra, "targets": [{"target": n_, "measured": v, "met": ok} for n_, v, ok in targets]}, f, indent=1)
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
    p.set_defaults(f=cmd_kmconfig)
    p = sub.add_parser("wait")
    p.add_argument("url")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--timeout", type=float, default=20)
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
    p.add_argument("wrk", nargs=argparse.REMAINDER)
    p.set_defaults(f=cmd_measure)
    p = sub.add_parser("rss")
    p.add_argument("pids", nargs="+")
    p.set_defaults(f=cmd_rss)
    p = sub.add_parser("logins")
    p.add_argument("log")
    p.add_argument("offset", type=int)
    p.set_defaults(f=cmd_logins)
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
