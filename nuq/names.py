"""The names of the quantization methods (`nuq_method`), torch-free so the option schema (trainer/options.py)
offers exactly these: nuq/levels.py registers each method against this table (a name not here is refused)
and nuq/fit_base.py each adaptive fit against ADAPTIVE; tests/test_registries.py checks the two agree."""

ADAPTIVE = ("alq", "alq_nb", "alqg", "alqg_nb", "amq", "amq_nb")
METHODS = ("none", "q", "qinf", "nuq", "trn") + ADAPTIVE
