"""Grid algebra: products, unions, conditional sub-grids, zip, the paper's OrderedDict format."""
from collections import OrderedDict

import pytest

from launcher.grid import Cond, GridError, Product, Zip, expand


def test_dict_is_product_of_list_values_first_key_slowest():
    configs = expand({"a": [1, 2], "fixed": "x", "b": ["p", "q", "r"]})
    assert configs == [
        {"a": 1, "fixed": "x", "b": "p"}, {"a": 1, "fixed": "x", "b": "q"}, {"a": 1, "fixed": "x", "b": "r"},
        {"a": 2, "fixed": "x", "b": "p"}, {"a": 2, "fixed": "x", "b": "q"}, {"a": 2, "fixed": "x", "b": "r"},
    ]
    assert [list(c) for c in configs] == [["a", "fixed", "b"]] * 6  # key order follows the definition


def test_scalars_only_is_one_config():
    assert expand({"a": 1, "b": "x"}) == [{"a": 1, "b": "x"}]


def test_list_of_grids_is_union_in_order():
    assert expand([{"a": [1, 2]}, {"b": 3}, {"a": 9}]) == [{"a": 1}, {"a": 2}, {"b": 3}, {"a": 9}]


def test_conditional_subgrid_applies_only_with_its_value():
    grid = {"m": ["q", Cond("amq", {"lr": 0.7, "ep": [40, 50]}), "trn"], "seed": [1, 2]}
    assert expand(grid) == [
        {"m": "q", "seed": 1}, {"m": "q", "seed": 2},
        {"m": "amq", "lr": 0.7, "ep": 40, "seed": 1}, {"m": "amq", "lr": 0.7, "ep": 40, "seed": 2},
        {"m": "amq", "lr": 0.7, "ep": 50, "seed": 1}, {"m": "amq", "lr": 0.7, "ep": 50, "seed": 2},
        {"m": "trn", "seed": 1}, {"m": "trn", "seed": 2},
    ]


def test_conditional_on_a_fixed_value_and_nested_conditions():
    grid = {"a": Cond(1, {"b": [Cond(2, {"c": 3}), 4]})}
    assert expand(grid) == [{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 4}]


def test_zip_pairs_values_instead_of_crossing():
    assert expand(Zip(lr=[0.1, 0.05], bs=[128, 64])) == [{"lr": 0.1, "bs": 128}, {"lr": 0.05, "bs": 64}]
    # a zip inside a product, with a conditional value in one column
    grid = Product({"d": "x"}, Zip(lr=[0.1, Cond(0.2, {"w": 1})], bs=[1, 2]), {"s": [1, 2]})
    assert expand(grid) == [
        {"d": "x", "lr": 0.1, "bs": 1, "s": 1}, {"d": "x", "lr": 0.1, "bs": 1, "s": 2},
        {"d": "x", "lr": 0.2, "w": 1, "bs": 2, "s": 1}, {"d": "x", "lr": 0.2, "w": 1, "bs": 2, "s": 2},
    ]


def test_zip_columns_must_have_equal_lengths():
    with pytest.raises(GridError, match="equal lengths"):
        Zip(a=[1, 2], b=[1])
    with pytest.raises(GridError, match="must be a list"):
        Zip(a=3)


def test_paper_ordereddict_format_expands_unchanged():
    # Written exactly as the paper's grid files: lists of OrderedDicts of (key, value) pairs,
    # (value, OrderedDict(...)) for a conditional sub-grid, '' for a flag.
    shared = [("dataset", "cifar10"), ("lr", [0.1]), ("train_accuracy", "")]
    args = []
    args += [OrderedDict(shared + [("g_estim", ["sgd"])])]
    args += [OrderedDict(shared + [("g_estim", ["nuq"]), ("nuq_bits", [3, 4]), ("nuq_method", [
        ("amq", OrderedDict([("nuq_amq_lr", 0.7), ("nuq_amq_epochs", 40)])), "qinf"])])]
    configs = expand(args)
    base = {"dataset": "cifar10", "lr": 0.1, "train_accuracy": ""}
    assert configs == [
        {**base, "g_estim": "sgd"},
        {**base, "g_estim": "nuq", "nuq_bits": 3, "nuq_method": "amq", "nuq_amq_lr": 0.7, "nuq_amq_epochs": 40},
        {**base, "g_estim": "nuq", "nuq_bits": 3, "nuq_method": "qinf"},
        {**base, "g_estim": "nuq", "nuq_bits": 4, "nuq_method": "amq", "nuq_amq_lr": 0.7, "nuq_amq_epochs": 40},
        {**base, "g_estim": "nuq", "nuq_bits": 4, "nuq_method": "qinf"},
    ]
    assert list(configs[1]) == ["dataset", "lr", "train_accuracy", "g_estim", "nuq_bits", "nuq_method",
                                "nuq_amq_lr", "nuq_amq_epochs"]


def test_none_leaves_a_key_out():
    assert expand({"a": None, "b": [1, None]}) == [{"b": 1}, {}]


def test_expansion_does_not_share_dicts():
    configs = expand({"a": 1, "b": [1, 2]})
    configs[0]["a"] = 99
    assert configs[1]["a"] == 1


@pytest.mark.parametrize("grid, message", [
    ({"a": []}, "empty list"),
    ({"a": {"nested": 1}}, "not a scalar"),
    ({"a": (1, 2, 3)}, "not a scalar"),
    ({1: "x"}, "must be strings"),
    ({"a": Cond(1, {"b": 2}), "b": 3}, "'b' is set twice"),
    (Product({"a": 1}, {"a": 2}), "'a' is set twice"),
    ("not a grid", "not a grid"),
    ([{"a": 1}, 5], "not a grid"),
])
def test_malformed_grids_name_the_problem(grid, message):
    with pytest.raises(GridError, match=message):
        expand(grid)
