"""The paper's own grids (grids/paper.py): every function of its grid/nuq.py and grid/abl.py, same names,
same configs in the same order, pinned by tests/golden/paper/<run>.jsonl.

The golden files were generated once from grids/paper.py (`python tests/test_grid_paper.py --regen`) and
reviewed against the paper's files: a verbatim copy of its grid/nuq.py and grid/abl.py, expanded the way its
grid_run.py expands them (deep_product), gave the same configs, order, log_dir and exclude for all 8 grids.
"""
import json
import sys
from pathlib import Path

import pytest

from launcher import cli
from launcher.grid import expand
from launcher.registry import get_run, load_family, runs_of
from trainer.options import validate_config

GOLDEN = Path(__file__).resolve().parent / "golden" / "paper"
# The paper's function names and how many configs each expands to (grid/nuq.py, then grid/abl.py).
COUNTS = {"mnist": 19, "cifar10_full_resnet110": 38, "cifar10_full_resnet32": 38, "imagenet_half": 76,
          "imagenet_full": 38, "bucket_size": 112, "bits": 62, "interval": 36}


def golden(run: str) -> list[dict]:
    return [json.loads(line) for line in (GOLDEN / f"{run}.jsonl").read_text().splitlines()]


def test_every_paper_function_is_a_run_in_the_papers_order():
    assert list(runs_of(load_family("paper"))) == list(COUNTS)


@pytest.mark.parametrize("run, count", COUNTS.items())
def test_expansion_is_the_golden_one(run, count):
    configs = expand(get_run("paper", run).grid)
    assert len(configs) == count
    expected = golden(run)
    assert [list(c.items()) for c in configs] == [list(c.items()) for c in expected]  # keys in order too
    for i, config in enumerate(configs):
        validate_config(config, f"paper.{run}[{i}]")


def test_folders_and_excluded_keys_are_the_papers():
    folders = {run: get_run("paper", run).folder for run in COUNTS}
    assert folders == {"mnist": "runs_mnist_nuq", "imagenet_half": "runs_imagenet_full",
                       "imagenet_full": "runs_imagenet_full",
                       **{r: "runs_cifar10_full" for r in COUNTS if "cifar10" in r or r in ("bucket_size", "bits",
                                                                                             "interval")}}
    assert get_run("paper", "mnist").exclude == ("dataset", "epochs", "lr_decay_epoch", "g_epoch")
    assert "train_accuracy" in get_run("paper", "bits").exclude
    assert "train_accuracy" not in get_run("paper", "imagenet_full").exclude  # the paper's ImageNet list lacks it


def test_details_that_differ_between_the_papers_grids():
    r32, half, full = golden("cifar10_full_resnet32"), golden("imagenet_half"), golden("imagenet_full")
    assert {c.get("dist_num") for c in r32} == {None, 50}
    assert {c["arch"] for c in half} == {"mobilenet_v2", "resnet18"} and "g_optim" not in half[0]
    assert full[0]["lr_decay_epoch"] == "300000,450000" and half[0]["lr_decay_epoch"] == "150000,225000"
    assert "nuq_amq_epochs" not in full[1] and r32[1]["nuq_amq_epochs"] == 40
    buckets = golden("bucket_size")
    assert "g_optim" not in buckets[0]  # commented out in the paper's bucket_size
    assert sorted({c["nuq_bucket_size"] for c in buckets if "nuq_bucket_size" in c}) == [
        16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
    assert sorted({c["nuq_bits"] for c in golden("bits") if "nuq_bits" in c}) == [2, 3, 4, 5, 6, 7]
    assert [c["g_osnap_iter"] for c in golden("interval")[:3]] == [
        "0,80000,80000", "40000,60000,80000", "100,1000,2000,40000,60000,80000"]
    # ALQ-N four ways in every grid but mnist: with nuq_sym and nuq_inv, nuq_inv, nuq_sym, neither
    variants = [(c.get("nuq_sym"), c.get("nuq_inv")) for c in r32[1:10] if c["nuq_method"] == "alq_nb"]
    assert variants == [("", ""), (None, ""), ("", None), (None, None)]


def test_original_names_launch(tmp_path, capsys):
    code = cli.main(["--grid", "paper", "--run", "cifar10_full_resnet32", "--json", "--root", str(tmp_path)])
    runs = json.loads(capsys.readouterr().out)
    assert code == 0 and len(runs) == 38
    assert all(Path(r["dir"]).parent == tmp_path / "runs_cifar10_full" for r in runs)


def test_list_describes_each_paper_run(capsys):
    assert cli.main(["list", "--grid", "paper"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "description"
    rows = {line.split()[1]: line for line in lines[1:]}
    for run, count in COUNTS.items():
        assert rows[run].split()[2] == str(count)
    assert rows["bucket_size"].endswith("Ablation, ResNet-8: 11 bucket sizes (16 ... 32768) at 3 bits, 10 methods, "
                                        "g_optim off.")


if __name__ == "__main__" and sys.argv[1:] == ["--regen"]:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name in runs_of(load_family("paper")):
        lines = [json.dumps(c) + "\n" for c in expand(get_run("paper", name).grid)]
        (GOLDEN / f"{name}.jsonl").write_text("".join(lines))
