"""`python -m serving.replica <config.json>`: the replica under gunicorn (one worker, gthread).

One worker, because the models live in that process's memory (or on its device); its threads serve
HTTP while each resident model's batcher thread runs inference. The worker builds the cache, then
preloads the pinned models in a background thread while it already answers: `GET /v1/status` says
`"state": "loading"` until they are loaded (or refused, which is logged), then "ready"; a predict
for a model being preloaded waits for its load.

Draining: SIGTERM to the master closes the master's listeners and sends SIGTERM to the worker,
then waits graceful_timeout (= drain_seconds) before killing it. gunicorn's own worker handler
would stop accepting at once, leaving new connections hanging in the backlog until the worker
exits; ours instead keeps accepting and answers new predict and load requests 503 `draining` (with
Retry-After) while the requests in flight finish, and only then hands over to gunicorn's graceful
stop. The master exits 0.
"""

import logging
import os
import signal
import sys
import threading
from functools import partial

from gunicorn.app.base import BaseApplication

from .app import ReplicaApp
from .cache import ModelCache
from .config import ConfigError, ReplicaConfig
from .metrics import ReplicaMetrics

log = logging.getLogger("serving.replica")

SHUTDOWN_MARGIN = 3


def build_app(config):
    """The WSGI app with its cache (what the worker serves); `start_preload` loads the pinned models."""
    cache = ModelCache(config, ReplicaMetrics(config.memory_budget))
    return ReplicaApp(config, cache)


class ReplicaServer(BaseApplication):
    def __init__(self, config):
        self.config = config
        self.app = None
        super().__init__()

    def load_config(self):
        config = self.config
        settings = {
            "bind": [f"{config.bind}:{config.port}"],
            "workers": 1,
            "worker_class": "gthread",
            "threads": max(8, 2 * config.max_batch),
            "graceful_timeout": config.drain_seconds,
            # Preloading large models can take longer than gunicorn's 30 s heartbeat default.
            "timeout": 600,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
            # Several replicas run on one node: no shared control socket in $HOME.
            "control_socket_disable": True,
            "proc_name": f"replica-{config.replica}",
            "post_worker_init": self._post_worker_init,
            "worker_exit": self._worker_exit,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        self.app = build_app(self.config)
        return self.app

    def _post_worker_init(self, worker):
        signal.signal(signal.SIGTERM, partial(self._drain, signal.getsignal(signal.SIGTERM)))
        signal.siginterrupt(signal.SIGTERM, False)
        self.app.start_preload()
        log.info("replica %s answering on %s:%s (%s), preloading its pinned models", self.config.replica,
                 self.config.bind, self.config.port, self.config.device)

    def _drain(self, stop_worker, signum, frame):
        """SIGTERM in the worker: answer new work with 503 `draining` (status still answers, so
        the supervisor and router see the state) until the requests in flight are done, then let
        gunicorn stop the worker gracefully. The master kills it drain_seconds after SIGTERM."""
        if self.app.draining:
            return
        self.app.start_draining()

        def finish():
            # Keep a few seconds of the grace period for gunicorn's own shutdown (it lingers on
            # kept-alive connections).
            if not self.app.wait_idle(max(0.0, self.config.drain_seconds - SHUTDOWN_MARGIN)):
                log.warning("drain time is up with requests still in flight")
            stop_worker(signum, None)

        threading.Thread(target=finish, name="drain", daemon=True).start()

    def _worker_exit(self, server, worker):
        if self.app is not None:
            self.app.cache.close()


def main(argv):
    if len(argv) != 1:
        print("usage: python -m serving.replica <config.json>", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Never download anything: models come from the store, by path.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        config = ReplicaConfig.from_file(argv[0])
    except ConfigError as exc:
        print(f"replica configuration error: {exc}", file=sys.stderr)
        return 2
    ReplicaServer(config).run()
    return 0
