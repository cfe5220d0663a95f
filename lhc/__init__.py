"""lhc: a research workbench for LHC-Net (Pecoraro, Basile, Bono, Gallo).

Modules, one job each:

- :mod:`lhc.layers`: the LHC module (paper equations 1-17).
- :mod:`lhc.models`: ResNet34v2, LHC-Net, LHC-NetC, block settings and weight transfer.
- :mod:`lhc.data`: FER2013 and FER+ readers with strict validation (``lhc.data.load_fer2013``),
  the synthetic default (``lhc.data.synthetic``), the data report (``lhc.data.report``) and
  the input pipeline on any backend (``lhc.data.pipeline``).
- :mod:`lhc.training`: the paper's four-stage protocol as YAML profiles (``lhc/profiles``),
  resumable, seeded runs on TensorFlow or JAX, seed sweeps, distribution over devices and hosts.
- :mod:`lhc.efficiency`: the L1/G1 efficiency analysis of local against global heads
  (paper section 2.2, eqs. 21-26).
- :mod:`lhc.plots`: the one figure style and atomic figure saving.
- :mod:`lhc.workbench`: the notebook sequence executed headless (``lhc run``);
  :mod:`lhc.run_report`: a run's HTML report (``lhc report``).
- :mod:`lhc.cli`: the ``lhc`` command, one module per subcommand (``lhc.cli.train``, ...).
- :mod:`lhc.backend`: the Keras backend when none was chosen (JAX where TensorFlow is absent).
"""

from lhc.backend import choose_default_backend

__version__ = "0.1.0"

choose_default_backend()
