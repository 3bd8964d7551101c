"""`python -m serving.replica <config.json>`: the replica under gunicorn (one worker, gthread).

One worker, because the models live in that process's memory (or on its device); its threads serve
HTTP while each resident model's batcher thread runs inference. The worker builds the cache and
preloads the pinned models before it accepts requests.

Draining: SIGTERM to the master makes gunicorn stop the worker gracefully (graceful_timeout =
drain_seconds). Our handler in the worker first marks the app draining, so a request arriving on a
kept-alive connection is answered 503 `draining`; gunicorn stops accepting new connections at once
(they are refused once the listener closes), lets requests in flight finish, and the master exits
0. Anything still running after drain_seconds is killed by gunicorn.
"""

import logging
import os
import signal
import sys

from gunicorn.app.base import BaseApplication

from .app import ReplicaApp
from .cache import ModelCache
from .config import ConfigError, ReplicaConfig
from .metrics import ReplicaMetrics

log = logging.getLogger("serving.replica")


def build_app(config):
    """The WSGI app with its cache, pinned models loaded (what the worker serves)."""
    cache = ModelCache(config, ReplicaMetrics(config.memory_budget))
    cache.preload()
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
        # gunicorn's own SIGTERM handler stops the worker gracefully; mark the app draining first.
        previous = signal.getsignal(signal.SIGTERM)

        def drain(signum, frame):
            if self.app is not None:
                self.app.start_draining()
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, drain)
        signal.siginterrupt(signal.SIGTERM, False)
        log.info("replica %s ready on %s:%s (%s)", self.config.replica, self.config.bind, self.config.port,
                 self.config.device)

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
