"""Dynamic batching: one thread per resident model runs every predict call of that model.

Requests that arrive within `max_delay` seconds of the first one waiting are run together as one
batch of at most `max_batch` images (a request with several images counts each of them; a request
is never split across turns, and one bigger than `max_batch` alone runs in chunks of `max_batch`).
Because only this thread touches the model, one model instance is used by one batch at a time:
ultralytics predictors are not safe to share across threads.
"""

import logging
import threading
import time
from collections import deque

from .errors import Draining, InferenceFailed, ReplicaError

log = logging.getLogger("serving.replica")


class Pending:
    """One request's images waiting for, then holding, its share of a batch."""

    def __init__(self, images, conf):
        self.images = images
        self.conf = conf
        self.enqueued = time.monotonic()
        self.done = threading.Event()
        self.results = None
        self.error = None
        self.queue_ms = 0.0
        self.inference_ms = 0.0
        self.batch_size = 0

    def wait(self, timeout=None):
        if not self.done.wait(timeout):
            raise TimeoutError("the batch did not finish in time")
        if self.error is not None:
            raise self.error
        return self.results


class Batcher:
    """`run_batch(images, conf)` returns one list of detections per image, each detection a dict
    with a "confidence"; every request keeps only the detections at or above its own `conf`."""

    def __init__(self, label, run_batch, max_batch, max_delay, metrics=None):
        self.label = label
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.metrics = metrics
        self._queue = deque()
        self._queued_images = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{label}", daemon=True)
        self._thread.start()

    def submit(self, images, conf):
        pending = Pending(images, conf)
        with self._cond:
            if self._stopping:
                raise Draining(f"model {self.label} is being unloaded; try again")
            self._queue.append(pending)
            self._queued_images += len(images)
            self._publish_depth()
            self._cond.notify_all()
        return pending

    def stop(self):
        """Stop the thread after the batch it runs; requests still queued are refused (the cache
        stops a batcher only when its model has none in flight)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        self.run_batch = None  # the thread held the model through it: let it go with the batcher

    def _publish_depth(self):
        if self.metrics:
            self.metrics.queue_depth.labels(self.label).set(self._queued_images)

    def _take_batch(self):
        """Wait for a first request, then for others until its deadline or a full batch."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            deadline = self._queue[0].enqueued + self.max_delay
            while not self._stopping:
                if self._queued_images >= self.max_batch:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, count = [], 0
            while self._queue and (not batch or count + len(self._queue[0].images) <= self.max_batch):
                pending = self._queue.popleft()
                batch.append(pending)
                count += len(pending.images)
            self._queued_images -= count
            self._publish_depth()
            return batch

    def _loop(self):
        while True:
            batch = self._take_batch()
            if batch is None:
                break
            self._run(batch)
        with self._cond:
            leftover, self._queue = list(self._queue), deque()
            self._queued_images = 0
            self._publish_depth()
        for pending in leftover:
            pending.error = Draining(f"model {self.label} was unloaded before this request ran; try again")
            pending.done.set()

    def _run(self, batch):
        images = [image for pending in batch for image in pending.images]
        conf = min(pending.conf for pending in batch)
        started = time.monotonic()
        try:
            detections = []
            for first in range(0, len(images), self.max_batch):
                detections.extend(self.run_batch(images[first:first + self.max_batch], conf))
        except ReplicaError as exc:
            self._fail(batch, exc)
            return
        except Exception as exc:  # a failed batch answers its requests; the thread lives on
            log.exception("batch of %d images for %s failed", len(images), self.label)
            self._fail(batch, InferenceFailed(f"inference failed: {exc}"))
            return
        elapsed = time.monotonic() - started
        if self.metrics:
            self.metrics.batch_size.labels(self.label).observe(len(images))
            self.metrics.inference_seconds.labels(self.label).observe(elapsed)
        offset = 0
        for pending in batch:
            mine = detections[offset:offset + len(pending.images)]
            offset += len(pending.images)
            pending.results = [[d for d in found if d["confidence"] >= pending.conf] for found in mine]
            pending.queue_ms = (started - pending.enqueued) * 1000
            pending.inference_ms = elapsed * 1000
            pending.batch_size = len(images)
            pending.done.set()

    @staticmethod
    def _fail(batch, error):
        for pending in batch:
            pending.error = error
            pending.done.set()
