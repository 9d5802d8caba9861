"""Diagnostics from the papers (docs/methods.md, "Diagnostics"): pure functions over tensors.

* :mod:`.representations` — variance-ratio curve and effective dimension of representations
  (LR paper Fig. 2), accuracy of a linear classifier on PCA-compressed representations (Table 5).
* :mod:`.noise` — random pixel noise (probability p, Gaussian) and accuracy under it (LR paper Table 4).
* :mod:`.weights` — effective rank and effective sparsity of weight matrices (nuclear-norm paper).
* :mod:`.volume` — volume element of a feature map on a 2-D grid and decision maps
  (rep-spectral Fig. 3).
* :mod:`.report` — stage-facing glue: all of the above for one model, as JSON-ready values.
"""

from pipeline.analysis.noise import DEFAULT_PS, PIXEL_NOISE_SIGMA, noise_accuracy, pixel_noise
from pipeline.analysis.report import (
    extract_features,
    noise_diagnostics,
    representation_diagnostics,
    weight_rows,
)
from pipeline.analysis.representations import (
    DEFAULT_KS,
    compression_accuracy,
    effective_dimension,
    variance_ratio_curve,
)
from pipeline.analysis.volume import Grid, decision_map, grid, volume_element
from pipeline.analysis.weights import (
    as_matrix,
    effective_rank,
    effective_sparsity,
    weight_report,
)

__all__ = [
    "DEFAULT_KS",
    "DEFAULT_PS",
    "PIXEL_NOISE_SIGMA",
    "Grid",
    "as_matrix",
    "compression_accuracy",
    "decision_map",
    "effective_dimension",
    "effective_rank",
    "effective_sparsity",
    "extract_features",
    "grid",
    "noise_accuracy",
    "noise_diagnostics",
    "pixel_noise",
    "representation_diagnostics",
    "variance_ratio_curve",
    "volume_element",
    "weight_report",
    "weight_rows",
]
