"""Analyses of trained LHC-Nets (paper section 2.2, "Local Multi-Head").

Submodules, one job each, imported on their own (this package imports none of them, so that
importing one never pulls in another's dependencies):

- :mod:`lhc.analysis.ablation`: switching LHC modules off and de-training them, for every
  subset of the five modules, with the accuracy of each combination.
- :mod:`lhc.analysis.heads`: Pearson correlation between the outputs of the heads, within each
  module and across all of them, for local (band) heads against global heads.
- :mod:`lhc.analysis.attention`: attention maps and the dynamic scaling, a subpackage with one
  job per module (``collect``, ``maps``, ``scaling``, ``figures``, ``explorer``) whose
  ``__init__`` re-exports every public name.
"""
