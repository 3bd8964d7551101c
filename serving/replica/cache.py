"""The model cache: models load on demand within a memory budget and the least recently used idle
ones are evicted to make room.

Rules, all decided under one lock (`_cond`):
- A request holds its model "in flight" from before its load until its results are out (`use`). A
  model in flight, loading or pinned is never evicted.
- A miss first reserves room for the model's estimate (a previous measurement of the same SHA-256,
  else `runtime.estimate_bytes`): more than the whole budget is ModelTooLarge (422); otherwise idle
  unpinned models are evicted least recently used first until it fits, or NoRoom (503) when even
  evicting all of them would not make it fit (nothing is evicted then).
- One load runs at a time per model (single flight): concurrent requests for a loading model wait
  for it and share its outcome. Loads of different models are serialised too (`_load_lock`), which
  keeps the CUDA memory delta of each load its own.
- Before loading, the file's SHA-256 must equal the configuration's (WeightsMismatch, 409).
- After loading, the measured bytes replace the reservation: over the whole budget is
  ModelTooLarge, otherwise more idle models are evicted or the new one is dropped with NoRoom.
  The bytes are remembered per SHA-256 only when the loader says they were a plausible
  measurement (`loaded.measured`, see runtime.measure); a fallback figure is not kept.
- Eviction stops the model's batcher and drops every reference under the lock; collecting and (on
  CUDA) synchronising and emptying the allocator's cache happen after the lock is released
  (`_give_back`), so no request waits on the lock behind another model's running batch. Then
  `resident_bytes` and the device's allocated memory both go down.
"""

import copy
import itertools
import logging
import threading
import time
from contextlib import contextmanager

from . import runtime
from .batching import Batcher
from .errors import (
    LoadFailed, ModelBusy, ModelTooLarge, NoRoom, ReplicaError, UnknownModel, UnknownVersion, WeightsMismatch,
)
from .metrics import ReplicaMetrics

log = logging.getLogger("serving.replica")

ABSENT, LOADING, RESIDENT = "absent", "loading", "resident"
DEFAULT_CONF = 0.25
RETRY_AFTER = 1


class Entry:
    """The cache's state for one model version."""

    def __init__(self, spec):
        self.spec = spec
        self.state = ABSENT
        self.model = None
        self.batcher = None
        self.bytes = 0
        self.reserved = 0
        self.pinned = spec.pinned
        self.in_flight = 0
        self.loads = 0
        self.last_used = None  # unix time, for people
        self.touched = 0  # a tick of the cache's clock, for LRU order
        self.load_seq = 0
        self.load_error = None


class Lease:
    """A request's hold on a resident model: `cache` is "hit" or "miss", `load_ms` the time it
    waited for the load (0 on a hit)."""

    def __init__(self, entry, cache, load_ms):
        self.entry = entry
        self.spec = entry.spec
        self.cache = cache
        self.load_ms = load_ms


class ModelCache:
    """`ModelCache(config)`; `predict(name, version, images, conf)`, `load`, `unload`, `status`.

    `loader(spec, device)` builds a loaded model (default `runtime.LoadedModel`: anything with
    `bytes`, `predict(images, conf)` and `close()`)."""

    def __init__(self, config, metrics=None, loader=runtime.LoadedModel):
        self.config = config
        self.device = config.device
        self.budget = config.memory_budget
        self.metrics = metrics or ReplicaMetrics(config.memory_budget)
        self.loader = loader
        self.entries = {(spec.name, spec.version): Entry(spec) for spec in config.models}
        self._latest = {}
        for spec in config.models:
            if spec.version > self._latest.get(spec.name, 0):
                self._latest[spec.name] = spec.version
        self._measured = {}  # sha256 -> bytes measured at its last load (plausible measurements only)
        self._dropped = False  # models were dropped under the lock: give their memory back after it
        self._cond = threading.Condition()
        self._load_lock = threading.Lock()
        self._clock = itertools.count(1)
        self._publish()

    # -- lookups ------------------------------------------------------------------------------

    def resolve(self, name, version=None):
        """The served spec for `name` (its highest served version when `version` is None)."""
        if name not in self._latest:
            raise UnknownModel(f"model {name!r} is not served by this replica", field="model")
        version = self._latest[name] if version is None else version
        entry = self.entries.get((name, version))
        if entry is None:
            served = sorted(v for (n, v) in self.entries if n == name)
            raise UnknownVersion(
                f"model {name!r} version {version} is not served by this replica (served: {served})", field="version"
            )
        return entry.spec

    def resident_bytes(self):
        with self._cond:
            return sum(e.bytes for e in self.entries.values() if e.state == RESIDENT)

    def status(self):
        with self._cond:
            models = [
                {
                    "name": e.spec.name,
                    "version": e.spec.version,
                    "sha256": e.spec.sha256,
                    "resident": e.state == RESIDENT,
                    "loading": e.state == LOADING,
                    "bytes": e.bytes if e.state == RESIDENT else 0,
                    "pinned": e.pinned,
                    "in_flight": e.in_flight,
                    "loads": e.loads,
                    "last_used": e.last_used,
                }
                for e in self.entries.values()
            ]
            return {
                "device": self.device,
                "memory_budget": self.budget,
                "resident_bytes": sum(e.bytes for e in self.entries.values() if e.state == RESIDENT),
                "device_allocated": runtime.device_allocated(self.device),
                "models": models,
            }

    # -- requests -----------------------------------------------------------------------------

    def predict(self, name, version, images, conf=None):
        """Run `images` (PIL images) through the model, loading it first if needed; returns the
        response body's model, cache, timings and one list of detections per image."""
        spec = self.resolve(name, version)
        conf = DEFAULT_CONF if conf is None else conf
        with self.use(spec) as lease:
            pending = lease.entry.batcher.submit(images, conf)
            found = pending.wait()
        return {
            "model": spec.name,
            "version": spec.version,
            "sha256": spec.sha256,
            "cache": lease.cache,
            "timings": {
                "queue_ms": round(pending.queue_ms, 2),
                "load_ms": round(lease.load_ms, 2),
                "inference_ms": round(pending.inference_ms, 2),
                "batch_size": pending.batch_size,
            },
            "detections": found,
        }

    @contextmanager
    def use(self, spec):
        """Hold `spec`'s model in flight (loaded first if needed) for the `with` block."""
        lease = self._acquire(self.entries[(spec.name, spec.version)])
        try:
            yield lease
        finally:
            self._release(lease.entry)

    def load(self, name, version=None, pin=False):
        """Make a model resident (an operator's load or a preload); `pin` keeps it resident."""
        spec = self.resolve(name, version)
        with self.use(spec) as lease:
            if pin:
                with self._cond:
                    lease.entry.pinned = True
        return lease

    def unload(self, name, version=None):
        """Unpin a model and evict it; ModelBusy while requests hold it (it stays unpinned, so
        it goes with the next eviction). Returns whether it was resident."""
        spec = self.resolve(name, version)
        with self._cond:
            entry = self.entries[(spec.name, spec.version)]
            entry.pinned = False
            if entry.state == ABSENT:
                return False
            if entry.in_flight or entry.state == LOADING:
                raise ModelBusy(
                    f"model {spec.label} is unpinned but has {entry.in_flight} request(s) in flight; try again",
                    retry_after=RETRY_AFTER,
                )
            self._evict(entry, "unload")
        self._give_back()
        return True

    def preload(self):
        """Import the runtime (runtime.prepare), then load every pinned model; a failure is logged
        and the others still load."""
        runtime.prepare()
        for entry in list(self.entries.values()):
            if not entry.pinned:
                continue
            try:
                self.load(entry.spec.name, entry.spec.version, pin=True)
            except ReplicaError as exc:
                log.error("preloading %s failed: %s %s", entry.spec.label, exc.code, exc.detail)

    def close(self):
        """Stop every batcher and drop every model (the process is stopping)."""
        with self._cond:
            for entry in self.entries.values():
                if entry.state == RESIDENT:
                    self._evict(entry, "shutdown")
        self._give_back()

    # -- internals (callers hold self._cond where noted) ---------------------------------------------

    def _acquire(self, entry):
        label = entry.spec.label
        started = time.monotonic()
        with self._cond:
            entry.in_flight += 1
            self._touch(entry)
            try:
                if entry.state == RESIDENT:
                    self.metrics.hits.labels(label).inc()
                    return Lease(entry, "hit", 0.0)
                self.metrics.misses.labels(label).inc()
                while entry.state == LOADING:
                    seq = entry.load_seq
                    self._cond.wait()
                    if entry.load_seq != seq and entry.state == ABSENT and entry.load_error is not None:
                        raise copy.copy(entry.load_error)  # the load this request waited for failed
                if entry.state == RESIDENT:
                    return Lease(entry, "miss", (time.monotonic() - started) * 1000)
                self._reserve(entry)
                entry.state = LOADING
            except BaseException:
                entry.in_flight -= 1
                raise
        self._give_back()
        try:
            loaded = self._load(entry)
            try:
                with self._cond:
                    self._install(entry, loaded)
            finally:
                self._give_back()
        except BaseException as exc:
            error = exc if isinstance(exc, ReplicaError) else LoadFailed(f"could not load {label}: {exc}")
            with self._cond:
                entry.state = ABSENT
                entry.reserved = 0
                entry.load_error = error
                entry.load_seq += 1
                entry.in_flight -= 1
                self._cond.notify_all()
            runtime.release_memory(self.device)  # whatever a failed load left on the device
            self.metrics.loads.labels(label, error.code).inc()
            log.warning("load of %s refused: %s %s", label, error.code, error.detail)
            if error is exc:
                raise
            raise error from exc
        return Lease(entry, "miss", (time.monotonic() - started) * 1000)

    def _release(self, entry):
        with self._cond:
            entry.in_flight -= 1
            self._touch(entry)

    def _touch(self, entry):
        entry.touched = next(self._clock)
        entry.last_used = time.time()

    def _used(self, excluding):
        return sum(
            e.bytes if e.state == RESIDENT else e.reserved
            for e in self.entries.values()
            if e is not excluding and e.state != ABSENT
        )

    def _reserve(self, entry):
        """Under the lock: room for the estimate of `entry`, or ModelTooLarge / NoRoom."""
        spec = entry.spec
        estimate = self._measured.get(spec.sha256) or runtime.estimate_bytes(spec)
        if estimate > self.budget:
            self.metrics.loads.labels(spec.label, ModelTooLarge.code).inc()
            raise ModelTooLarge(
                f"model {spec.label} needs about {estimate} bytes, more than this replica's whole budget of "
                f"{self.budget} bytes",
                field="model",
            )
        if not self._make_room(estimate, entry):
            self.metrics.loads.labels(spec.label, NoRoom.code).inc()
            raise NoRoom(self._no_room_detail(spec, estimate), retry_after=RETRY_AFTER)
        entry.reserved = estimate

    def _no_room_detail(self, spec, needed):
        return (
            f"model {spec.label} needs about {needed} bytes and {self._used(None)} of {self.budget} are held by "
            f"models in use or pinned; try again"
        )

    def _make_room(self, needed, entry):
        """Under the lock: evict idle unpinned models, least recently used first, until `needed`
        more bytes fit; evict nothing and return False when that cannot be enough."""
        used = self._used(entry)
        if used + needed <= self.budget:
            return True
        victims = sorted(
            (e for e in self.entries.values()
             if e is not entry and e.state == RESIDENT and not e.in_flight and not e.pinned),
            key=lambda e: e.touched,
        )
        if used - sum(v.bytes for v in victims) + needed > self.budget:
            return False
        for victim in victims:
            if used + needed <= self.budget:
                break
            used -= victim.bytes
            self._evict(victim, "lru")
        return True

    def _load(self, entry):
        spec = entry.spec
        with self._load_lock:
            started = time.monotonic()
            try:
                actual = runtime.sha256_file(spec.path)
            except OSError as exc:
                raise LoadFailed(f"cannot read the weights of {spec.label}: {exc.strerror}") from exc
            if actual != spec.sha256:
                raise WeightsMismatch(
                    f"the weights file of {spec.label} has SHA-256 {actual}, not the registered {spec.sha256}; "
                    f"refusing to load it"
                )
            loaded = self.loader(spec, self.device)
            self.metrics.load_seconds.labels(spec.label).observe(time.monotonic() - started)
            log.info("loaded %s: %d bytes in %.2fs", spec.label, loaded.bytes, time.monotonic() - started)
            return loaded

    def _install(self, entry, loaded):
        """Under the lock: make a freshly loaded model resident, or drop it and raise."""
        spec = entry.spec
        if getattr(loaded, "measured", True):
            self._measured[spec.sha256] = loaded.bytes
        else:
            self._measured.pop(spec.sha256, None)
        entry.reserved = 0
        if loaded.bytes > self.budget:
            self._drop(loaded)
            raise ModelTooLarge(
                f"model {spec.label} takes {loaded.bytes} bytes once loaded, more than this replica's whole budget "
                f"of {self.budget} bytes",
                field="model",
            )
        if not self._make_room(loaded.bytes, entry):
            self._drop(loaded)
            raise NoRoom(self._no_room_detail(spec, loaded.bytes), retry_after=RETRY_AFTER)
        entry.model = loaded
        entry.bytes = loaded.bytes
        entry.state = RESIDENT
        entry.loads += 1
        entry.load_error = None
        entry.load_seq += 1
        entry.batcher = Batcher(
            spec.label, loaded.predict, self.config.max_batch, self.config.max_delay_ms / 1000, self.metrics
        )
        self.metrics.loads.labels(spec.label, "ok").inc()
        self._publish()
        self._cond.notify_all()

    def _drop(self, loaded):
        """Under the lock: let a loaded model go (its memory is given back after the lock)."""
        loaded.close()
        self._dropped = True

    def _give_back(self):
        """Not under the lock: collect what was dropped and (on CUDA) empty the allocator's cache,
        which synchronises with whatever batch is running on the device."""
        with self._cond:
            dropped, self._dropped = self._dropped, False
        if dropped:
            runtime.release_memory(self.device)
            with self._cond:
                self._publish()  # the device's allocated memory, now that it went down

    def _evict(self, entry, reason):
        """Under the lock: stop the batcher, drop the model and give its memory back."""
        batcher, loaded = entry.batcher, entry.model
        entry.batcher = entry.model = None
        entry.state = ABSENT
        freed, entry.bytes = entry.bytes, 0
        if batcher is not None:
            batcher.stop()
        if loaded is not None:
            loaded.close()
        del batcher, loaded
        self._dropped = True
        self.metrics.evictions.labels(entry.spec.label, reason).inc()
        self._publish()
        log.info("evicted %s (%s): %d bytes freed", entry.spec.label, reason, freed)

    def _publish(self):
        resident = [e for e in self.entries.values() if e.state == RESIDENT]
        self.metrics.resident_models.set(len(resident))
        self.metrics.resident_bytes.set(sum(e.bytes for e in resident))
        for e in self.entries.values():
            self.metrics.model_bytes.labels(e.spec.label).set(e.bytes if e.state == RESIDENT else 0)
        self.metrics.device_allocated.set(runtime.device_allocated(self.device))
