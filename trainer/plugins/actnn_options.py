"""Options of the `actnn` plugin (torch-free: they join the schema the launcher validates grids against).

Defaults are the study's research code (ActNN at 37b318f): 8/8 bits, per-group ranges of 64, per-layer
allocation on; the 2-bit rows of its table set `actnn_cabits: 2` (docs/actnn.md)."""

from nuq.limits import MAX_GROUP_SIZE

OPTIONS = {
    "actnn_mode": ("str", "quantize",
                   "off: no compression; qlinear: conv/linear keep a compressed input for the weight gradient; "
                   "quantize: batch norm too (its backward from the compressed normalised input).",
                   ("off", "qlinear", "quantize")),
    "actnn_cabits": ("float", 8.0, "Average bits per saved activation value (the budget of the greedy allocation).",
                     None, 1, 8),
    "actnn_ibits": ("int", 8, "Starting (and highest) bits per sample of the greedy allocation.", None, 1, 8),
    "actnn_pergroup": ("bool", True, "Range per (sample, group) instead of one min/max for the whole tensor."),
    "actnn_perlayer": ("bool", True, "Re-allocate the bit budget across layers after each step."),
    "actnn_use_gradient": ("bool", True, "Weight each sample's predicted variance by its own gradient scale, an "
                           "EMA of its output-gradient norm indexed by dataset index (the study's); false: one "
                           "scale per layer (the release's use_gradient=False)."),
    "actnn_group_size": ("int", 64, "Features per quantization group of each sample.", None, 1,
                         MAX_GROUP_SIZE),
    "actnn_store": ("str", "bfloat16", "dtype of the stored min and scale (float32: exactly unbiased round trip).",
                    ("bfloat16", "float32")),
    "actnn_relu_mask": ("bool", False, "ReLU modules keep a 1-bit mask instead of their output (the release's QReLU)."),
    "actnn_var_at": ("intlist", "", "Steps after which to measure the gradient variance protocol (actnn/var, "
                     "actnn/bias, actnn/sample_var) on the last actnn_var_batches training batches; empty: never."),
    "actnn_var_batches": ("int", 10, "Training batches of the variance protocol.", None, 1),
    "actnn_var_draws": ("int", 3, "Compressed backward passes per batch in the variance protocol.", None, 2),
}
