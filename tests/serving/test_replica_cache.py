"""The replica's model cache in-process, with real YOLO weights on the CPU: on-demand loads, the
LRU within a byte budget, single-flight loads, hash checks and what eviction gives back. No
database: these are plain functions without the db fixture."""

import hashlib
import shutil
import threading
import weakref

import pytest
from PIL import Image

from serving.replica import runtime
from serving.replica.app import ReplicaApp
from serving.replica.cache import ModelCache
from serving.replica.config import ReplicaConfig
from serving.replica.errors import LoadFailed, ModelTooLarge, NoRoom, WeightsMismatch

from ..support import at_once, wait_for

pytestmark = pytest.mark.slow

# yolov8n loaded for inference (fused, float32) measures 12.02 MB here; its file is 6.19 MB.
ONE_MODEL = 13_000_000


def spec(name, path, version=1, pinned=False):
    data = path.read_bytes()
    return {
        "name": name, "version": version, "sha256": hashlib.sha256(data).hexdigest(), "path": str(path),
        "imgsz": 64, "class_names": ["square", "bar"], "size": len(data), "pinned": pinned,
    }


def config(models, budget, max_delay_ms=0):
    return ReplicaConfig.from_dict(
        {"replica": 1, "port": 0, "token": "t", "device": "cpu", "memory_budget": budget, "max_batch": 8,
         "max_delay_ms": max_delay_ms, "models": models}
    )


class CountingLoader:
    """The real loader, counting its calls and keeping a weak reference to each loaded network."""

    def __init__(self):
        self.calls = []
        self.networks = {}

    def __call__(self, spec, device):
        self.calls.append(spec.label)
        loaded = runtime.LoadedModel(spec, device)
        self.networks[spec.label] = weakref.ref(loaded.yolo.model)
        return loaded


def image():
    return Image.new("RGB", (80, 60), (200, 30, 30))


def resident(cache):
    return {f"{m['name']}:{m['version']}" for m in cache.status()["models"] if m["resident"]}


def metric(cache, name, **labels):
    return cache.metrics.registry.get_sample_value(name, labels) or 0


@pytest.fixture
def three(yolo_weights):
    return [spec("a", yolo_weights.variant(1)), spec("b", yolo_weights.variant(2)), spec("c", yolo_weights.variant(3))]


def test_a_first_request_loads_the_model_and_a_second_finds_it_resident(yolo_weights):
    loader = CountingLoader()
    cache = ModelCache(config([spec("a", yolo_weights.variant(1))], 10 * ONE_MODEL), loader=loader)

    first = cache.predict("a", None, [image()])
    second = cache.predict("a", 1, [image()])

    assert (first["cache"], second["cache"]) == ("miss", "hit")
    assert first["timings"]["load_ms"] > 0 and second["timings"]["load_ms"] == 0
    assert loader.calls == ["a:1"]
    assert len(second["detections"]) == 1
    status = cache.status()
    assert status["resident_bytes"] == status["models"][0]["bytes"] > 6_000_000
    assert metric(cache, "replica_cache_hits_total", model="a:1") == 1
    assert metric(cache, "replica_cache_misses_total", model="a:1") == 1


def test_a_budget_for_two_of_three_models_evicts_the_least_recently_used_and_frees_it(three):
    loader = CountingLoader()
    cache = ModelCache(config(three, int(2.5 * ONE_MODEL)), loader=loader)
    for name in ("a", "b", "a"):  # b is now the least recently used
        cache.predict(name, None, [image()])
    assert resident(cache) == {"a:1", "b:1"}
    before = cache.resident_bytes()

    assert cache.predict("c", None, [image()])["cache"] == "miss"

    assert resident(cache) == {"a:1", "c:1"}
    assert cache.resident_bytes() <= cache.budget
    assert metric(cache, "replica_evictions_total", model="b:1", reason="lru") == 1
    # The evicted network is really gone, not just forgotten by the bookkeeping.
    assert loader.networks["b:1"]() is None
    assert cache.unload("a") is True
    assert cache.resident_bytes() < before
    assert loader.networks["a:1"]() is None


def test_a_model_with_a_request_in_flight_is_not_evicted(three):
    cache = ModelCache(config(three[:2], int(1.5 * ONE_MODEL)))
    cache.predict("a", None, [image()])

    with cache.use(cache.resolve("a")):  # a request for "a" in flight
        with pytest.raises(NoRoom) as refused:
            cache.predict("b", None, [image()])
        assert resident(cache) == {"a:1"}
    assert refused.value.status == 503 and refused.value.retry_after

    assert cache.predict("b", None, [image()])["cache"] == "miss"  # "a" is idle now: it makes room
    assert resident(cache) == {"b:1"}


def test_concurrent_first_requests_load_the_model_once(yolo_weights):
    loader = CountingLoader()
    cache = ModelCache(config([spec("a", yolo_weights.variant(1))], 10 * ONE_MODEL, max_delay_ms=50), loader=loader)

    answers = at_once([lambda: cache.predict("a", None, [image()]) for _ in range(4)])

    assert loader.calls == ["a:1"]
    assert metric(cache, "replica_loads_total", model="a:1", outcome="ok") == 1
    assert cache.status()["models"][0]["loads"] == 1
    assert all(len(answer["detections"]) == 1 for answer in answers)


def test_a_weights_file_changed_after_registration_is_refused_and_never_loaded(yolo_weights, tmp_path):
    path = tmp_path / "model.pt"
    shutil.copy(yolo_weights.variant(1), path)
    registered = spec("a", path)
    with open(path, "ab") as handle:
        handle.write(b"tampered")
    loader = CountingLoader()
    cache = ModelCache(config([registered], 10 * ONE_MODEL), loader=loader)

    for _ in range(2):
        with pytest.raises(WeightsMismatch) as refused:
            cache.predict("a", None, [image()])

    assert refused.value.status == 409
    assert loader.calls == []
    assert resident(cache) == set()
    assert metric(cache, "replica_loads_total", model="a:1", outcome="weights_mismatch") == 2


def test_concurrent_requests_for_a_tampered_file_share_one_refusal(yolo_weights, tmp_path):
    path = tmp_path / "model.pt"
    shutil.copy(yolo_weights.variant(1), path)
    registered = spec("a", path)
    path.write_bytes(path.read_bytes()[:-10])
    cache = ModelCache(config([registered], 10 * ONE_MODEL))

    def attempt():
        try:
            cache.predict("a", None, [image()])
        except WeightsMismatch as exc:
            return exc.code

    assert at_once([attempt for _ in range(4)]) == ["weights_mismatch"] * 4
    assert cache.status()["models"][0]["in_flight"] == 0


def test_a_missing_weights_file_is_a_503_and_the_next_request_tries_again(yolo_weights, tmp_path):
    path = tmp_path / "model.pt"
    shutil.copy(yolo_weights.variant(1), path)
    registered = spec("a", path)
    moved = path.rename(tmp_path / "elsewhere.pt")
    cache = ModelCache(config([registered], 10 * ONE_MODEL))

    with pytest.raises(LoadFailed) as failed:
        cache.predict("a", None, [image()])
    assert failed.value.status == 503 and "cannot read" in failed.value.detail

    moved.rename(path)
    assert cache.predict("a", None, [image()])["cache"] == "miss"


def test_a_model_larger_than_the_whole_budget_is_refused_before_loading(yolo_weights):
    loader = CountingLoader()
    cache = ModelCache(config([spec("a", yolo_weights.variant(1))], 8_000_000), loader=loader)

    with pytest.raises(ModelTooLarge) as refused:
        cache.predict("a", None, [image()])

    assert refused.value.status == 422
    assert loader.calls == []


def test_a_model_measured_over_the_budget_after_loading_is_dropped_and_then_refused_up_front(yolo_weights):
    networks = []

    def heavy(spec, device):
        loaded = runtime.LoadedModel(spec, device)
        networks.append(weakref.ref(loaded.yolo.model))
        loaded.bytes *= 4  # as if warm-up had taken far more than the file suggested
        return loaded

    cache = ModelCache(config([spec("a", yolo_weights.variant(1))], 2 * ONE_MODEL), loader=heavy)

    for _ in range(2):
        with pytest.raises(ModelTooLarge):
            cache.predict("a", None, [image()])

    assert len(networks) == 1  # the second refusal came from the first measurement, before loading
    assert networks[0]() is None
    assert resident(cache) == set() and cache.resident_bytes() == 0


def test_pinned_models_preload_and_stay_until_an_operator_unloads_them(three):
    three[0]["pinned"] = True
    cache = ModelCache(config(three, int(2.5 * ONE_MODEL)))

    cache.preload()
    assert resident(cache) == {"a:1"}
    for name in ("b", "c"):  # a is the least recently used, but pinned
        cache.predict(name, None, [image()])

    assert resident(cache) == {"a:1", "c:1"}
    cache.unload("a")
    assert resident(cache) == {"c:1"}
    assert [m["pinned"] for m in cache.status()["models"]] == [False, False, False]


class FakeModel:
    """What a loader returns, without torch: `bytes` as the loader claims, `measured` whether the
    claim was a plausible measurement."""

    def __init__(self, size, measured=True):
        self.bytes = size
        self.measured = measured

    def predict(self, images, conf):
        return [[] for _ in images]

    def close(self):
        pass


def fake_spec(tmp_path, name, content=b"weights"):
    path = tmp_path / f"{name}.pt"
    path.write_bytes(content + name.encode())
    return spec(name, path)


@pytest.mark.parametrize("tensors,delta,counted", [
    (100, None, (100, True)),  # CPU: the tensors
    (100, 50, (100, True)),  # another model freed memory meanwhile: never under the tensors
    (100, 300, (300, True)),  # weights plus warm-up buffers
    (100, 301, (int(100 * runtime.FALLBACK_FACTOR), False)),  # another model's batch allocated meanwhile
])
def test_a_device_delta_is_trusted_only_within_a_plausible_multiple_of_the_tensors(tensors, delta, counted):
    assert runtime.PLAUSIBLE_FACTOR == 3
    assert runtime.measure(tensors, delta) == counted


def test_an_implausible_measurement_is_not_remembered_for_the_next_load(tmp_path):
    answers = iter([FakeModel(5000, measured=False), FakeModel(400)])
    calls = []

    def loader(spec, device):
        calls.append(spec.label)
        return next(answers)

    cache = ModelCache(config([fake_spec(tmp_path, "a")], 1000), loader=loader)

    with pytest.raises(ModelTooLarge):  # skewed by another model's batch
        cache.predict("a", None, [image()])
    found = cache.predict("a", None, [image()])

    assert calls == ["a:1", "a:1"]  # not refused up front on the skewed figure
    assert found["cache"] == "miss" and cache.resident_bytes() == 400


def test_memory_is_given_back_after_the_cache_lock_is_released(tmp_path, monkeypatch):
    held = []
    monkeypatch.setattr(runtime, "release_memory", lambda device: held.append(cache._cond._is_owned()))
    models = [fake_spec(tmp_path, "a"), fake_spec(tmp_path, "b")]
    cache = ModelCache(config(models, 1000), loader=lambda spec, device: FakeModel(600))

    cache.predict("a", None, [image()])
    cache.predict("b", None, [image()])  # evicts a
    assert resident(cache) == {"b:1"}
    cache.unload("b")

    assert held and not any(held), held


def test_status_says_loading_while_pinned_models_preload_and_a_request_waits_for_that_load(tmp_path):
    entered, release = threading.Event(), threading.Event()
    calls = []

    def slow(spec, device):
        calls.append(spec.label)
        entered.set()
        assert release.wait(30)
        return FakeModel(100)

    models = [fake_spec(tmp_path, "a")]
    models[0]["pinned"] = True
    cache = ModelCache(config(models, 1000), loader=slow)
    app = ReplicaApp(cache.config, cache)

    preload = app.start_preload()
    assert entered.wait(30)
    answer = {}
    request = threading.Thread(target=lambda: answer.update(found=cache.predict("a", None, [image()])))
    request.start()
    wait_for(lambda: cache.status()["models"][0]["in_flight"] == 2, 10, "the request to wait for the preload")
    assert app.status()["state"] == "loading" and app.status()["models"][0]["loading"]

    release.set()
    request.join(30)
    preload.join(30)

    assert app.status()["state"] == "ready"
    assert calls == ["a:1"]  # the request shared the preload's load
    assert answer["found"]["cache"] == "miss" and answer["found"]["timings"]["load_ms"] > 0
    assert [(m["resident"], m["pinned"]) for m in app.status()["models"]] == [(True, True)]
