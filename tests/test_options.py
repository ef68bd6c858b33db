"""The option schema: the launcher's validation and the trainer's defaults come from it."""
import pytest

from trainer import options
from trainer.options import ConfigError, full_config, parse_int_list, parse_milestones, validate_config


def test_paper_keys_are_all_known():
    paper_keys = ("dataset arch optim batch_size lr momentum weight_decay niters epochs lr_decay_epoch chkpt_iter "
                  "train_accuracy g_estim gvar_log_iter gvar_start gvar_estim_iter g_osnap_iter g_bsnap_iter g_optim "
                  "g_optim_start nuq_method nuq_bits nuq_bucket_size nuq_ngpu nuq_mul nuq_amq_lr nuq_amq_epochs "
                  "nuq_cd_epochs dist_num nuq_layer nuq_ig_sm_bkts nuq_truncated_interval nuq_number_of_samples "
                  "nuq_sym nuq_inv nuq_clip seed data").split()
    assert [k for k in paper_keys if k not in options.OPTIONS] == []


def test_paper_defaults():
    d = options.defaults()
    assert (d["batch_size"], d["test_batch_size"], d["lr"], d["momentum"], d["weight_decay"], d["optim"],
            d["tblog_interval"], d["seed"]) == (128, 1000, 0.1, 0.9, 5e-4, "sgd", 100, 1)


def test_flags_written_as_empty_string_mean_true():
    assert validate_config({"nuq_layer": "", "train_accuracy": False}) == {"nuq_layer": True, "train_accuracy": False}


def test_ints_are_accepted_as_floats_but_not_the_reverse():
    assert validate_config({"lr": 1}) == {"lr": 1.0}
    with pytest.raises(ConfigError, match=r"run r1: bad value for 'niters': expected an int, got float 1.5"):
        validate_config({"niters": 1.5}, run="r1")
    with pytest.raises(ConfigError, match="expected an int"):
        validate_config({"niters": True})


def test_unknown_key_names_run_key_and_closest_keys():
    with pytest.raises(ConfigError) as err:
        validate_config({"nuq_bit": 3}, run="cifar10_resnet32/7")
    msg = str(err.value)
    assert "cifar10_resnet32/7" in msg and "'nuq_bit'" in msg and "nuq_bits" in msg


def test_choices_are_enforced_with_the_accepted_values():
    with pytest.raises(ConfigError, match=r"'qsgd' is not one of none, q, qinf"):
        validate_config({"nuq_method": "qsgd"})


def test_milestones_and_int_lists():
    assert validate_config({"lr_decay_epoch": 30})["lr_decay_epoch"] == "30"
    assert parse_milestones("40000,60000") == (None, [40000, 60000])
    assert parse_milestones("30") == (30, [])
    assert parse_milestones("") == (None, [])
    assert parse_int_list("100,2000,10000") == [100, 2000, 10000]
    with pytest.raises(ConfigError, match="comma list of ints"):
        validate_config({"g_osnap_iter": "100,x"})


def test_full_config_overlays_defaults():
    cfg = full_config({"lr": 0.5, "nuq_layer": ""})
    assert cfg["lr"] == 0.5 and cfg["nuq_layer"] is True and cfg["batch_size"] == 128
    assert set(cfg) == set(options.OPTIONS)


def test_schema_module_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, trainer.options, trainer.runfiles; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bucket_size_is_bounded_by_what_the_kernel_takes():
    """A bucket beyond the kernel's bound (2^31 - 1) is refused before anything runs; a run with 2^63 - 1
    used to end `done` with loss NaN."""
    from nuq.limits import MAX_BUCKET_SIZE
    assert validate_config({"nuq_bucket_size": MAX_BUCKET_SIZE}) == {"nuq_bucket_size": MAX_BUCKET_SIZE}
    for bad in (0, MAX_BUCKET_SIZE + 1, 2 ** 63 - 1):
        with pytest.raises(ConfigError, match=f"'nuq_bucket_size': {bad} is outside the accepted range "
                                              f"1..{MAX_BUCKET_SIZE}"):
            validate_config({"nuq_bucket_size": bad}, run="r1")
