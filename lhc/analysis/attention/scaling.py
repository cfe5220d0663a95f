"""Statistics of the dynamic scaling: temperatures and row entropies (paper eqs. 13-15, 18-20).

How the dynamic scaling links to eqs. 18-20: eq. 14 divides row ``i`` of the scores ``S_h``
by the temperature ``tau_i = d^(g + T_h[i])``, so the softmax of eq. 15 sees ``alpha * S_h[i]``
with ``alpha = 1 / tau_i``. Eq. 20: no ``alpha > 0`` changes the ranking of a row, so the
temperature decides only how sharp a row is, not which input channel weighs most. Eq. 18:
``alpha -> infinity`` (a small temperature) gives a one-hot row, a new feature map that is a
strict selection of one old map; eq. 19: ``alpha -> 0`` (a large temperature) gives the
uniform row ``1/C``, an even average of all old maps. Sharpness is measured by the row
entropy divided by ``log C`` (:func:`normalised_row_entropy`): 0 for a one-hot row, 1 for a
uniform row. Because ``T`` is a sigmoid output in (0, 1), a module's temperature is confined
to ``(d^g, d^(g+1))``; the Transformer's static scaling is ``sqrt(d)``, i.e. ``g + T = 1/2``.
"""

from __future__ import annotations

import math

import numpy as np

from lhc.analysis.attention.collect import AttentionAnalysis

__all__ = ["dynamic_scaling_summary", "normalised_row_entropy"]


def normalised_row_entropy(weights: np.ndarray) -> np.ndarray:
    """Entropy of each row of attention weights divided by ``log C``, in [0, 1].

    0 is a one-hot row (the ``alpha -> infinity`` limit of eq. 18), 1 the uniform row ``1/C``
    (the ``alpha -> 0`` limit of eq. 19).

    Args:
        weights: ``(..., C)`` rows summing to 1, ``C >= 2``.

    Returns:
        ``(...)`` float64 normalised entropies.
    """
    channels = weights.shape[-1]
    if channels < 2:
        raise ValueError(f"row entropy needs rows of at least 2 weights, got {channels}")
    weights = weights.astype(np.float64)
    # 0 log 0 = 0: a weight the softmax underflowed to zero carries no entropy.
    terms = np.where(weights > 0, weights * np.log(np.where(weights > 0, weights, 1.0)), 0.0)
    # float32 rows sum to 1 only up to rounding, which can push the ratio a hair past [0, 1];
    # adding 0.0 turns the -0.0 of an exactly one-hot row into 0.0.
    return np.clip(-terms.sum(axis=-1) / math.log(channels), 0.0, 1.0) + 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)


def dynamic_scaling_summary(analysis: AttentionAnalysis) -> dict[str, dict[str, float]]:
    """Per-module statistics of the effective temperature and of the sharpness of ``W_h``.

    Pooled over every image, head and row ``i`` of a module:

    - ``temperature_*``: ``d^(g + T_h[i])`` (eq. 14); ``temperature_bounds`` is the range
      ``(d^g, d^(g+1))`` the sigmoid allows, ``transformer_temperature`` Vaswani's ``sqrt(d)``.
    - ``entropy_*``: row entropy of ``W_h`` over ``log C``; 1 = uniform rows (eq. 19, a large
      temperature), 0 = one-hot rows (eq. 18, a small one).
    - ``temperature_entropy_spearman``: rank correlation of the two over the rows. Eq. 20 makes
      the temperature a pure sharpness control, so within rows of similar scores a larger
      temperature means a flatter row; a positive value shows that effect across the module.

    Returns:
        module name -> statistics (plain floats, JSON-ready).
    """
    summary = {}
    for name, attention in analysis.modules.items():
        temperature = attention.temperature().ravel()
        entropy = normalised_row_entropy(attention.weights).ravel()
        dim, exponent = attention.head_dim, attention.scale_exponent
        spread = temperature.std() > 0 and entropy.std() > 0
        summary[name] = {
            "head_dim": dim,
            "scale_exponent": exponent,
            "rows": int(temperature.size),
            "temperature_mean": float(temperature.mean()),
            "temperature_median": float(np.median(temperature)),
            "temperature_min": float(temperature.min()),
            "temperature_max": float(temperature.max()),
            "temperature_bounds": [float(dim ** exponent), float(dim ** (exponent + 1))],
            "transformer_temperature": math.sqrt(dim),
            "scale_mean": float(attention.scales.mean()),
            "entropy_mean": float(entropy.mean()),
            "entropy_median": float(np.median(entropy)),
            "entropy_min": float(entropy.min()),
            "entropy_max": float(entropy.max()),
            "temperature_entropy_spearman": (
                float(np.corrcoef(_ranks(temperature), _ranks(entropy))[0, 1]) if spread
                else float("nan")),
        }
    return summary
