"""Turns bench/run's figures into latest.md (tables) and latest.png (the
timeline of one run of each supervisor during restarts)."""

import math

from png import Canvas


def _ms(seconds):
    return "–" if seconds is None else f"{seconds * 1000:.0f} ms"


def _s(seconds):
    return "–" if seconds is None else f"{seconds:.2f} s"


def _mb(kb):
    return "–" if kb is None else f"{kb / 1024:.1f} MB"


def _num(n):
    return "–" if n is None else f"{n:,}"


def _simple_section(out, sc, key, title, needed, intro, headers, row):
    """A section that is an introduction and one table: `intro(data)` and
    `row(r)` for each of `data[needed]`."""
    data = _section(out, sc, key, title, needed)
    if data:
        out.append(intro(data))
        out.append(_table(headers, [row(r) for r in data[needed]]))


def _section(out, sc, key, title, needed):
    """Starts the section `title` for scenario `key`; returns its data, or
    None (with the error written) when it is missing or has no `needed`."""
    if key not in sc:
        return None
    data = sc[key]
    out.append(f"\n## {title}\n")
    if data.get("from_earlier"):
        e = data["from_earlier"]
        out.append(f"Kept from an earlier run: `{e['command']}`, {e['date']}, Baton {e['baton']}.\n")
    if needed not in data:
        out.append(f"Error: {data.get('error')}\n")
        return None
    return data


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines) + "\n"


SUPERVISOR_NAMES = {
    "perl": "Perl start_server",
    "baton": "baton run",
    "ours": "start_server (ours)",
    "baton shared": "baton run --listen-mode shared",
    "ours shared": "start_server (ours) --listen-mode=shared",
    # runs made before steering became the default (0.3)
    "baton --handover": "baton run --handover (before 0.3)",
    "ours --handover": "start_server (ours) --handover (before 0.3)",
}


def _network(m):
    where = "a private network namespace" if m["private_network_namespace"] else "the machine's network namespace"
    if "tcp_migrate_req" in m:
        where += f" (net.ipv4.tcp_migrate_req={m['tcp_migrate_req']})"
    elif m["private_network_namespace"]:
        where += " (tcp_migrate_req=1)"
    if m.get("supervisors_as"):
        where += f"; supervisors and apps of the failed-requests runs as {m['supervisors_as']}"
    return where


def _ratio(r):
    during, between = r.get("p99_during_ms"), r.get("p99_between_ms")
    if not during or not between:
        return ""
    return f"{during / between:.2f}x"


def write_markdown(data, path):
    m = data["machine"]
    v = m["versions"]
    out = []
    out.append("# Baton benchmark: latest run\n")
    out.append(f"`{data['command']}` ({data['mode']} mode), {m['date']}, {data.get('elapsed_s', 0) / 60:.1f} min.\n")
    out.append(
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, {m['os']}; load average at start "
        f"{' '.join(m['load_average_at_start'])}; {_network(m)}.\n"
    )
    out.append(
        f"Versions: {v['swift']}; Perl {v['perl']}, Server::Starter {v['Server::Starter']}, Starman {v['starman']}, "
        f"Net::Server {v['Net::Server']}; {v['nginx']}; {v['wrk']}; Baton {v['baton']}.\n"
    )
    for r in data.get("reruns", []):
        out.append(
            f"Run again later, replacing their results: {', '.join(r['scenarios'])} (`{r['command']}`, {r['date']}, "
            f"Baton {r['baton']}, load average at start {' '.join(r['load_average_at_start'])}).\n"
        )
    sc = data["scenarios"]

    f = _section(out, sc, "failed", "1. Failed requests during restarts", "runs")
    if f:
        out.append(
            f"wrk, 64 connections, {f['restarts_per_run']} restarts one after another (each waited for until the new "
            "generation is listed and the old one has left the status file, at most 3 s, 1.5 s with keep-alive, then "
            f"{f.get('quiet_s', 0.3)} s of quiet), 2 s of load before and after. Starman: 4 workers, `--signal-on-hup=QUIT` "
            "(behind nginx `--disable-keepalive`, as examples/nginx/myapp.conf says); the Hummingbird demo: TERM. nginx: "
            "examples/nginx/myapp.conf. Failed = socket errors + non-2xx. With keep-alive, a connection the server closes "
            "between two requests counts as a read error in wrk (a browser or nginx would retry it). p99 during: the "
            "answers that arrived in a tenth of a second touching a restart (from its HUP until the old generation was "
            "gone); between: all the others after wrk's first second.\n\n"
        )
        rows = []
        flagged = False
        header_git = v["baton"].split()[1] if v["baton"].startswith("git ") else None
        older = set()
        for r in f["runs"]:
            where = f"{r['app']}, {'keep-alive' if r['keepalive'] else 'close'}, {'nginx' if r['nginx'] else 'direct'}"
            who = SUPERVISOR_NAMES.get(r["supervisor"], r["supervisor"])
            if r.get("baton_git") and header_git and r["baton_git"] != header_git:
                older.add(r["baton_git"])
                who += f" ‡{r['baton_git']}"
            if "error" in r:
                rows.append([where, who, "error"] + [""] * 10)
                continue
            artifact = r["read"] > 0.5 * max(1, r["requests"])
            flagged = flagged or artifact
            during = r.get("p99_during_ms")
            between = r.get("p99_between_ms")
            rows.append([
                where, who, r["restarts"], _num(r["requests"]),
                f"**{r['failed']}**" + (" †" if artifact else ""), r["non2xx"], f"{r['connect']}/{r['read']}/{r['write']}/{r['timeout']}",
                f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                f"{during:.1f}" if during else "", f"{between:.1f}" if between else "", _ratio(r), f"{r['max_ms']:.0f}",
            ])
        out.append(_table(["app, connections, path", "supervisor", "restarts", "requests", "failed", "non-2xx",
                           "socket errors c/r/w/t", "p50 ms", "p99 ms", "p99 during restarts", "p99 between", "during/between",
                           "max ms"], rows))
        if older:
            out.append(
                f"\n‡ Kept from an earlier run, made from Baton git {', '.join(sorted(older))}; the rows without ‡ "
                "come from the commit this page names.\n"
            )
        if flagged:
            out.append(
                "\n† More read errors than half the requests: the app answers a `Connection: close` request without "
                "`Connection: close` in its answer and then closes, so wrk sends its next request on the closed "
                "connection and counts one read error per request, with or without restarts. An artifact of the app "
                "and wrk, not of the restarts: compare these rows with each other only.\n"
            )

    _simple_section(
        out, sc, "latency", "2. Restart latency", "variants",
        lambda lat: f"The test app (baton-testapp), no load, {lat['restarts_per_variant']} restarts per variant, in turn. From the "
        "restart command to: the new generation serving (baton: its `serving` event, when the old one is signalled; "
        "Server::Starter: the status file lists the new generation, which is when it signals the old one), the old "
        "generation's exit, and the command's return (`baton restart` waits for the old generation to exit; "
        "Perl's `start_server --restart` polls the status file once a second).\n\n",
        ["variant", "command", "serving median", "max", "old exited median", "max", "command returned median", "max"],
        lambda r: [r["variant"], f"`{r['command']}`"]
        + [_ms(r[k][m]) for k in ("serving", "old_exited", "returned") for m in ("median_s", "max_s")])

    _simple_section(
        out, sc, "overhead", "3. Overhead", "rows",
        lambda o: f"wrk -t2 -c64 for {o['seconds']} s after a warm-up, {o['rounds']} round(s), the setups in turn (forward, then "
        "backward); the demo with keep-alive, Starman (4 workers) with `Connection: close`. The app accepts on the socket "
        "itself under every supervisor, so the ratio should be 1.00 within noise (2 cores shared by wrk and the app: expect "
        "a few per cent either way).\n\n",
        ["app", "setup", "requests/s (mean)", "ratio to direct", "ratio per round (min–max)", "p99 ms"],
        lambda r: [r["app"], "bound directly" if r["setup"] == "direct" else SUPERVISOR_NAMES.get(r["setup"], r["setup"]),
                   f"{r['rps']:,.0f}", f"{r['ratio']:.3f}", f"{r['ratio_min']:.2f}–{r['ratio_max']:.2f}", f"{r['p99_ms']:.2f}"])

    def footprint_row(r):
        i, b = r["idle"], r["restarts"]
        return [r["supervisor"], f"`{r['options']}`", _mb(i["rss_kb"]), i["threads"], f"{i['cpu_ms']:.1f}",
                i["context_switches"], f"{b['cpu_ms']:.0f} ({b['cpu_ms_per_restart']:.2f}/restart)",
                b["context_switches"], _mb(b["rss_kb_peak"]), _ms(b["median_restart_s"])]

    _simple_section(
        out, sc, "footprint", "4. Footprint", "rows",
        lambda fp: f"The supervisor process alone (not the app), the test app under each. Idle: "
        f"{fp['rows'][0]['idle']['seconds']} s side by side. Then {fp['rows'][0]['restarts']['count']} restarts each, in "
        "turn (HUP, until the old generation is gone). CPU time from /proc/PID/task/*/schedstat, context switches of every "
        "thread.\n\n",
        ["supervisor", "options", "idle RSS", "threads", "idle CPU ms", "idle ctx switches", "restarts: CPU ms", "ctx switches",
         "RSS peak", "median restart"],
        footprint_row)

    s = _section(out, sc, "scale", "5. Scale", "rows")
    if s:
        out.append(
            "The test app on 1, 4 and 16 listeners, restarts under wrk -t2 -c8 (`Connection: close`) on the last "
            "listener; each supervisor at its fastest safe setting (Perl's start_server has no readiness: --interval=0 "
            "signals the old generation at once).\n\n"
        )
        rows = [[r["listeners"], r["supervisor"], r["restarts"], _ms(r["median_restart_s"]), _ms(r["max_restart_s"]),
                 _num(r["requests"]), r["failed"], _mb(r["rss_kb"]), r["fds"]] for r in s["rows"]]
        out.append(_table(["listeners", "supervisor", "restarts", "median restart", "max", "requests", "failed",
                           "supervisor RSS", "supervisor fds"], rows))
        out.append("\nRestarts in a row (1 listener, no load):\n\n")
        rows = [[r["supervisor"], _num(r["restarts"]), f"{r['seconds']:.0f} s", _ms(r["median_restart_s"]),
                 f"{_mb(r['rss_kb_start'])} → {_mb(r['rss_kb_end'])}", f"{r['fds_start']} → {r['fds_end']}",
                 f"{r['cpu_ms']:.0f}", r.get("hups_missed", "-"), "yes" if r["serves_after"] else "NO"]
                for r in s["long"]]
        out.append(_table(["supervisor", "restarts", "took", "median restart", "RSS start → end", "fds start → end",
                           "CPU ms", "HUPs missed", "serves after"], rows))
        out.append("\nHUPs missed: a HUP after which no new generation came within 5 s, so it was sent again "
                   "(that restart's time is left out of the median, not its CPU). Perl's start_server decides to block "
                   "when no signal is queued, then clears its flag and blocks in wait(): a HUP landing in between "
                   "waits for the next child exit.\n")

    d = _section(out, sc, "deploy", "6. Cold start and deploy", "rows")
    if d:
        out.append(
            f"Median of {d['rounds']} round(s). Baton: `baton start --dir LINK ... -- APP` (a daemon, returns once the app is "
            "ready), then `baton deploy --release DIR --current LINK ... -- APP`. Classic: bench/classic/deploy.sh: re-point `current`, then "
            "`start_server --restart` if `start-stop-daemon --status` says it runs, else `start-stop-daemon --start "
            "--background ... start_server --interval=1 ...`. \"first answer\" is the first 200 on GET / (polled every "
            "5 ms from the command's start); after a deploy, the first from release v2.\n\n"
        )
        names = {"baton": "baton start / baton deploy", "perl": "start-stop-daemon + Perl start_server + script",
                 "ours": "start-stop-daemon + start_server (ours) + script"}
        rows = []
        for r in d["rows"]:
            if "error" in r:
                rows.append([r["app"], names[r["side"]], "error", "", "", ""])
                continue
            rows.append([r["app"], names[r["side"]], _s(r["start_first_answer_s"]), _s(r["start_returned_s"]),
                         _s(r["deploy_first_answer_s"]), _s(r["deploy_returned_s"])])
        out.append(_table(["app", "how", "start: first answer", "start: command returned", "deploy: first v2 answer",
                           "deploy: command returned"], rows))

    rd = _section(out, sc, "readiness", "7. Readiness: how soon a restart's new code answers, and what probation costs", "rows")
    if rd:
        _readiness(out, rd)

    out.append("\n![requests/s and p99 during restarts](latest.png)\n")
    with open(path, "w") as f:
        f.write("\n".join(out))


def _spread(f, digits, unit="", scale=1.0):
    """`median unit (min–max)` of a {median, min, max} figure."""
    if not f or f.get("median") is None:
        return "–"
    n = lambda x: f"{x * scale:.{digits}f}"  # noqa: E731
    if n(f["min"]) == n(f["max"]):
        return n(f["median"]) + unit
    return f"{n(f['median'])}{unit} ({n(f['min'])}–{n(f['max'])})"


def _readiness(out, rd):
    streak = rd["streak"]
    before = rd.get("before_git", "?")
    out.append(
        f"Median (min–max) of {rd['rounds']} round(s), one side at a time, the order rotated each round. The app: "
        f"`{rd['app']}` (Debian's gunicorn, no `--preload`, `--signal-on-hup TERM`: it drains), a WSGI app whose body "
        "names its release directory and pid. Each round starts the supervisor on release v1 behind a `current` "
        "symlink, waits until v1 answers and (baton) `baton status` lists one generation and no probation, re-points "
        "`current` at v2 and restarts while one poller GETs / back to back (`Connection: close`, 1 ms between an "
        "answer and the next request). Sides:\n\n"
        "- **baton (now)**: the commit this page names, its defaults (readiness is proof: the new generation took a "
        "probe connection on its own socket, and READY=1, which gunicorn sends; it takes over at once; `--probation 5s` "
        "keeps the old generation in reserve, unsignalled) plus `--health /`, the issue's setting; restarted with "
        "`baton restart --pid-file P`, which returns after the probation and the old generation's exit.\n"
        "- **baton (now, no --health)**: the same, its defaults only.\n"
        f"- **baton (before)**: git {before}, before probation: READY=1 (or alive 1 s), then `--settle 1s`, then the "
        "take-over and the old generation signalled at once; `--health /`; `baton restart --pid-file P`.\n"
        "- **Perl start_server --interval=1**: Debian's Server::Starter, `--port=127.0.0.1:PORT --interval=1 "
        "--signal-on-hup=TERM --dir=current`, the same gunicorn told its descriptor (`--bind fd://N` from "
        "SERVER_STARTER_PORT); restarted with SIGHUP. Both generations accept on the one shared socket until the old "
        "one drains. \"command returned\": when its status file lists only the new generation, which is when "
        "`start_server --restart` returns (it polls once a second; watched here every 2 ms).\n\n"
        f"Seconds from the restart (the command's start, or the HUP) to the first v2 answer and to {streak} v2 answers "
        "in a row. Old generation up: from the first v2 answer until the old generation's main process exited "
        "(probation's cost in time: the new code already answers, the old one waits in reserve). Its RSS: the sum of "
        "VmRSS of its process group (baton) or process tree (Server::Starter, which gives generations no group of "
        "their own) read right after the first v2 answer; MB·s = that RSS × the time up. Failed: requests of the "
        "poller without a 200 answer; v1 after v2: answers from the old release after the first from the new (on Server::"
        f"Starter's shared socket both generations answer until the old one drains, so {streak} v2 answers in a row "
        "can also come by chance before it stops accepting).\n\n"
    )
    rows = []
    for r in rd["rows"]:
        if not r.get("rounds"):
            rows.append([r["side"], f"no successful round ({r.get('errors', 0)} failed)"] + [""] * 8)
            continue
        side = r["side"] + (f" (`{r['options']}`)" if r.get("options") and r["options"] not in r["side"] else "")
        if r.get("errors") or r.get("hups_resent") or r.get("leftovers"):
            notes = []
            if r.get("errors"):
                notes.append(f"{r['errors']} round(s) failed")
            if r.get("hups_resent"):
                notes.append(f"{r['hups_resent']} HUP(s) sent again, round left out")
            if r.get("leftovers"):
                notes.append(f"{r['leftovers']} process(es) left after the stop")
            side += " — " + "; ".join(notes)
        rows.append([
            side, r["rounds"], _spread(r["first_v2_s"], 2, " s"), f"**{_spread(r['streak_v2_s'], 2, ' s')}**",
            _spread(r["returned_s"], 2, " s"), _spread(r["old_alive_after_first_v2_s"], 2, " s"),
            _spread(r["old_rss_kb"], 1, " MB", 1 / 1024), _spread(r["old_mb_s"], 0), _spread(r["failed"], 0),
            _spread(r["v1_after_first_v2"], 0),
        ])
    out.append(_table(["side", "rounds", "first v2 answer", f"{streak} v2 answers in a row", "command returned",
                       "old generation up after the first v2 answer", "its RSS then", "MB·s", "failed", "v1 after v2"], rows))
    g = rd.get("goal")
    if g:
        out.append(f"\nbaton (now) to {streak} v2 answers in a row: {g['ratio_to_perl']:.2f} of Perl's start_server's "
                   f"time (the issue's goal: at most {g['target']:.1f}).\n")


# MARK: - the picture

COLORS = {
    "perl": (214, 39, 40),
    "baton": (31, 119, 180),
    "ours": (44, 160, 44),
    "baton shared": (148, 103, 189),
    "ours shared": (140, 86, 75),
}


def _pick_runs(data):
    """The runs to draw: for each app, the first cell that has runs, one run per supervisor."""
    f = data["scenarios"].get("failed", {})
    runs = [r for r in f.get("runs", []) if "timeline" in r]
    columns = []
    for app, keepalive in (("starman", False), ("demo", True)):
        chosen = [r for r in runs if r["app"] == app and r["keepalive"] == keepalive and not r["nginx"]]
        if chosen:
            order = ["perl", "baton shared", "baton", "ours", "ours shared"]
            chosen.sort(key=lambda r: order.index(r["supervisor"]) if r["supervisor"] in order else 9)
            columns.append((f"{app}, {'keep-alive' if keepalive else 'connection: close'}, wrk -c64", chosen))
    return columns


def write_png(data, path):
    columns = _pick_runs(data)
    if not columns:
        c = Canvas(600, 80)
        c.text(20, 30, "no failed-requests runs to draw", (0, 0, 0), 2)
        c.save(path)
        return
    rows = max(len(runs) for _, runs in columns)
    col_w, panel_h, gap = 640, 110, 16
    row_h = 2 * panel_h + 3 * gap + 20
    top = 88
    width = 60 + len(columns) * (col_w + 40)
    height = top + rows * row_h + 40
    c = Canvas(width, height)
    c.text(20, 12, "requests/s and p99 during restarts", (0, 0, 0), 2)
    c.text(20, 34, "per second: answers (top), p99 latency in ms (bottom, log scale).", (90, 90, 90), 1)
    c.text(20, 46, "shaded: from each HUP until the new generation was listed.", (90, 90, 90), 1)
    c.text(20, 58, f"{data['machine']['nproc']} cpus, linux {data['machine']['kernel']}, {data['machine']['date']}", (90, 90, 90), 1)
    for ci, (title, runs) in enumerate(columns):
        x0 = 60 + ci * (col_w + 40)
        c.text(x0, top - 2, title, (0, 0, 0), 1)
        max_rps = max((n for r in runs for _, n, _ in r["timeline"]), default=1) or 1
        max_t = max((t for r in runs for t, _, _ in r["timeline"]), default=1)
        p99s = [p for r in runs for _, _, p in r["timeline"] if p]
        lo = 10 ** math.floor(math.log10(max(0.01, min(p99s)))) if p99s else 0.1
        hi = 10 ** math.ceil(math.log10(max(p99s))) if p99s else 1000
        if hi <= lo:
            hi = lo * 10
        for ri, r in enumerate(runs):
            y0 = top + 12 + ri * row_h
            color = COLORS.get(r["supervisor"], (0, 0, 0))
            c.text(x0, y0, f"{SUPERVISOR_NAMES.get(r['supervisor'], r['supervisor'])}: {r['failed']} failed of {r['requests']:,} "
                   f"({r['restarts']} restarts)".replace(",", " "), color, 1)
            for pi in range(2):
                py = y0 + 14 + pi * (panel_h + gap)
                px0, px1 = x0 + 50, x0 + col_w
                c.rect(px0, py, px1, py + panel_h, (248, 248, 248))
                for mark in r["restart_marks_s"]:
                    a, b = mark[0], mark[1]
                    xa = px0 + (px1 - px0) * a / max_t
                    xb = px0 + (px1 - px0) * max(b, a + 0.05) / max_t
                    c.rect(xa, py, max(xa + 1, xb), py + panel_h, (225, 225, 235))
                c.line(px0, py + panel_h, px1, py + panel_h, (0, 0, 0))
                c.line(px0, py, px0, py + panel_h, (0, 0, 0))
                points = []
                for t, n, p in r["timeline"]:
                    if t < 0 or t > max_t:
                        continue
                    x = px0 + (px1 - px0) * (t + 0.5) / max_t
                    if pi == 0:
                        y = py + panel_h - panel_h * n / max_rps
                    else:
                        if not p:
                            continue
                        frac = (math.log10(max(p, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
                        y = py + panel_h - panel_h * frac
                    points.append((x, y))
                # The first and last seconds are partial: leave them out.
                c.polyline(points[1:-1], color, 2)
                if pi == 0:
                    c.text(x0, py, f"{max_rps:,}".replace(",", " "), (60, 60, 60), 1)
                    c.text(x0, py + panel_h - 8, "0", (60, 60, 60), 1)
                else:
                    c.text(x0, py, f"{hi:g}", (60, 60, 60), 1)
                    c.text(x0, py + panel_h - 8, f"{lo:g}", (60, 60, 60), 1)
            c.text(px1 - 60, y0 + 14 + 2 * panel_h + gap + 4, f"{max_t:.0f} s", (60, 60, 60), 1)
    c.save(path)
