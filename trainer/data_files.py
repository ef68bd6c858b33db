"""What each on-disk dataset needs in its `data` folder, declared without torch.

Outside the trainer.data package, whose import loads torch. The loaders (trainer.data.formats,
trainer.data.images) read these declarations, and the launcher checks
them before it submits anything (`missing_data`), so a missing CIFAR-10 is one clear error at launch
instead of a failure in every run. Import-light: no torch, no numpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class DataFiles:
    """Files a dataset's folder must hold: in the folder itself or in one of `subdirs` (an extracted
    archive's own folder); a file may also be present gzipped when `gz_ok`. `folders` are directories."""
    files: tuple[str, ...]
    how: str                        # where to get them
    subdirs: tuple[str, ...] = ()
    gz_ok: bool = False
    folders: tuple[str, ...] = ()

    def _has(self, base: Path, name: str) -> bool:
        return (base / name).exists() or (self.gz_ok and (base / f"{name}.gz").exists())

    def candidates(self, folder: str | Path) -> list[Path]:
        base = Path(folder)
        return [base] + [base / s for s in self.subdirs]

    def found_in(self, folder: str | Path) -> Path | None:
        """The candidate folder holding every file and sub-folder, else None."""
        for cand in self.candidates(folder):
            if all(self._has(cand, n) for n in self.files) and all((cand / d).is_dir() for d in self.folders):
                return cand
        return None


CIFAR_HOW = ("Download the 'CIFAR-10/100 python version' archive from https://www.cs.toronto.edu/~kriz/cifar.html "
             "and extract it into this folder.")
MNIST_HOW = "Download the four IDX files from http://yann.lecun.com/exdb/mnist/ (or a mirror) into this folder."
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SVHN_HOW = "Download train_32x32.mat and test_32x32.mat (format 2) from http://ufldl.stanford.edu/housenumbers/."
IMAGENET_HOW = ("Extract ILSVRC2012 into <data>/train/<wnid>/*.JPEG and <data>/val/<wnid>/*.JPEG "
                "(the validation images sorted into class folders), from https://image-net.org/.")

DATA_FILES: dict[str, DataFiles] = {
    "cifar10": DataFiles(tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",), CIFAR_HOW,
                         ("cifar-10-batches-py",)),
    "cifar100": DataFiles(("train", "test"), CIFAR_HOW, ("cifar-100-python",)),
    "mnist": DataFiles(MNIST_FILES, MNIST_HOW, ("MNIST/raw", "mnist"), gz_ok=True),
    "svhn": DataFiles(("train_32x32.mat", "test_32x32.mat"), SVHN_HOW),
    "imagenet": DataFiles((), IMAGENET_HOW, folders=("train", "val")),
}  # datasets not listed (digits, the synthetic ones) need no files


def missing_data(config: Mapping[str, Any]) -> str | None:
    """None when the config's dataset needs no files or its folder holds them; else one message with the
    absolute folders searched, the expected files, where to get them and how to point elsewhere."""
    dataset = config.get("dataset", "digits")
    need = DATA_FILES.get(dataset)
    folder = config.get("data", "./data")
    if need is None or need.found_in(folder) is not None:
        return None
    searched = " and ".join(str(c.absolute()) for c in need.candidates(folder))
    expected = ", ".join([*need.files, *(f"{d}/" for d in need.folders)])
    gz = " (optionally .gz)" if need.gz_ok else ""
    return (f"{dataset}: no data in {searched}; expected {expected}{gz}. {need.how} "
            f"Or point the runs at the folder that holds them with --set data=DIR.")
