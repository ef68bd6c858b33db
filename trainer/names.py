"""The names of the trainer's datasets (`dataset`), optimizers (`optim`), learning-rate schedules
(`lr_schedule`) and models (`arch`), torch-free so the option schema (trainer/options.py) offers exactly
these: `@register_dataset` (trainer/data), `@register_optimizer` (trainer/optim.py), trainer/schedule.py's
registry and `@register_model`/`@register_pattern` (trainer/models) refuse a name not here; tests/test_registries.py checks that every name here is registered."""

DATASETS = ("digits", "cifar10", "cifar100", "mnist", "svhn", "imagenet", "logreg", "5class", "10class")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("step", "cosine")
MODELS = ("linear", "mlp", "digits_mlp", "cnn", "digits_cnn", "resnet8", "resnet20", "resnet32", "resnet44",
          "resnet56", "resnet110", "preact_resnet20", "preact_resnet56",
          "preact_resnet110", "resnet18", "resnet34", "resnet50",
          "resnet20_mcts", "resnet20_mcts_small", "bsq_resnet8", "bsq_resnet20", "mobilenet_cifar",
          "mobilenetv2_cifar", "vgg16_bn")
MODEL_PATTERNS = (("wrn<depth>-<k>", r"wrn(\d+)-(\d+)"),)  # (as users write it, the regex its groups come from)


def unknown_arch(name: str) -> bool:
    """Whether `arch` names no registered model (checked before a launch; the paper's grids name some,
    e.g. mobilenet_v2, that this checkout does not implement)."""
    import re
    return name not in MODELS and not any(re.fullmatch(rx, name) for _, rx in MODEL_PATTERNS)
