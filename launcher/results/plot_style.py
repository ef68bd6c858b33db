"""What every `launch plot` figure shares: readable axis names, log axes for variances, the outside legend,
file names, and the headless PNG + PDF writer (matplotlib's object API: no pyplot, no display)."""
from __future__ import annotations

import io
import re
from pathlib import Path

from matplotlib.figure import Figure

from trainer import runfiles

FILE_TYPES = ("png", "pdf")

# Axis labels for the metrics the trainer logs (estim/gvar.py, trainer/evaluate.py); others show their tag.
METRIC_LABELS = {
    "Vacc": "validation accuracy (%)", "Vloss": "validation loss", "Tacc": "training accuracy (%)",
    "Tloss": "training loss", "loss": "training loss (minibatch)", "lr": "learning rate",
    "est_var": "gradient estimate variance", "est_nvar": "gradient estimate variance / |g|²",
    "sgd_var": "SGD gradient variance", "sgd_nvar": "SGD gradient variance / |g|²",
    "est_snr": "gradient estimate signal-to-noise ratio", "grad_bias": "gradient estimate bias",
    "bits": "bits per coordinate", "bsq/compression": "compression (32 / mean weight bits)",
}
VARIANCE_METRICS = ("est_var", "est_nvar", "sgd_var", "sgd_nvar")


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def is_log_metric(metric: str) -> bool:
    """Variances span decades and are positive: drawn on a log axis with bands in log space."""
    return metric in VARIANCE_METRICS


def decorate(fig: Figure, ax, xlabel: str, ylabel: str, logy: bool, title: str, legend: bool = True,
             legend_title: str | None = None) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if legend and ax.get_lines():  # outside the axes, so it never covers a curve
        fig.legend(loc="outside right upper", fontsize="small", title=legend_title, title_fontsize="small")


def save_figure(fig: Figure, out_dir: str | Path, stem: str) -> list[Path]:
    """Write fig as <stem>.png and <stem>.pdf in out_dir (atomically); returns the paths."""
    paths = []
    for ext in FILE_TYPES:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=150)
        path = Path(out_dir) / f"{stem}.{ext}"
        runfiles.atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def file_stem(run: str, metric: str, kind: str) -> str:
    """'<run>_<metric>' for line figures, '<run>_<metric>_<kind>' for the others, safe as a file name."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{run}_{metric}")
    return name if kind == "line" else f"{name}_{kind}"
