"""Dataset loaders, one per on-disk format. Each validates its folder and says how to obtain the files."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch

from trainer.data import DataError, Dataset, TensorSplit, register_dataset
from trainer.data.images import load_image_folders
from trainer.data.transforms import crop_flip, normalizer
from trainer.data_files import CIFAR_HOW, DATA_FILES, MNIST_FILES, MNIST_HOW, SVHN_HOW


def _require(folder: Path, names: list[str], dataset: str, how: str) -> None:
    """Raise DataError naming the folder, the missing files and how to obtain them."""
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise DataError(f"{dataset}: data folder {str(folder)!r} lacks {', '.join(missing)} "
                        f"(expected there: {', '.join(names)}). {how}")


def _first_with(folder: str, subdirs: list[str], marker: str) -> Path:
    """The folder itself or the standard sub-folder of an extracted archive, whichever holds `marker`."""
    base = Path(folder)
    for cand in [base] + [base / s for s in subdirs]:
        if (cand / marker).exists():
            return cand
    return base / subdirs[0] if subdirs and (base / subdirs[0]).is_dir() else base


# ---- digits: embedded in scikit-learn -------------------------------------------------------------

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: every run sees the same test set


@register_dataset("digits")
def load_digits(folder: str) -> Dataset:
    """scikit-learn's 1797 8x8 digits, 0..16 grey levels; a fixed 80/20 train/test split."""
    from sklearn.datasets import load_digits as sk_digits
    bunch = sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_test = int(len(y) * DIGITS_TEST_FRACTION)
    test, train = perm[:n_test], perm[n_test:]
    return Dataset("digits", TensorSplit(x[train], y[train]), TensorSplit(x[test], y[test]), 10, (1, 8, 8),
                   prepare=normalizer([0.3], [0.4], 16.0))


# ---- CIFAR: python pickle batches -------------------------------------------------------------------

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


# What the CIFAR python batches hold besides dicts, lists, ints and bytes: numpy arrays (written by the
# numpy of their time or of today), and bytes as re-encoded by Python 3's protocol-2 pickles.
_CIFAR_GLOBALS = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")})


class _CifarUnpickler(pickle.Unpickler):
    """pickle.Unpickler that builds only the objects of a CIFAR batch, so a planted file cannot run code."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch "
                                         "(only numpy arrays, lists, dicts, numbers and bytes)")
        return super().find_class(module, name)


def _unpickle(path: Path, dataset: str) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _CifarUnpickler(fh, encoding="bytes").load()
    except Exception as err:  # a truncated or foreign file: name it
        raise DataError(f"{dataset}: cannot read {str(path)!r} as a CIFAR pickle batch ({err}). {CIFAR_HOW}") from None
    if not isinstance(obj, dict) or b"data" not in obj:
        raise DataError(f"{dataset}: {str(path)!r} is not a CIFAR pickle batch (no b'data' entry). {CIFAR_HOW}")
    return obj


def _cifar_split(paths: list[Path], label_key: bytes, dataset: str) -> TensorSplit:
    xs, ys = [], []
    for path in paths:
        obj = _unpickle(path, dataset)
        data = np.asarray(obj[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or label_key not in obj:
            raise DataError(f"{dataset}: {str(path)!r} has data of shape {data.shape} or lacks {label_key!r}; "
                            f"expected (N, 3072) uint8 and labels. {CIFAR_HOW}")
        xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        ys.append(torch.tensor(list(obj[label_key]), dtype=torch.int64))
    return TensorSplit(torch.cat(xs), torch.cat(ys))


def _cifar(folder: str, dataset: str, sub: str, train: list[str], test: list[str], key: bytes, classes: int) -> Dataset:
    base = _first_with(folder, [sub], test[0])
    _require(base, train + test, dataset, CIFAR_HOW)
    return Dataset(dataset, _cifar_split([base / n for n in train], key, dataset),
                   _cifar_split([base / n for n in test], key, dataset), classes, (3, 32, 32),
                   prepare=normalizer(CIFAR_MEAN, CIFAR_STD, 255.0), augment=crop_flip(4))


@register_dataset("cifar10")
def load_cifar10(folder: str) -> Dataset:
    files = DATA_FILES["cifar10"]
    return _cifar(folder, "cifar10", files.subdirs[0], list(files.files[:-1]), list(files.files[-1:]), b"labels", 10)


@register_dataset("cifar100")
def load_cifar100(folder: str) -> Dataset:
    files = DATA_FILES["cifar100"]
    return _cifar(folder, "cifar100", files.subdirs[0], list(files.files[:1]), list(files.files[1:]), b"fine_labels", 100)


# ---- MNIST: IDX files (optionally gzipped) ----------------------------------------------------------------



def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file: 2 zero bytes, type 0x08 (uint8), ndim, big-endian int32 dims, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 + 4 * ndim or raw[0] != 0 or raw[1] != 0 or raw[2] != 8 or raw[3] != ndim:
        raise DataError(f"mnist: {str(path)!r} is not a uint8 IDX file with {ndim} dims. {MNIST_HOW}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"mnist: {str(path)!r} holds {data.size} bytes of data, header says {dims}. {MNIST_HOW}")
    return data.reshape(dims)


def _mnist_path(base: Path, name: str) -> Path:
    return base / name if (base / name).exists() else base / f"{name}.gz"


@register_dataset("mnist")
def load_mnist(folder: str) -> Dataset:
    base = _first_with(folder, list(DATA_FILES["mnist"].subdirs), MNIST_FILES[0])
    if not base.exists() or not all(_mnist_path(base, n).exists() for n in MNIST_FILES):
        missing = [n for n in MNIST_FILES if not _mnist_path(base, n).exists()]
        raise DataError(f"mnist: data folder {str(base)!r} lacks {', '.join(missing)} "
                        f"(expected there, optionally .gz: {', '.join(MNIST_FILES)}). {MNIST_HOW}")
    splits = []
    for images, labels in (MNIST_FILES[:2], MNIST_FILES[2:]):
        x = torch.from_numpy(_read_idx(_mnist_path(base, images), 3).copy()).unsqueeze(1)
        y = torch.from_numpy(_read_idx(_mnist_path(base, labels), 1).astype(np.int64))
        splits.append(TensorSplit(x, y))
    return Dataset("mnist", splits[0], splits[1], 10, (1, 28, 28), prepare=normalizer([0.1307], [0.3081], 255.0))


# ---- SVHN: MATLAB .mat files --------------------------------------------------------------------------------

SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)


def _svhn_split(path: Path) -> TensorSplit:
    import scipy.io
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as err:
        raise DataError(f"svhn: cannot read {str(path)!r} as a .mat file ({err}). {SVHN_HOW}") from None
    if "X" not in mat or "y" not in mat or mat["X"].ndim != 4 or mat["X"].shape[:3] != (32, 32, 3):
        raise DataError(f"svhn: {str(path)!r} lacks X of shape (32, 32, 3, N) and y. {SVHN_HOW}")
    x = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)).astype(np.uint8))
    y = torch.from_numpy(mat["y"].reshape(-1).astype(np.int64)) % 10  # the files label digit 0 as 10
    return TensorSplit(x, y)


@register_dataset("svhn")
def load_svhn(folder: str) -> Dataset:
    base = Path(folder)
    _require(base, list(DATA_FILES["svhn"].files), "svhn", SVHN_HOW)
    return Dataset("svhn", _svhn_split(base / "train_32x32.mat"), _svhn_split(base / "test_32x32.mat"), 10,
                   (3, 32, 32), prepare=normalizer(SVHN_MEAN, SVHN_STD, 255.0))


# ---- ImageNet: class-per-folder image tree ------------------------------------------------------------------


@register_dataset("imagenet")
def load_imagenet(folder: str) -> Dataset:
    return load_image_folders(folder)


# ---- synthetic classification ------------------------------------------------------------------------------

SYNTH_SEED = 12345  # fixed: the problem is the same for every run seed
SYNTH_DIM, SYNTH_TRAIN, SYNTH_TEST = 50, 5000, 1000


def _synthetic(name: str, classes: int) -> Dataset:
    """Unit-variance Gaussian classes around random means with N(0, 0.3^2) coordinates: two means lie
    about 0.3 * sqrt(2 * 50) ~ 3 noise standard deviations apart, so the classes overlap a little."""
    gen = torch.Generator().manual_seed(SYNTH_SEED + classes)
    means = torch.randn(classes, SYNTH_DIM, generator=gen) * 0.3
    n = SYNTH_TRAIN + SYNTH_TEST
    y = torch.randint(0, classes, (n,), generator=gen)
    x = means[y] + torch.randn(n, SYNTH_DIM, generator=gen)
    return Dataset(name, TensorSplit(x[:SYNTH_TRAIN], y[:SYNTH_TRAIN]), TensorSplit(x[SYNTH_TRAIN:], y[SYNTH_TRAIN:]),
                   classes, (SYNTH_DIM,))


def _register_synthetic(name: str, classes: int) -> None:
    register_dataset(name)(lambda folder: _synthetic(name, classes))


for _name, _classes in (("logreg", 2), ("5class", 5), ("10class", 10)):
    _register_synthetic(_name, _classes)
