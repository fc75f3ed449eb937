"""The benchmark behind BENCHMARKS.md: this sidecar and the usual alternative (sdk_poller.py:
Microsoft's Python SDK, list then GET each secret every interval) against one emulator, for
several vault sizes. Run it through scripts/bench.sh, which builds what it needs and runs this
in a network namespace that has nothing but a loopback interface.

For each vault size N (the emulator generates secret-0000.. itself), each system in turn:

- time to first publish: from starting the process to its files being written, with the
  emulator answering every request after --delay-ms, so that latency sets a floor: for the
  sidecar, token + list pages + ceil(GETs / concurrency) round trips;
- then, with no delay, steady-state polls of the unchanged vault, counted between quiet moments
  (between two polls, nothing in flight): Azure requests per poll (the emulator's counters), CPU
  seconds per poll (/proc/PID/stat utime+stime over several polls, in clock ticks; and the
  finer sum of /proc/PID/task/*/schedstat), resident memory (VmRSS at the end, VmHWM the peak);
- wake-ups in an idle window between two polls: voluntary + involuntary context switches of
  every thread (/proc/PID/task/*/status), a thread that starts or ends counting as one.

Then, for the sidecar alone: one long idle window between two polls (--idle-seconds), the
binary's size, the image's (measured by bench.sh) and HTTP GET throughput (serve_load).
Prints a table, writes results.json and chart.png into --out.
"""

import argparse
import json
import math
import os
import platform
import queue
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = 25  # Key Vault's list page size, the emulator's default as Azure's
VAULT = "bench"
KINDS = ("aad", "keyvault_list", "keyvault_get")


# ---- /proc -----------------------------------------------------------------------------------


def cpu_seconds(pid):
    """utime + stime of the whole process (every thread, live or ended)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_ns(pid):
    """On-CPU time of the live threads (/proc/PID/task/*/schedstat), in ns: finer than stat's
    clock ticks, blind to threads that ended (none of the sidecar's end while it runs)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return total


def memory_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def switches(pid):
    """Context switches (voluntary + involuntary) by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                out[tid] = sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except FileNotFoundError:
            pass  # ended meanwhile: counts as a change below
    return out


def wakeups(before, after):
    """Switches between two `switches` snapshots; a thread that started or ended counts one."""
    return sum(after[t] - before[t] if t in before and t in after else 1 for t in before.keys() | after.keys())


# ---- the emulator ----------------------------------------------------------------------------


class Emulator:
    """`azure-emulator` with N generated secrets, and its control API."""

    def __init__(self, binary, state_dir, secrets):
        self.proc = subprocess.Popen(
            [binary, "--state-dir", str(state_dir), "--vault", VAULT, "--secrets", str(secrets)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the emulator did not start")
        self.info = json.loads(line)
        self.vault_url = self.info["vaults"][VAULT]

    def control(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.info["control_url"] + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            text = resp.read().decode()
            return json.loads(text) if text else None

    def counts(self):
        c = self.control("GET", "/counts")
        return {k: c[k] for k in KINDS}

    def delay(self, ms):
        """Answer every request (token, list, GET) after `ms` milliseconds; 0: at once."""
        self.control("DELETE", "/faults")
        if ms:
            self.control("POST", "/faults", {"delay_ms": ms})

    def reset(self):
        self.control("DELETE", "/requests")

    def quiet_after(self, lists, limit, still=0.3):
        """Wait for `lists` list requests, then for the counts to stand still for `still` s."""
        deadline = time.monotonic() + limit
        last, since = None, time.monotonic()
        while True:
            c = self.counts()
            if c["keyvault_list"] >= lists:
                if c != last:
                    last, since = c, time.monotonic()
                elif time.monotonic() - since >= still:
                    return c
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {lists} list requests (at {c['keyvault_list']})")
            time.sleep(0.01)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def per_poll(c0, c1, polls):
    return {k: (c1[k] - c0[k]) / polls for k in KINDS}


def wait_until(what, limit, cond, step=0.002):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {limit} s waiting for {what}")
        time.sleep(step)


def clean_env(extra):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_PROXY": "*", "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- this sidecar ------------------------------------------------------------------------------


FILES_ROOT = None


def files_dir(work):
    """Where a run's files go: on tmpfs when there is one, as in the pod recipe (an emptyDir of
    medium Memory); on a disk every fsync'ed file would cost a journal commit."""
    return (FILES_ROOT / work.name if FILES_ROOT else work) / "out"


def sidecar_config(emu, work, interval, concurrency):
    cfg_dir = work / "config"  # a directory of its own: the sidecar watches it for changes
    cfg_dir.mkdir(parents=True, exist_ok=True)
    path = cfg_dir / "config.yaml"
    info = emu.info
    path.write_text(
        f"""identity:
  mode: workload
  client_id: "{info['client_id']}"
  tenant_id: "{info['tenant_id']}"
  federated_token_file: "{info['federated_token_file']}"
  authority_host: "{info['authority_url']}"
tls:
  ca_file: "{info['ca_file']}"
sync:
  interval: {interval}
  jitter: 0
  concurrency: {concurrency}
sources:
  - type: keyvault
    vault: "{emu.vault_url}"
    all: true
output:
  dir: "{files_dir(work)}"
serve:
  listen: 127.0.0.1:0
health:
  listen: 127.0.0.1:0
log:
  level: info
"""
    )
    return path


def start_sidecar(args, emu, work, interval):
    """Start it; returns the process and the seconds until its first publish."""
    cfg = sidecar_config(emu, work, interval, args.concurrency)
    log = open(work / "sidecar.log", "w")
    started = time.monotonic()
    proc = subprocess.Popen([args.bin, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=log, env=clean_env({}))
    data = files_dir(work) / "..data"
    wait_until("the sidecar's first publish", args.timeout, lambda: os.path.lexists(data) or proc.poll() is not None)
    if proc.poll() is not None:
        raise SystemExit(f"the sidecar exited early; see {work / 'sidecar.log'}")
    return proc, time.monotonic() - started


def bench_sidecar(args, emu, n, work):
    pages = math.ceil(n / PAGE)
    interval = f"{round(args.interval * 1000)}ms"
    emu.delay(args.delay_ms)
    # The first publish is short next to the machine's noise (other work on a shared machine):
    # the median of --first-runs starts, the last of which goes on to the steady state.
    firsts = []
    for _ in range(args.first_runs - 1):
        shutil.rmtree(files_dir(work), ignore_errors=True)
        proc, first = start_sidecar(args, emu, work, interval)
        stop(proc)
        firsts.append(first)
    shutil.rmtree(files_dir(work), ignore_errors=True)
    emu.reset()
    proc, first = start_sidecar(args, emu, work, interval)
    first_counts = emu.counts()
    firsts.append(first)
    try:
        emu.delay(0)
        # Poll 2 reads again what poll 1 read within 2 s of its write (the emulator wrote every
        # secret as it started): steady state is from the end of poll 2 on.
        poll1 = first_counts["keyvault_list"]
        c0 = emu.quiet_after(poll1 + pages, args.timeout)
        cpu0, ns0 = cpu_seconds(proc.pid), run_ns(proc.pid)
        c1 = emu.quiet_after(c0["keyvault_list"] + args.polls * pages, args.timeout + args.polls * args.interval * 3)
        cpu1, ns1 = cpu_seconds(proc.pid), run_ns(proc.pid)
        idle = idle_window(proc.pid, emu, args.interval - 1.0)
        return {
            "first_publish_s": sorted(firsts)[len(firsts) // 2],
            "first_publish_runs_s": firsts,
            "first_poll_requests": first_counts,
            "requests_per_poll": per_poll(c0, c1, args.polls),
            "cpu_per_poll_s": (cpu1 - cpu0) / args.polls,
            "cpu_per_poll_ns": (ns1 - ns0) / args.polls,
            "polls_measured": args.polls,
            "memory_kib": memory_kib(proc.pid),
            "idle_wakeups": idle,
            "idle_window_s": args.interval - 1.0,
        }
    finally:
        stop(proc)


def idle_window(pid, emu, seconds, tries=5):
    """Context switches over `seconds` from now, taken again if a poll ran meanwhile."""
    for _ in range(tries):
        c = emu.counts()
        s0 = switches(pid)
        time.sleep(seconds)
        s1 = switches(pid)
        if emu.counts() == c:
            return wakeups(s0, s1)
        emu.quiet_after(0, 60)
    return None


def long_idle(args, emu, work):
    """The sidecar with an interval longer than the window: wake-ups between poll 1 and 2."""
    shutil.rmtree(files_dir(work), ignore_errors=True)
    proc, _ = start_sidecar(args, emu, work, f"{int(args.idle_seconds) + 30}s")
    try:
        emu.quiet_after(0, args.timeout)
        time.sleep(0.5)
        c = emu.counts()
        s0 = switches(proc.pid)
        time.sleep(args.idle_seconds)
        s1 = switches(proc.pid)
        assert emu.counts() == c, "a poll ran inside the idle window"
        return {"window_s": args.idle_seconds, "wakeups": wakeups(s0, s1), "threads": len(s1)}
    finally:
        stop(proc)


# ---- the usual alternative: the Python SDK -------------------------------------------------------


def bench_python(args, emu, n, work):
    env = clean_env(
        {
            "VAULT_URL": emu.vault_url,
            "OUT_DIR": str(files_dir(work)),
            "INTERVAL": str(args.interval),
            "CA_FILE": emu.info["ca_file"],
            "AZURE_CLIENT_ID": emu.info["client_id"],
            "AZURE_TENANT_ID": emu.info["tenant_id"],
            "AZURE_FEDERATED_TOKEN_FILE": emu.info["federated_token_file"],
            "AZURE_AUTHORITY_HOST": emu.info["authority_url"],
            # Managed identity is excluded; were it not, IMDS would be the emulator's anyway.
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": emu.info["imds_url"],
        }
    )
    emu.reset()
    emu.delay(args.delay_ms)
    started = time.monotonic()
    proc = subprocess.Popen(
        [args.python, str(Path(__file__).with_name("sdk_poller.py"))],
        stdout=subprocess.PIPE,
        stderr=open(work / "poller.log", "w"),
        env=env,
        text=True,
    )
    events = queue.Queue()

    def read():
        for line in proc.stdout:
            events.put((time.monotonic(), json.loads(line)))

    threading.Thread(target=read, daemon=True).start()

    def poll_done(number, limit):
        deadline = time.monotonic() + limit
        while True:
            try:
                at, event = events.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                if proc.poll() is not None:
                    raise SystemExit(f"the Python poller exited; see {work / 'poller.log'}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"timed out waiting for the Python poller's poll {number}")
                continue
            if event["poll"] >= number:
                return at

    try:
        first = poll_done(1, args.timeout + n * 0.2) - started
        first_counts = emu.counts()
        emu.delay(0)
        poll_done(2, args.timeout + n * 0.05)
        c0, cpu0, ns0 = emu.counts(), cpu_seconds(proc.pid), run_ns(proc.pid)
        polls = args.python_polls
        poll_done(2 + polls, (args.timeout + n * 0.05) * polls)
        c1, cpu1, ns1 = emu.counts(), cpu_seconds(proc.pid), run_ns(proc.pid)
        idle = idle_window(proc.pid, emu, args.interval - 1.0)
        return {
            "first_publish_s": first,
            "first_poll_requests": first_counts,
            "requests_per_poll": per_poll(c0, c1, polls),
            "cpu_per_poll_s": (cpu1 - cpu0) / polls,
            "cpu_per_poll_ns": (ns1 - ns0) / polls,
            "polls_measured": polls,
            "memory_kib": memory_kib(proc.pid),
            "idle_wakeups": idle,
            "idle_window_s": args.interval - 1.0,
        }
    finally:
        stop(proc)


# ---- this sidecar alone --------------------------------------------------------------------------


def serve_load(args):
    if not args.serve_load or not Path(args.serve_load).exists():
        return None
    cmd = [args.serve_load, "--clients", "32", "--requests", "50000", "--objects", "100"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    m = re.search(r"([\d.]+) requests/s; latency p50 ([^,]+), p99 ([^,]+),", out)
    if not m:
        return {"command": " ".join(cmd[1:]), "raw": out.strip()}
    return {"command": "serve_load " + " ".join(cmd[1:]), "requests_per_s": float(m[1]), "p50": m[2], "p99": m[3]}


def floor_s(n, delay_ms, concurrency):
    """Token + list pages + ceil(GETs / concurrency) round trips, each delay_ms."""
    return (1 + math.ceil(n / PAGE) + math.ceil(n / concurrency)) * delay_ms / 1000


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


# ---- output --------------------------------------------------------------------------------------


def mib(kib):
    return kib / 1024


def requests_text(r):
    return f"{r['keyvault_list']:g} list + {r['keyvault_get']:g} GET" + (f" + {r['aad']:g} token" if r["aad"] else "")


def cpu_text(r):
    """stat's figure; under one clock tick over the polls measured, the bound it gives."""
    if r["cpu_per_poll_s"] > 0:
        return f"{r['cpu_per_poll_s'] * 1000:.1f}"
    return f"<{1000 / CLK_TCK / r['polls_measured']:.1f}"


def table(results):
    rows = [
        ("secrets", "system", "first publish", "floor", "requests/poll", "CPU ms/poll", "(schedstat)", "RSS MiB", "peak MiB", "idle wake-ups")
    ]
    for n, systems in results["runs"].items():
        for name, r in systems.items():
            floor = r.get("floor_s")
            rows.append(
                (
                    f"{int(n):,}",
                    name,
                    f"{r['first_publish_s']:.2f} s",
                    f"{floor:.2f} s (x{r['first_publish_s'] / floor:.2f})" if floor else "-",
                    requests_text(r["requests_per_poll"]),
                    cpu_text(r),
                    f"{r['cpu_per_poll_ns'] / 1e6:.2f}",
                    f"{mib(r['memory_kib']['VmRSS']):.1f}",
                    f"{mib(r['memory_kib']['VmHWM']):.1f}",
                    "-" if r["idle_wakeups"] is None else f"{r['idle_wakeups']} in {r['idle_window_s']:.1f} s",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def chart(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [int(n) for n in results["runs"]]
    fig, (mem, req) = plt.subplots(1, 2, figsize=(11, 4.5))
    styles = {"sidecar": ("tab:blue", "o"), "python-sdk": ("tab:orange", "s")}
    for name, (color, marker) in styles.items():
        xs = [n for n in counts if name in results["runs"][str(n)]]
        runs = [results["runs"][str(n)][name] for n in xs]
        label = "azure-secrets-sidecar" if name == "sidecar" else "Python SDK poller"
        rss = [mib(r["memory_kib"]["VmRSS"]) for r in runs]
        mem.plot(xs, rss, marker=marker, color=color, label=f"{label}: RSS")
        for x, y in zip(xs, rss):
            mem.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8, color=color)
        mem.plot(xs, [mib(r["memory_kib"]["VmHWM"]) for r in runs], marker=marker, color=color, linestyle="--", alpha=0.6, label=f"{label}: peak")
        total = [sum(r["requests_per_poll"].values()) for r in runs]
        req.plot(xs, total, marker=marker, color=color, label=label)
        for x, y in zip(xs, total):
            req.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8, color=color)
    mem.set(xscale="log", xlabel="secrets in the vault", ylabel="MiB", title="Resident memory")
    mem.set_ylim(bottom=0)
    highest = max(sum(r["requests_per_poll"].values()) for runs in results["runs"].values() for r in runs.values())
    req.set_ylim(0.5, highest * 3)  # room for the labels
    req.set(xscale="log", yscale="log", xlabel="secrets in the vault", ylabel="Azure requests", title="Requests per steady-state poll (unchanged vault)")
    for ax in (mem, req):
        ax.set_xticks(counts, [f"{n:,}" for n in counts])
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"azure-secrets-sidecar vs. a Python SDK poller, one emulator ({results['machine']['nproc']} cores)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="the release binary")
    p.add_argument("--emulator-bin", required=True, help="the azure-emulator binary")
    p.add_argument("--python", required=True, help="the venv's python, with azure-identity and azure-keyvault-secrets")
    p.add_argument("--serve-load", help="the serve_load example binary")
    p.add_argument("--counts", default="10,100,1000,5000")
    p.add_argument("--delay-ms", type=int, default=20, help="emulator latency for the first publish")
    p.add_argument("--concurrency", type=int, default=8, help="the sidecar's sync.concurrency")
    p.add_argument("--first-runs", type=int, default=3, help="sidecar starts whose median first publish is taken")
    p.add_argument("--interval", type=float, default=2.5, help="seconds between polls, both systems")
    p.add_argument("--polls", type=int, default=10, help="steady-state polls measured, sidecar")
    p.add_argument("--python-polls", type=int, default=3, help="steady-state polls measured, Python")
    p.add_argument("--idle-seconds", type=float, default=100, help="the sidecar's long idle window (0: skip)")
    p.add_argument("--image", default="n/a", help="the image's size, or why there is none")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--out", default="target/bench")
    p.add_argument("--chart-only", metavar="RESULTS", help="only draw the chart of a results.json into --out")
    shm = Path("/dev/shm")
    p.add_argument(
        "--files-root",
        default=str(shm / "azure-secrets-sidecar-bench") if shm.is_dir() else None,
        help="where both systems write their files (default: under /dev/shm, a tmpfs)",
    )
    args = p.parse_args()

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.chart_only:
        chart(json.loads(Path(args.chart_only).read_text()), out / "chart.png")
        return
    counts = [int(c) for c in args.counts.split(",")]
    results = {
        "machine": machine(),
        "settings": {k: getattr(args, k) for k in ("delay_ms", "concurrency", "interval", "polls", "python_polls")},
        "runs": {},
    }
    work_root = out / "work"
    global FILES_ROOT
    if args.files_root:
        FILES_ROOT = Path(args.files_root)
        shutil.rmtree(FILES_ROOT, ignore_errors=True)
        FILES_ROOT.mkdir(parents=True)
    results["settings"]["files"] = str(FILES_ROOT or work_root)
    for n in counts:
        results["runs"][str(n)] = {}
        emu = Emulator(args.emulator_bin, work_root / f"emulator-{n}", n)
        try:
            for name, bench in (("sidecar", bench_sidecar), ("python-sdk", bench_python)):
                work = work_root / f"{name}-{n}"
                work.mkdir(parents=True, exist_ok=True)
                print(f"==> {n:,} secrets: {name}", flush=True)
                r = bench(args, emu, n, work)
                if name == "sidecar":
                    r["floor_s"] = floor_s(n, args.delay_ms, args.concurrency)
                results["runs"][str(n)][name] = r
                print(f"    {json.dumps(r)}", flush=True)
            if args.idle_seconds and n == max(c for c in counts if c <= 1000):
                print(f"==> {n:,} secrets: the sidecar idle for {args.idle_seconds:g} s between two polls", flush=True)
                results["long_idle"] = {"secrets": n} | long_idle(args, emu, work_root / f"idle-{n}")
        finally:
            emu.stop()
    binary = os.path.getsize(args.bin)
    results["sidecar"] = {"binary_bytes": binary, "image": args.image, "serve": serve_load(args)}

    results["machine"]["loadavg_end"] = os.getloadavg()
    (out / "results.json").write_text(json.dumps(results, indent=2))
    chart(results, out / "chart.png")
    m = results["machine"]
    print()
    print(f"machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}")
    load = lambda a: ", ".join(f"{x:.1f}" for x in a)  # noqa: E731
    print(f"load average (1, 5, 15 min): {load(m['loadavg_start'])} at the start, {load(m['loadavg_end'])} at the end")
    print(
        f"first publish with {args.delay_ms} ms per request at the emulator (sidecar: median of {args.first_runs} starts); floor = (token + list pages + "
        f"ceil(GETs / {args.concurrency})) x {args.delay_ms} ms; steady state: no delay, unchanged vault, "
        f"interval {args.interval:g} s"
    )
    print(table(results))
    if "long_idle" in results:
        li = results["long_idle"]
        print(f"sidecar idle between two polls ({li['secrets']:,} secrets): {li['wakeups']} wake-ups in {li['window_s']:g} s ({li['threads']} threads)")
    s = results["sidecar"]
    print(f"sidecar binary: {s['binary_bytes'] / 1048576:.2f} MiB ({s['binary_bytes']:,} bytes); image: {s['image']}")
    if s["serve"] and "requests_per_s" in s["serve"]:
        v = s["serve"]
        print(f"sidecar HTTP GET ({v['command']}): {v['requests_per_s']:,.0f} requests/s, p50 {v['p50']}, p99 {v['p99']}")
    print(f"results: {out / 'results.json'}; chart: {out / 'chart.png'}")
    if FILES_ROOT:
        shutil.rmtree(FILES_ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()
