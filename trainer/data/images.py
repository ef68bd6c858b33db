"""ImageNet-style class-per-folder trees (`train/<class>/*.JPEG`, `val/<class>/*`), decoded by Pillow per batch.

Too big to hold in memory: a split keeps file paths and decodes the requested indices (resize the
shorter side to 256, centre crop 224; training batches then get the random flip of the transforms).
Pillow is imported only when a batch is decoded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer.data import DataError, Dataset
from trainer.data.transforms import normalizer
from trainer.data_files import IMAGENET_HOW

EXTENSIONS = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}
RESIZE, CROP = 256, 224
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class ImageFolderSplit:
    paths: list[Path]
    labels: torch.Tensor
    size: int = CROP

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, path: Path) -> torch.Tensor:
        from PIL import Image
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = RESIZE * self.size / CROP / min(w, h)
            img = img.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))), Image.BILINEAR)
            w, h = img.size
            left, top = (w - self.size) // 2, (h - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
            arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def get(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = indices.tolist()
        return torch.stack([self._decode(self.paths[i]) for i in idx]), self.labels[indices.cpu()]


def _scan(root: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    if not root.is_dir():
        raise DataError(f"imagenet: data folder {str(root)!r} is missing (expected class folders of images). {IMAGENET_HOW}")
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    classes = classes or found
    paths, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted((root / name).glob("*")) if (root / name).is_dir() else []:
            if f.suffix.lower() in EXTENSIONS:
                paths.append(f)
                labels.append(label)
    if not paths:
        raise DataError(f"imagenet: no images ({', '.join(sorted(EXTENSIONS))}) in class folders of {str(root)!r}. {IMAGENET_HOW}")
    return paths, labels, classes


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flips = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
    return torch.where(flips[:, None, None, None], x.flip(3), x)


def load_image_folders(folder: str, size: int = CROP) -> Dataset:
    base = Path(folder)
    train_paths, train_labels, classes = _scan(base / "train", None)
    val_paths, val_labels, _ = _scan(base / "val", classes)
    return Dataset("imagenet", ImageFolderSplit(train_paths, torch.tensor(train_labels), size),
                   ImageFolderSplit(val_paths, torch.tensor(val_labels), size), len(classes), (3, size, size),
                   prepare=normalizer(IMAGENET_MEAN, IMAGENET_STD, 255.0), augment=_flip)
