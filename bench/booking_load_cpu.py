"""booking_load's CPU accounting from /proc, so the report can show who used the machine during each
phase."""

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot(gunicorn_pid, bench_db):
    """CPU seconds used so far: by gunicorn (master `gunicorn_pid` + workers), by the PostgreSQL
    backends of database `bench_db`, and by the whole machine (busy time from /proc/stat).

    The machine total lets the report show CPU used by other processes during a phase, which would
    otherwise silently lower the numbers (this box may be shared).
    """
    totals = {"gunicorn": 0.0, "postgres": 0.0}
    seen_pg = False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
        pid, ppid = int(entry), int(fields[1])
        ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
        if gunicorn_pid in (pid, ppid):
            totals["gunicorn"] += ticks
        elif cmdline.startswith("postgres:") and f" {bench_db} " in cmdline:
            # A backend's title is "postgres: <cluster>: <user> <database> <client> <state>".
            totals["postgres"] += ticks
            seen_pg = True
    if not seen_pg:
        totals["postgres"] = None  # server not visible from here (another container/host)
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    totals["machine"] = (sum(cpu[:8]) - cpu[3] - cpu[4]) / CLK_TCK
    return totals
