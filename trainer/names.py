"""The names of the trainer's datasets (`dataset`) and optimizers (`optim`), torch-free so the option
schema (trainer/options.py) offers exactly these: `@register_dataset` (trainer/data) and
`@register_optimizer` (trainer/optim.py) refuse a name not here; tests/test_registries.py checks that every
name here is registered."""

DATASETS = ("digits", "cifar10", "cifar100", "mnist", "svhn", "imagenet", "logreg", "5class", "10class")
OPTIMIZERS = ("sgd", "adam")
