"""Options of the `l1clip` plugin (torch-free: they join the schema the launcher validates grids against)."""

OPTIONS = {
    "l1clip_l1": ("float", 1e-4,
                  "L1 penalty coefficient: adds l1 x (sum of absolute weights) of the chosen layers to the loss."),
    "l1clip_clip": ("float", 0.0, "After each step clamp the chosen weights to [-clip, clip]; 0: no clamping."),
    "l1clip_skip_ends": ("bool", False, "Leave the first and the last layer (stem and classifier) alone."),
}
