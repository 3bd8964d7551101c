"""A small synthetic detection dataset (coloured boxes on noise), so training needs no download."""

import random
from pathlib import Path

CLASSES = ["square", "bar"]
# Sized so that README's demo job (yolov8n.yaml, imgsz 64, batch 4, 10 epochs) trains for a few
# minutes on two CPU cores, an epoch (300 batches and a validation pass) every 15 s or so: long
# enough to watch the progress, short enough to wait for. About 25 MB, written in a few seconds.
DEMO_IMAGES = 1600


def make_dataset(root, *, images=DEMO_IMAGES, size=64, seed=0):
    """Write `images` pictures with YOLO labels under root/{images,labels}/{train,val} and root/data.yaml.
    Returns the data.yaml path."""
    from PIL import Image, ImageDraw  # ultralytics brings Pillow

    rng = random.Random(seed)
    root = Path(root)
    for index in range(images):
        split = "val" if index % 4 == 3 else "train"
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        picture = Image.effect_noise((size, size), 32).convert("RGB")
        draw = ImageDraw.Draw(picture)
        lines = []
        for _ in range(rng.randint(1, 3)):
            cls = rng.randrange(len(CLASSES))
            w = rng.randint(size // 6, size // 3)
            h = w if cls == 0 else max(4, w // 3)
            x0, y0 = rng.randint(0, size - w - 1), rng.randint(0, size - h - 1)
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=(255, 64, 64) if cls == 0 else (64, 64, 255))
            lines.append(f"{cls} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
        picture.save(root / "images" / split / f"{index:04d}.png")
        (root / "labels" / split / f"{index:04d}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    data.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data
