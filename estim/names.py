"""The names of the gradient estimators (`g_estim`), torch-free so the option schema (trainer/options.py)
offers exactly these: `@register_estimator` refuses a name not here; tests/test_registries.py checks that
every name here is registered."""

ESTIMATORS = ("sgd", "nuq", "nuq_dist", "ddp_hook")
DDP_HOOKS = ("allreduce", "fp16", "bf16", "powersgd")  # `ddp_hook` of g_estim=ddp_hook: estim/ddp_hook.py HOOKS
