"""Options of the `bsq` plugin (torch-free: they join the schema the launcher validates grids against).

Defaults follow the study's code (yanghr/BSQ at 1709d90); docs/bsq.md."""

OPTIONS = {
    "bsq_mode": ("str", "train",
                 "train: bit-plane training with the group-Lasso and periodic pruning; convert: turn the starting "
                 "weights into bit planes and evaluate (with eval_only); finetune: train with the bit scheme fixed.",
                 ("train", "convert", "finetune")),
    "bsq_nbits": ("int", 8, "Precision (bits) given to each layer when converting full-precision weights.",
                  None, 1, 16),
    "bsq_alpha": ("float", 0.01, "Strength of the bit-plane group Lasso (the study's `decay`); 0: none.", None, 0),
    "bsq_interval": ("int", 50, "Re-quantize and prune empty bit planes every this many epochs (train mode).",
                     None, 1, 1000000),
    "bsq_threshold": ("float", 0.0,
                      "Also prune a top or bottom bit plane whose non-zero share (percent) is below this.", None, 0, 100),
    "bsq_act_bits": ("int", 4, "Bits of the max-abs activation quantization after each ReLU6; 0: none.",
                     None, 0, 16),
    "bsq_act_bits_stem": ("int", 8, "Bits of the activation quantization after the stem's ReLU6; 0: none.",
                          None, 0, 16),
    "bsq_bits_from": ("str", "",
                      "A checkpoint file or run folder whose learned per-layer bits the layers get (the study's "
                      "convert.py --dict); '': bsq_nbits everywhere. Bits carried from an upstream stage win."),
    "bsq_fp_downsample": ("bool", False,
                          "Keep the 1x1 downsample convs in full precision (the study's later code)."),
}
