"""lhc: a research workbench for LHC-Net (Pecoraro, Basile, Bono, Gallo).

Modules, one job each:

- :mod:`lhc.layers`: the LHC module (paper equations 1-17).
- :mod:`lhc.models`: ResNet34v2, LHC-Net, LHC-NetC, block settings and weight transfer.
- :mod:`lhc.data`: FER2013 readers with strict validation, the synthetic default and the
  ``tf.data`` pipeline.
- :mod:`lhc.plots`: the one figure style and atomic figure saving.
- :mod:`lhc.cli`: the ``lhc`` command.
"""

__version__ = "0.1.0"
