"""Datasets from tiny fake files written in the real formats, through the real loaders; batch streams."""
import gzip
import pickle

import numpy as np
import pytest
import torch

from trainer.data import BatchStream, DataError, evaluate_batches, load_dataset
from trainer.data.transforms import crop_flip

CPU = torch.device("cpu")


def _write_cifar(folder, names, n, label_key, classes, seed=0):
    rs = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        obj = {b"data": rs.randint(0, 256, (n, 3072), dtype=np.uint8),
               label_key: rs.randint(0, classes, n).tolist(), b"batch_label": name.encode()}
        with open(folder / name, "wb") as fh:
            pickle.dump(obj, fh)


def test_cifar10_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], 4, b"labels", 10)
    data = load_dataset("cifar10", str(tmp_path))  # finds the extracted sub-folder
    assert (len(data.train), len(data.test), data.num_classes, data.in_shape) == (20, 4, 10, (3, 32, 32))
    with open(folder / "data_batch_2", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    x, y = data.train.get(torch.tensor([4]))  # first image of batch 2: row-major CHW bytes
    assert torch.equal(x[0], torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32)))
    assert int(y[0]) == raw[b"labels"][0]


def test_cifar100_pickle(tmp_path):
    _write_cifar(tmp_path, ["train", "test"], 6, b"fine_labels", 100)
    data = load_dataset("cifar100", str(tmp_path))
    assert (len(data.train), len(data.test), data.num_classes) == (6, 6, 100)


def test_cifar_malformed_batch_is_named(tmp_path):
    _write_cifar(tmp_path, [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], 2, b"labels", 10)
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3.*cifar.html"):
        load_dataset("cifar10", str(tmp_path))


class _RunsCode:  # a hostile batch file: plain pickle.load would run the shell command
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_cifar_batch_holding_code_is_refused_without_running_it(tmp_path):
    _write_cifar(tmp_path, [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], 2, b"labels", 10)
    marker = tmp_path / "ran"
    with open(tmp_path / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": _RunsCode(marker), b"labels": [1]}, fh)
    with pytest.raises(DataError, match=r"data_batch_2.*system.*not allowed in a CIFAR batch"):
        load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()
    with open(tmp_path / "data_batch_2", "wb") as fh:  # the python-2 era format of the real files
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}, fh, protocol=2)
    assert len(load_dataset("cifar10", str(tmp_path)).train) == 10


def test_missing_folder_names_folder_files_and_source(tmp_path):
    with pytest.raises(DataError, match=r"'.*nowhere'.*data_batch_1.*test_batch.*cs.toronto.edu"):
        load_dataset("cifar10", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="train_32x32.mat.*ufldl"):
        load_dataset("svhn", str(tmp_path))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", str(tmp_path))
    with pytest.raises(DataError, match="train.*image-net.org"):
        load_dataset("imagenet", str(tmp_path))


def _idx(array, path, compress):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if compress else open
    with opener(str(path) + (".gz" if compress else ""), "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx(tmp_path, compress):
    rs = np.random.RandomState(1)
    images, labels = rs.randint(0, 256, (5, 28, 28)), rs.randint(0, 10, 5)
    _idx(images, tmp_path / "train-images-idx3-ubyte", compress)
    _idx(labels, tmp_path / "train-labels-idx1-ubyte", compress)
    _idx(images[:3], tmp_path / "t10k-images-idx3-ubyte", compress)
    _idx(labels[:3], tmp_path / "t10k-labels-idx1-ubyte", compress)
    data = load_dataset("mnist", str(tmp_path))
    assert (len(data.train), len(data.test), data.in_shape) == (5, 3, (1, 28, 28))
    x, y = data.train.get(torch.tensor([2]))
    assert torch.equal(x[0, 0], torch.from_numpy(images[2].astype(np.uint8)))
    assert int(y[0]) == labels[2]


def test_mnist_truncated_idx_is_named(tmp_path):
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        _idx(np.zeros((2, 28, 28) if "images" in name else (2,)), tmp_path / name, False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*header"):
        load_dataset("mnist", str(tmp_path))


def test_svhn_mat(tmp_path):
    import scipy.io
    rs = np.random.RandomState(2)
    x = rs.randint(0, 256, (32, 32, 3, 4)).astype(np.uint8)
    y = np.array([[10], [1], [5], [10]], dtype=np.uint8)  # the files label digit 0 as 10
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x[..., :2], "y": y[:2]})
    data = load_dataset("svhn", str(tmp_path))
    xs, ys = data.train.get(torch.arange(4))
    assert ys.tolist() == [0, 1, 5, 0]
    assert torch.equal(xs[1], torch.from_numpy(x[..., 1].transpose(2, 0, 1).copy()))
    assert len(data.test) == 2


def test_imagenet_class_folders(tmp_path):
    from PIL import Image
    rs = np.random.RandomState(3)
    for split, count in (("train", 2), ("val", 1)):
        for cls in ("n01", "n02"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rs.randint(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    data = load_dataset("imagenet", str(tmp_path))
    assert (len(data.train), len(data.test), data.num_classes) == (4, 2, 2)
    x, y = data.train.get(torch.tensor([0, 3]))
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.uint8 and y.tolist() == [0, 1]


def test_digits_split_is_fixed_and_disjoint():
    a, b = load_dataset("digits", ""), load_dataset("digits", "")
    assert torch.equal(a.test.x, b.test.x)
    assert len(a.train) + len(a.test) == 1797
    train_rows = {tuple(r.flatten().tolist()) for r in a.train.x}
    # digits contains a few duplicate images, so check by count of test rows not found in train
    unseen = sum(tuple(r.flatten().tolist()) not in train_rows for r in a.test.x)
    assert unseen > 0.9 * len(a.test)


@pytest.mark.parametrize("name,classes", [("logreg", 2), ("5class", 5), ("10class", 10)])
def test_synthetic_is_seeded(name, classes):
    a, b = load_dataset(name, ""), load_dataset(name, "")
    assert torch.equal(a.train.x, b.train.x) and a.num_classes == classes
    assert set(a.train.y.tolist()) == set(range(classes))


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar11'.*cifar10"):
        load_dataset("cifar11", "")


def test_stream_epochs_are_permutations_and_resume_exactly():
    data = load_dataset("digits", "")
    s = BatchStream(data, data.train, 100, seed=5, device=CPU)
    per_epoch = len(data.train) // 100
    seen = torch.cat([s.next()[1] for _ in range(per_epoch)])
    assert len(seen) == per_epoch * 100  # the partial last batch is dropped
    state = s.state_dict()
    expected = [s.next() for _ in range(per_epoch + 3)]  # crosses an epoch boundary
    t = BatchStream(data, data.train, 100, seed=5, device=CPU)
    t.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(expected, [t.next() for _ in range(per_epoch + 3)]):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other = BatchStream(data, data.train, 100, seed=6, device=CPU)
    assert not torch.equal(other.next()[1], BatchStream(data, data.train, 100, seed=5, device=CPU).next()[1])


def test_crop_flip_moves_pixels_only():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    gen = torch.Generator().manual_seed(0)
    outs = [crop_flip(2)(x, gen) for _ in range(20)]
    assert all(o.shape == x.shape for o in outs)
    # every output pixel is either zero padding or a pixel of the same image and channel
    for o in outs:
        for b in range(2):
            for c in range(3):
                vals = set(o[b, c].flatten().tolist()) - {0.0}
                assert vals <= set(x[b, c].flatten().tolist())
    # with 5x5 offsets and flips, 20 draws almost surely differ from the input somewhere
    assert any(not torch.equal(o, x) for o in outs)


def test_crop_flip_equals_explicit_crop():
    x = torch.randn(3, 2, 5, 5)
    gen = torch.Generator().manual_seed(4)
    state = gen.get_state()
    out = crop_flip(1)(x, gen)
    gen.set_state(state)
    offsets = torch.randint(0, 3, (2, 3), generator=gen)
    flips = torch.rand(3, generator=gen) < 0.5
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(3):
        r, c = int(offsets[0, i]), int(offsets[1, i])
        crop = padded[i, :, r:r + 5, c:c + 5]
        assert torch.equal(out[i], crop.flip(2) if flips[i] else crop)


def test_evaluate_batches_cover_split_in_order():
    data = load_dataset("digits", "")
    ys = torch.cat([y for _, y in evaluate_batches(data, data.test, 100, CPU)])
    assert torch.equal(ys, data.test.y)
