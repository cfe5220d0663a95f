"""Attention maps and dynamic scaling of LHC modules (paper section 2.1 eqs. 11-17, section 2.2).

Every LHC module (:class:`lhc.layers.LHC`) can return its analysis tensors: the attention
weights ``W_h`` (eq. 15), the dynamic scales ``T_h`` (eq. 13) and the head outputs ``A_h``
(eq. 16). This package collects them for a set of images, turns them into pictures and
summarises the dynamic scaling, one job per submodule; every public name is re-exported
here, so ``from lhc.analysis import attention; attention.collect_attention(...)`` works:

- :mod:`~lhc.analysis.attention.collect`: :func:`collect_attention` runs a model's LHC modules
  in analysis mode: one sub-model from the model's input to every module's input, then each
  module eagerly with ``return_attention`` (:class:`AttentionCollector`, :func:`model_inputs`,
  :class:`AttentionAnalysis`, :class:`ModuleAttention`).
- :mod:`~lhc.analysis.attention.maps`: :func:`head_contribution_map` places the magnitude of a
  head's output ``A_h`` back on its horizontal band of the ``H x W`` feature map (eq. 17,
  bands from :func:`lhc.layers.head_band`) and upsamples it to the input image;
  :func:`attention_term_map` is the magnitude of the whole attention term ``y``.
- :mod:`~lhc.analysis.attention.scaling`: :func:`dynamic_scaling_summary` and
  :func:`normalised_row_entropy`: the effective softmax temperature ``d^(g+T)`` and the
  sharpness of the rows of ``W_h`` (eqs. 18-20, explained there).
- :mod:`~lhc.analysis.attention.figures`: :func:`attention_weights_figure`,
  :func:`scales_figure`, :func:`overlay_figure` (one image, module and head),
  :func:`prediction_overlays_figure`, :func:`temperature_figure`, :func:`entropy_figure`.
- :mod:`~lhc.analysis.attention.explorer`: :class:`AttentionExplorer` puts the one-image
  figures behind ipywidgets (imported only when a widget is built).
"""

from lhc.analysis.attention.collect import (
    AttentionAnalysis,
    AttentionCollector,
    ModuleAttention,
    collect_attention,
    model_inputs,
)
from lhc.analysis.attention.explorer import AttentionExplorer
from lhc.analysis.attention.figures import (
    WEIGHTS_COLOUR_QUANTILE as WEIGHTS_COLOUR_QUANTILE,
)
from lhc.analysis.attention.figures import (
    attention_weights_figure,
    entropy_figure,
    overlay_figure,
    prediction_overlays_figure,
    scales_figure,
    temperature_figure,
    weights_colour_limit,
)
from lhc.analysis.attention.maps import (
    CONTRIBUTION_REDUCTIONS as CONTRIBUTION_REDUCTIONS,
)
from lhc.analysis.attention.maps import (
    ContributionMap,
    attention_term_map,
    head_contribution_map,
)
from lhc.analysis.attention.scaling import dynamic_scaling_summary, normalised_row_entropy

# The constants WEIGHTS_COLOUR_QUANTILE and CONTRIBUTION_REDUCTIONS are re-exported (the
# "X as X" imports) but stay out of __all__, as they were in the single module.
__all__ = [
    "AttentionAnalysis",
    "AttentionCollector",
    "AttentionExplorer",
    "ContributionMap",
    "ModuleAttention",
    "attention_term_map",
    "attention_weights_figure",
    "collect_attention",
    "dynamic_scaling_summary",
    "entropy_figure",
    "head_contribution_map",
    "model_inputs",
    "normalised_row_entropy",
    "overlay_figure",
    "prediction_overlays_figure",
    "scales_figure",
    "temperature_figure",
    "weights_colour_limit",
]
