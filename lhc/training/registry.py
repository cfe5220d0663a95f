"""The models a profile can name, and how each is built: one registry for the whole workbench.

Profiles validate ``stages.<stage>.model`` against it, the runner builds a stage's model from
it, and sweeps, evaluation and export rebuild a trained model through it, so a model is added
in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the builders import Keras and the models only when called
    import keras

    from lhc.training.profiles import Profile

__all__ = ["MODEL_BUILDERS", "build_model"]


def _resnet34v2(profile: Profile, num_classes: int) -> keras.Model:
    from lhc.models import build_resnet34v2

    return build_resnet34v2(profile.input_size_shape, num_classes)


def _lhc_net(variant: str, head_layout: str) -> Callable[[Profile, int], keras.Model]:
    def build(profile: Profile, num_classes: int) -> keras.Model:
        from lhc.models import build_lhc_net

        return build_lhc_net(profile.input_size_shape, num_classes, variant=variant,
                             blocks=profile.resolved_blocks(), head_layout=head_layout,
                             value_initializer=profile.lhc_value_init)

    return build


def _resnet34v2_with(kind: str) -> Callable[[Profile, int], keras.Model]:
    """ResNet34v2 with a peer attention module after each of the paper's five LHC positions
    (:func:`lhc.models.insert_attention`), each starting as the identity."""
    def build(profile: Profile, num_classes: int) -> keras.Model:
        from lhc.models import build_resnet34v2, insert_attention

        backbone = build_resnet34v2(profile.input_size_shape, num_classes)
        return insert_attention(backbone, kind)

    return build


MODEL_BUILDERS: dict[str, Callable[[Profile, int], keras.Model]] = {
    "resnet34v2": _resnet34v2,
    "lhc_net": _lhc_net("lhc", "bands"),
    "lhc_netc": _lhc_net("lhcc", "bands"),
    # LHC-Net with full-map heads: the head-correlation comparison arm (paper section 2.2).
    "lhc_net_global": _lhc_net("lhc", "global"),
    # Channel-attention peers under the same protocol (issue 18): SE, CBAM, ECA.
    "se_net": _resnet34v2_with("se"),
    "cbam_net": _resnet34v2_with("cbam"),
    "eca_net": _resnet34v2_with("eca"),
}


def build_model(model_name: str, profile: Profile, num_classes: int) -> keras.Model:
    """A fresh, untrained ``model_name`` at the profile's input size and block settings.

    Raises:
        ValueError: no model of that name.
    """
    if model_name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {model_name!r}; expected one of "
                         f"{', '.join(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[model_name](profile, num_classes)
