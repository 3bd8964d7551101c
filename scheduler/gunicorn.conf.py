"""gunicorn's settings for the web process (Procfile: web): `gunicorn -c scheduler/gunicorn.conf.py`.

Metrics under several workers: a scrape reaches one worker, so prometheus_client's multiprocess mode
keeps every process's values in files under PROMETHEUS_MULTIPROC_DIR, and /metrics adds them up
(ops.metrics). The directory defaults to VAR_DIR/prometheus here, so the web is right even when
nobody set it; the central Celery worker on this machine shares it when given the same variable.
"""

import os
import re
from pathlib import Path

_base = Path(__file__).resolve().parent.parent
multiproc_dir = Path(
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(Path(os.environ.get("VAR_DIR", _base / "var")) / "prometheus"))
)
multiproc_dir.mkdir(parents=True, exist_ok=True)

# prometheus_client picks its multiprocess storage when imported: only once the variable is set.
from prometheus_client import multiprocess  # noqa: E402

bind = f"{os.environ.get('WEB_HOST', '127.0.0.1')}:{os.environ.get('WEB_PORT', '8000')}"
workers = int(os.environ.get("WEB_WORKERS", "3"))
accesslog = "-"

_PID = re.compile(r"_(\d+)\.db$")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def on_starting(server):
    """Forget the values of processes that are gone (the last run's), which would otherwise be added
    to this run's forever. Files of live processes stay: a Celery worker sharing the directory may
    have started a moment before the web."""
    for path in multiproc_dir.glob("*.db"):
        match = _PID.search(path.name)
        if match is None or not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)


def child_exit(server, worker):
    # Its counters and histograms still count (they are kept); its live gauges must go.
    multiprocess.mark_process_dead(worker.pid, str(multiproc_dir))
