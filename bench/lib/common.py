"""What every scenario of bench/run uses: processes started in a session of
their own and stopped by id, /proc readings, plain HTTP requests, wrk, nginx,
and the command lines of the three supervisors.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def now():
    return time.monotonic()


def log(message):
    print(time.strftime("%H:%M:%S ") + message, flush=True)


def wait_until(condition, timeout, interval=0.01):
    """Calls `condition` until it is true or `timeout` seconds passed; its last value."""
    deadline = now() + timeout
    while True:
        value = condition()
        if value or now() >= deadline:
            return value
        time.sleep(interval)


def median(values):
    return statistics.median(values) if values else None


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


# MARK: - /proc


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command (state, ppid, pgrp,
    session, ...), or None when the process is gone."""
    stat = _read(f"/proc/{pid}/stat")
    return stat[stat.rindex(")") + 2 :].split() if stat else None


def _processes_where(test):
    """Pids of the live processes whose stat fields pass `test`."""
    found = []
    for name in os.listdir("/proc"):
        fields = _stat_fields(name) if name.isdigit() else None
        if fields and test(fields):
            found.append(int(name))
    return found


def alive(pid):
    """The process exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def session_members(sid):
    """Pids of the processes in session `sid`."""
    return _processes_where(lambda fields: int(fields[3]) == sid)


def children_of(pid):
    """Pids whose parent is `pid`."""
    return _processes_where(lambda fields: int(fields[1]) == pid)


def rss_kb(pid):
    """VmRSS of one process in kB (0 when it is gone or a zombie)."""
    m = re.search(r"VmRSS:\s+(\d+)", _read(f"/proc/{pid}/status") or "")
    return int(m.group(1)) if m else 0


def group_rss_kb(pid):
    """The resident memory in kB of what process `pid` runs: its process group
    when it leads one (a baton generation and its workers), else the process
    and its descendants (a Server::Starter generation shares start_server's
    group). Also (the pids counted)."""
    fields = _stat_fields(pid)
    if not fields:
        return 0, []
    if int(fields[2]) == pid:
        pids = _processes_where(lambda f: int(f[2]) == pid)
    else:
        pids, frontier = [pid], [pid]
        for _ in range(8):  # a bounded depth: master, workers, their children
            frontier = [c for p in frontier for c in children_of(p)]
            if not frontier:
                break
            pids += frontier
    return sum(rss_kb(p) for p in pids), sorted(pids)


def processes_under(path):
    """Pids of the live processes whose working directory is `path` or under it
    (what a supervisor started in a scratch directory may have left behind)."""
    found = []
    root = os.path.realpath(path).rstrip("/") + "/"
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        if (cwd + "/").startswith(root) and alive(int(name)):
            found.append(int(name))
    return found


class Usage:
    """One reading of a process: RSS, CPU time, context switches, threads, descriptors."""

    def __init__(self, pid):
        self.pid = pid
        self.time = now()
        status = _read(f"/proc/{pid}/status") or ""
        self.rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) if "VmRSS" in status else 0
        self.threads = int(re.search(r"Threads:\s+(\d+)", status).group(1)) if "Threads" in status else 0
        # CPU time of every thread (schedstat: nanoseconds on a CPU), and
        # context switches of every thread (status only counts the main one).
        self.cpu_ns = 0
        self.voluntary = 0
        self.involuntary = 0
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            tasks = []
        for task in tasks:
            sched = _read(f"/proc/{pid}/task/{task}/schedstat")
            if sched:
                self.cpu_ns += int(sched.split()[0])
            tstatus = _read(f"/proc/{pid}/task/{task}/status") or ""
            m = re.search(r"voluntary_ctxt_switches:\s+(\d+)\s+nonvoluntary_ctxt_switches:\s+(\d+)", tstatus)
            if m:
                self.voluntary += int(m.group(1))
                self.involuntary += int(m.group(2))
        try:
            self.fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            self.fds = 0

    @property
    def switches(self):
        return self.voluntary + self.involuntary

    def delta(self, earlier):
        """What happened between `earlier` and this reading."""
        return {
            "seconds": round(self.time - earlier.time, 3),
            "cpu_ms": round((self.cpu_ns - earlier.cpu_ns) / 1e6, 3),
            "context_switches": self.switches - earlier.switches,
            "voluntary": self.voluntary - earlier.voluntary,
            "involuntary": self.involuntary - earlier.involuntary,
        }

    def snapshot(self):
        return {"rss_kb": self.rss_kb, "threads": self.threads, "fds": self.fds, "cpu_ms": round(self.cpu_ns / 1e6, 3)}


# MARK: - processes


class Proc:
    """A command in a session of its own (so that everything it leaves behind
    can be found by session id and stopped by pid), output to a log file."""

    def __init__(self, argv, log_path, cwd=None, env=None, prefix=()):
        self.argv = list(prefix) + [str(a) for a in argv]
        self.log_path = log_path
        environment = dict(os.environ)
        environment.update(env or {})
        self._out = open(log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv, cwd=cwd, env=environment, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.started = now()

    @property
    def log(self):
        return _read(self.log_path) or ""

    def running(self):
        return self.popen.poll() is None

    def send(self, sig):
        if self.running():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, grace=20):
        """`sig`, up to `grace` seconds, then SIGKILL to whatever of its session is left."""
        if self.running():
            os.kill(self.pid, sig)
            if self.wait(grace) is None:
                os.kill(self.pid, signal.SIGKILL)
                self.wait(5)
        for pid in session_members(self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._out.close()
        return self.popen.returncode


def run(argv, timeout=60, cwd=None, env=None):
    """Runs a command to its end: (exit status, output)."""
    environment = dict(os.environ)
    environment.update(env or {})
    try:
        r = subprocess.run(
            [str(a) for a in argv], cwd=cwd, env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=timeout,
        )
        return r.returncode, r.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        return None, (e.output or b"").decode(errors="replace")
    except OSError as e:
        return None, str(e)


_handed_out = set()


def free_port():
    """A port free on 127.0.0.1 now, never handed out before in this run, and
    outside the kernel's ephemeral range (net.ipv4.ip_local_port_range), so
    that no client socket of a load (wrk's) can take it between this check
    and the bind of the server told it: Perl's start_server and nginx must be
    told a port. (A port 0 bound and released here lies in that range: a run
    lost its scale scenario to "Address already in use".)"""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    candidates = range(10000, low - 1000) if low > 12000 else range(high + 1, 65535)
    for _ in range(500):
        port = random.choice(candidates)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port outside the ephemeral range")


# MARK: - HTTP


def http_get(port, path="/", timeout=5.0):
    """One GET with `Connection: close`: (status, body), or None when it failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not head.startswith(b"HTTP/1."):
        return None
    try:
        return int(parts[1]), body.decode(errors="replace")
    except ValueError:
        return None


class FirstAnswer(threading.Thread):
    """Polls GET / every `interval` seconds from now on, and notes when the
    first 200 answer whose body passes `accept` arrived."""

    def __init__(self, port, accept=lambda body: True, interval=0.005, timeout=60):
        super().__init__(daemon=True)
        self.port, self.accept, self.interval, self.timeout = port, accept, interval, timeout
        self.started = now()
        self.at = None
        self.body = None
        self.start()

    def run(self):
        deadline = self.started + self.timeout
        while now() < deadline:
            r = http_get(self.port, timeout=2)
            if r and r[0] == 200 and self.accept(r[1]):
                self.at = now()
                self.body = r[1]
                return
            time.sleep(self.interval)

    def seconds(self, since):
        self.join(self.timeout + 5)
        return None if self.at is None else self.at - since


class AnswerStreak(threading.Thread):
    """GETs / back to back (`interval` seconds between one answer and the next
    request) from now on until stopped, at most `timeout` seconds and
    `max_requests` requests, and notes when the first 200 answer whose body
    passes `accept` arrived and when `streak` of them in a row had (a failed
    request or another answer breaks a row). `on_first` is called in this
    thread right after that first answer (to read what is still running then)."""

    def __init__(self, port, accept, streak=20, interval=0.001, timeout=90, max_requests=200000, on_first=None):
        super().__init__(daemon=True)
        self.port, self.accept, self.streak, self.interval = port, accept, streak, interval
        self.timeout, self.max_requests, self.on_first = timeout, max_requests, on_first
        self.started = now()
        self.first_at = self.streak_at = None
        self.requests = self.failed = self.others_after_first = 0
        self.stop_flag = False
        self.start()

    def run(self):
        deadline = self.started + self.timeout
        row = 0
        while not self.stop_flag and now() < deadline and self.requests < self.max_requests:
            r = http_get(self.port, timeout=2)
            t = now()
            self.requests += 1
            if r and r[0] == 200 and self.accept(r[1]):
                row += 1
                if self.first_at is None:
                    self.first_at = t
                    if self.on_first:
                        self.on_first()
                if row >= self.streak and self.streak_at is None:
                    self.streak_at = t
            else:
                row = 0
                if not r or r[0] != 200:
                    self.failed += 1
                elif self.first_at is not None:
                    self.others_after_first += 1
            time.sleep(self.interval)

    def stop(self):
        self.stop_flag = True
        self.join(5)


# MARK: - status files


def status_generations(path):
    """The (generation, pid) lines of a Server::Starter status file."""
    text = _read(path) or ""
    out = []
    for line in text.splitlines():
        m = re.match(r"^(\d+):(\d+)$", line.strip())
        if m:
            out.append((int(m.group(1)), int(m.group(2))))
    return out


# MARK: - wrk


class Wrk:
    """wrk in the background until stopped (SIGINT makes it print its summary),
    with bench/lua/summary.lua or, with `timeline`, bench/lua/timeline.lua
    (then as many threads as connections)."""

    def __init__(self, ctx, url, connections, close, log_path, timeline=False, threads=2, max_seconds=900, prefix=()):
        script = os.path.join(ctx.bench_dir, "lua", "timeline.lua" if timeline else "summary.lua")
        threads = connections if timeline else threads
        argv = [ctx.tools["wrk"], f"-t{threads}", f"-c{connections}", f"-d{max_seconds}s", "--timeout", "5s", "-s", script]
        if close:
            argv += ["-H", "Connection: close"]
        argv.append(url)
        self.proc = Proc(argv, log_path, prefix=prefix)
        self.started = now()

    def stop(self):
        self.proc.send(signal.SIGINT)
        if self.proc.wait(30) is None:
            self.proc.stop(signal.SIGKILL, grace=1)
        return WrkResult(self.proc.log)

    def wait(self, timeout):
        self.proc.wait(timeout)
        if self.proc.running():
            return self.stop()
        return WrkResult(self.proc.log)


def _p99_ms(buckets):
    """The 99th percentile in ms of a histogram {bucket: answers}, bucket b holding 1.1**b to 1.1**(b+1) microseconds."""
    total = sum(buckets.values())
    seen = 0
    for b in sorted(buckets):
        seen += buckets[b]
        if seen >= 0.99 * total:
            return (1.1 ** (b + 0.5)) / 1000.0
    return None


class WrkResult:
    def __init__(self, text):
        self.summary = {}
        self.timeline = {}  # slot (a tenth of a second) -> {bucket: answers}
        self.bad = {}
        for line in text.splitlines():
            if line.startswith("BENCH-SUMMARY "):
                self.summary = json.loads(line[len("BENCH-SUMMARY ") :])
            elif line.startswith("BENCH-TL "):
                _, sec, bucket, n = line.split()
                self.timeline.setdefault(int(sec), {})[int(bucket)] = int(n)
            elif line.startswith("BENCH-BAD "):
                _, sec, n = line.split()
                self.bad[int(sec)] = int(n)
        if not self.summary:
            raise RuntimeError("wrk printed no summary:\n" + text[-2000:])

    @property
    def errors(self):
        s = self.summary
        return s["connect"] + s["read"] + s["write"] + s["timeout"]

    @property
    def failed(self):
        return self.errors + self.summary["non2xx"]

    def rps(self):
        return self.summary["requests"] / max(1e-9, self.summary["duration_us"] / 1e6)

    def series(self, origin):
        """[(seconds since `origin`, answers in that second, p99 in ms)], each whole second of the timeline."""
        seconds = {}
        for slot, buckets in self.timeline.items():
            merged = seconds.setdefault(slot // 10, {})
            for b, n in buckets.items():
                merged[b] = merged.get(b, 0) + n
        return [(sec - origin, sum(seconds[sec].values()), _p99_ms(seconds[sec])) for sec in sorted(seconds)]

    def p99_during_and_between(self, windows, origin, skip_first=0.0):
        """p99 of the answers that arrived during restarts against those between
        them. `windows`: [(start, end)] in seconds since `origin`, each restart
        from its HUP until its old generation was gone; a tenth of a second that
        touches a window counts as during. The first `skip_first` seconds (wrk
        opening its connections) count as neither."""
        during, between = {}, {}
        for slot, buckets in self.timeline.items():
            a, b = slot / 10.0 - origin, (slot + 1) / 10.0 - origin
            if a < skip_first:
                continue
            into = during if any(a < end and b > start for start, end in windows) else between
            for k, n in buckets.items():
                into[k] = into.get(k, 0) + n
        return {
            "p99_during_ms": _p99_ms(during), "answers_during": sum(during.values()),
            "p99_between_ms": _p99_ms(between), "answers_between": sum(between.values()),
        }


# MARK: - nginx


class Nginx:
    """nginx in the foreground, serving examples/nginx/myapp.conf with its two
    marked addresses rewritten (as Tests/ClassicStackTests do)."""

    def __init__(self, ctx, upstream_port, directory, prefix=()):
        self.port = free_port()
        os.makedirs(directory + "/tmp", exist_ok=True)
        os.chmod(directory, 0o755)
        with open(os.path.join(ctx.repo, "examples/nginx/myapp.conf")) as f:
            site = f.read()
        for marked in ("server 127.0.0.1:8080;", "listen 80;"):
            if marked not in site:
                raise RuntimeError(f"examples/nginx/myapp.conf lost its marked line '{marked}'")
        site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        with open(directory + "/myapp.conf", "w") as f:
            f.write(site)
        error_log = directory + "/error.log"
        with open(directory + "/nginx.conf", "w") as f:
            f.write(
                f"""worker_processes 2;
pid {directory}/nginx.pid;
error_log {error_log} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {directory}/tmp/body;
    proxy_temp_path {directory}/tmp/proxy;
    fastcgi_temp_path {directory}/tmp/fastcgi;
    uwsgi_temp_path {directory}/tmp/uwsgi;
    scgi_temp_path {directory}/tmp/scgi;
    include {directory}/myapp.conf;
}}
"""
            )
        self.proc = Proc(
            [ctx.tools["nginx"], "-p", directory, "-e", error_log, "-c", directory + "/nginx.conf", "-g", "daemon off;"],
            directory + "/stderr.log", prefix=prefix,
        )
        if not wait_until(lambda: _connects(self.port), 10):
            raise RuntimeError("nginx did not start: " + self.proc.log[-1000:])

    def stop(self):
        self.proc.stop(signal.SIGQUIT, grace=10)


def _connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def connects(port):
    return _connects(port)


# MARK: - supervisors


class Supervised:
    """An app under one of the supervisors, in the foreground:
    `perl` (Debian's start_server), `ours` (our start_server), `baton` (baton run).

    `ports`: the TCP ports on 127.0.0.1; `dir`: the release directory (the
    app's working directory); `signal_on_hup`: QUIT for Starman; `options`:
    more supervisor options, in its own syntax; `handover`: one listener per
    generation (ours and baton only); `baton`: another baton binary than the
    one under test (an older build).
    """

    LABELS = {"perl": "Perl start_server", "ours": "start_server (ours)", "baton": "baton run"}

    def __init__(self, ctx, kind, app, ports, dir, scratch, name, signal_on_hup="TERM", options=(), handover=False, prefix=(),
                 baton=None):
        self.ctx, self.kind, self.ports = ctx, kind, list(ports)
        self.hups_resent = 0  # HUPs sent again by restart(resend_after=...)
        self.pid_file = os.path.join(scratch, name + ".pid")
        self.status_file = os.path.join(scratch, name + ".status")
        if kind in ("perl", "ours"):
            argv = [ctx.tools["perl-start_server"] if kind == "perl" else ctx.bin("start_server")]
            argv += [f"--port=127.0.0.1:{p}" for p in self.ports]
            argv += [f"--signal-on-hup={signal_on_hup}", f"--dir={dir}", f"--pid-file={self.pid_file}", f"--status-file={self.status_file}"]
            if handover:
                argv.append("--handover")
        else:
            argv = [baton or ctx.bin("baton"), "run"]
            for p in self.ports:
                argv += ["--listen", f"127.0.0.1:{p}"]
            argv += ["--signal-on-hup", signal_on_hup, "--dir", dir, "--pid-file", self.pid_file, "--status-file", self.status_file]
            if handover:
                argv.append("--handover")
        argv += list(options) + ["--"] + list(app)
        self.argv = argv
        self.proc = Proc(argv, os.path.join(scratch, name + ".log"), cwd=dir, prefix=prefix)
        self.pid = self.proc.pid

    @property
    def log(self):
        return self.proc.log

    def generations(self):
        return status_generations(self.status_file)

    def newest(self):
        g = self.generations()
        return max(g)[0] if g else 0

    def wait_serving(self, timeout=30):
        """Waits for a first generation that answers on the first port."""
        ok = wait_until(lambda: self.generations() and connects(self.ports[0]), timeout, 0.02)
        if not ok:
            raise RuntimeError(f"{self.kind} did not start:\n{self.log[-3000:]}")

    def restart(self, old_exit_timeout=15, new_timeout=30, poll=0.002, resend_after=None):
        """HUP, then waits for a newer generation in the status file and for the
        older ones to leave it. Returns (seconds to the new generation listed,
        seconds to it being alone or None when older ones were still there at
        `old_exit_timeout`), or raises when no newer generation came. With
        `resend_after`, a HUP that brought no new generation in that many
        seconds is sent again (counted in `self.hups_resent`)."""
        previous = self.newest()
        start = now()
        os.kill(self.pid, signal.SIGHUP)
        listed = alone = None
        deadline_new = start + new_timeout
        next_resend = start + resend_after if resend_after else None
        while True:
            g = self.generations()
            t = now()
            if listed is None and any(n > previous for n, _ in g):
                listed = t - start
            elif listed is None and next_resend is not None and t > next_resend:
                self.hups_resent += 1
                os.kill(self.pid, signal.SIGHUP)
                next_resend = t + resend_after
            if listed is not None and len(g) == 1 and g[0][0] > previous:
                alone = t - start
                break
            if listed is None and t > deadline_new:
                raise RuntimeError(f"{self.kind}: no new generation within {new_timeout} s:\n{self.log[-3000:]}")
            if listed is not None and t - start - listed > old_exit_timeout:
                break
            time.sleep(poll)
        return listed, alone

    def usage(self):
        return Usage(self.pid)

    def stop(self, grace=30):
        return self.proc.stop(signal.SIGTERM, grace=grace)


def tool_path(name):
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None
