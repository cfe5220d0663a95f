"""The arms of a seed sweep: which model stage 4 trains, and whose accuracy is the arm's result.

One table for the sweep that trains the arms (:mod:`lhc.training.sweeps`) and the evaluation
that reads them (:mod:`lhc.evaluation`, :mod:`lhc.statistics`); it imports nothing heavy, so
reading a sweep's results needs no Keras.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ARMS", "Arm"]


@dataclass(frozen=True)
class Arm:
    """One arm of a sweep.

    Attributes:
        label: its row name in tables.
        model: stage 4's model (:data:`lhc.training.registry.MODEL_BUILDERS`).
        stages: the stages each run trains from the base.
        scored_stage, scored_model: whose test accuracy is the arm's result.
    """

    label: str
    model: str
    stages: str = "4"
    scored_stage: str = "stage4"
    scored_model: str | None = None

    @property
    def scored(self) -> tuple[str, str]:
        return self.scored_stage, self.scored_model or self.model


ARMS: dict[str, Arm] = {
    "A": Arm("ResNet34v2", "resnet34v2"),
    "B": Arm("LHC-Net", "lhc_net"),
    "C": Arm("LHC-NetC", "lhc_net", "4,C", "lhcc", "lhc_netc"),
    "GLOBAL": Arm("LHC-Net, global heads", "lhc_net_global"),
    "SE": Arm("ResNet34v2 + SE", "se_net"),
    "CBAM": Arm("ResNet34v2 + CBAM", "cbam_net"),
    "ECA": Arm("ResNet34v2 + ECA", "eca_net"),
}
