"""What touches torch and ultralytics: loading one model onto the device, measuring the memory it
takes, running a batch, and giving memory back. torch and ultralytics are imported on first use so
that the process starts (and its configuration is checked) in well under a second.

Memory measurement (`LoadedModel.bytes`):
- on CUDA, the `torch.cuda.memory_allocated()` delta around load + warm-up, never less than the
  bytes of the model's tensors. Loads are serialised by the cache, but other models' batches run
  meanwhile and allocate (or free) activations, so the delta can be too small or too large. A delta
  over PLAUSIBLE_FACTOR times the tensor bytes is not trusted: the model then counts as tensor bytes
  times FALLBACK_FACTOR and `measured` is False, so the cache does not remember it for the next
  load of the same SHA-256 (see `measure`);
- on CPU, the bytes of the parameters and buffers of the fused model used for inference: a measured
  estimate (activations are transient; the Python objects around the tensors are not counted).

ultralytics' predictor deep-copies and fuses the model it was given; once warm-up has built that
copy, the unfused original is replaced by it, so one copy of the weights stays in memory.
"""

import gc
import hashlib
import os

import numpy as np

CHUNK = 1024 * 1024

# A registered .pt is inference-only and stored in half precision; loaded for inference it is
# float32, about twice the file. Used only until a first load has measured a given SHA-256.
ESTIMATE_FACTOR = 2.0
# On CUDA a model's weights plus what its warm-up keeps allocated stay well within 3x its tensors;
# a larger memory_allocated delta is another model's batch allocating at the same time. Such a
# model counts as its tensors times FALLBACK_FACTOR (room for the CUDA context's share of the
# warm-up), and that figure is not remembered as a measurement.
PLAUSIBLE_FACTOR = 3.0
FALLBACK_FACTOR = 1.5


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def estimate_bytes(spec):
    """Memory a model not measured yet is expected to take: its file's size times ESTIMATE_FACTOR."""
    try:
        size = os.path.getsize(spec.path)
    except OSError:
        size = spec.size
    return int(max(size, spec.size) * ESTIMATE_FACTOR)


def _torch():
    import torch

    return torch


def prepare():
    """Import torch and ultralytics now, then freeze what the imports made (gc.freeze): from then on
    a collection scans only objects made later, the models among them. Each eviction and each load
    collects once (release_memory, LoadedModel), and a full scan of the ~370,000 objects torch and
    ultralytics leave behind took ~120 ms: inside the request that caused the eviction, it made an
    LRU miss cost nearly twice a plain load (bench/README.md, "replicas.py")."""
    import ultralytics

    ultralytics.YOLO  # the model classes too: their import makes objects as well
    _torch()
    gc.collect()
    gc.freeze()


def is_cuda(device):
    return str(device).startswith("cuda")


def device_allocated(device):
    """torch.cuda.memory_allocated on the replica's device; 0 on CPU."""
    if not is_cuda(device):
        return 0
    return int(_torch().cuda.memory_allocated(device))


def release_memory(device):
    """Collect what was dropped, and on CUDA hand the allocator's cached blocks back to the driver."""
    gc.collect()
    if is_cuda(device):
        torch = _torch()
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def measure(tensors, delta=None):
    """(bytes, measured): what a model with `tensors` bytes of tensors counts for, given the device
    allocation `delta` around its load (None on CPU), and whether that is a measurement worth
    remembering."""
    if delta is None:
        return int(tensors), True
    if delta > PLAUSIBLE_FACTOR * tensors:
        return int(tensors * FALLBACK_FACTOR), False
    return int(max(delta, tensors)), True


def tensor_bytes(module):
    seen, total = set(), 0
    for tensor in (*module.parameters(), *module.buffers()):
        pointer = tensor.data_ptr()
        if pointer in seen:
            continue
        seen.add(pointer)
        total += tensor.numel() * tensor.element_size()
    return total


class LoadedModel:
    """One model on the device, warmed up, with `bytes` measured. `predict` must be called from one
    thread at a time (the model's batcher)."""

    def __init__(self, spec, device):
        from ultralytics import YOLO

        torch = _torch()
        self.spec = spec
        self.device = device
        cuda = is_cuda(device)
        if cuda:
            torch.cuda.synchronize(device)
        before = device_allocated(device)
        self.yolo = YOLO(spec.path, task="detect")
        # Warm-up: builds the predictor (which fuses a copy of the model, once) at the model's size.
        self.yolo.predict(
            np.zeros((spec.imgsz, spec.imgsz, 3), dtype=np.uint8), imgsz=spec.imgsz, device=device, verbose=False
        )
        inference = self._inference_module()
        if inference is not None and inference is not self.yolo.model:
            self.yolo.model = inference
        gc.collect()
        tensors = tensor_bytes(inference if inference is not None else self.yolo.model)
        delta = None
        if cuda:
            torch.cuda.synchronize(device)
            delta = device_allocated(device) - before
        self.bytes, self.measured = measure(tensors, delta)
        names = getattr(self.yolo, "names", None) or {}
        self.names = {int(k): v for k, v in dict(names).items()}

    def _inference_module(self):
        backend = getattr(getattr(self.yolo.predictor, "model", None), "backend", None)
        module = getattr(backend, "model", None)
        return module if isinstance(module, _torch().nn.Module) else None

    def class_name(self, class_id):
        names = self.spec.class_names
        if 0 <= class_id < len(names):
            return names[class_id]
        return self.names.get(class_id, str(class_id))

    def predict(self, images, conf):
        """One forward pass over `images` (PIL images); one list of detections per image."""
        results = self.yolo.predict(
            list(images), imgsz=self.spec.imgsz, device=self.device, conf=conf, verbose=False
        )
        found = []
        for result in results:
            boxes = result.boxes
            detections = []
            if boxes is not None:
                for box, class_id, confidence in zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist()):
                    class_id = int(class_id)
                    detections.append(
                        {
                            "box": [round(v, 2) for v in box],
                            "class_id": class_id,
                            "class_name": self.class_name(class_id),
                            "confidence": round(float(confidence), 5),
                        }
                    )
            found.append(detections)
        return found

    def close(self):
        self.yolo = None
