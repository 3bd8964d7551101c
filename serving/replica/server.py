"""`python -m serving.replica <config.json>`: the replica's Starlette app under uvicorn, one process.

One process, because the models live in its memory (or on its device): uvicorn's event loop reads
requests, the work runs in Starlette's thread pool, and each resident model's batcher thread runs
inference. The process builds the cache, then preloads the pinned models in a background thread
while it already answers: `GET /v1/status` says `"state": "loading"` until they are loaded (or
refused, which is logged), then "ready"; a predict for a model being preloaded waits for its load.
A connection must send each request's head within HEAD_SECONDS (serving.http_deadline): the
replica's port is for the front door and the web, and no other client may hold it by trickling.

Draining: uvicorn's own SIGTERM handling would close the listener at once, so a request arriving
meanwhile would find nothing there. Instead the first SIGTERM keeps the replica answering: new
predict and load requests get 503 `draining` (with Retry-After; status still answers, so the
supervisor and the front door see the state) while the requests in flight finish, and only then,
or drain_seconds less SHUTDOWN_MARGIN after the signal, does uvicorn shut down, giving its open
connections SHUTDOWN_MARGIN more. The process exits 0.
"""

import logging
import os
import signal
import sys
import threading

import uvicorn

from serving.http_deadline import with_head_deadline

from .app import ReplicaApp
from .cache import ModelCache
from .config import ConfigError, ReplicaConfig
from .metrics import ReplicaMetrics

log = logging.getLogger("serving.replica")

SHUTDOWN_MARGIN = 3
HEAD_SECONDS = 10
KEEP_ALIVE_SECONDS = 5


def build_app(config):
    """The replica (cache, state) whose `asgi()` the server serves."""
    cache = ModelCache(config, ReplicaMetrics(config.memory_budget))
    return ReplicaApp(config, cache)


class ReplicaServer(uvicorn.Server):
    def __init__(self, config):
        self.replica = build_app(config)
        self.drain_seconds = config.drain_seconds
        super().__init__(uvicorn.Config(
            self.replica.asgi(), host=config.bind, port=config.port, lifespan="on", log_config=None,
            access_log=False, proxy_headers=False, http=with_head_deadline(HEAD_SECONDS),
            timeout_keep_alive=KEEP_ALIVE_SECONDS, timeout_graceful_shutdown=SHUTDOWN_MARGIN,
        ))
        log.info("replica %s answering on %s:%s (%s), preloading its pinned models", config.replica,
                 config.bind, config.port, config.device)

    def handle_exit(self, sig, frame):
        """The first SIGTERM drains (above); SIGINT, or a SIGTERM while draining, is uvicorn's."""
        if sig != signal.SIGTERM or self.replica.draining:
            return super().handle_exit(sig, frame)
        self.replica.start_draining()
        threading.Thread(target=self._finish_drain, name="drain", daemon=True).start()

    def _finish_drain(self):
        if not self.replica.wait_idle(max(0.0, self.drain_seconds - SHUTDOWN_MARGIN)):
            log.warning("drain time is up with requests still in flight")
        self.should_exit = True


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
