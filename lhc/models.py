"""Model builders: ResNet34v2, LHC-Net, LHC-NetC, LHC block settings and weight transfer.

The backbone is the pre-activation ResNet-34 of the ``image-classifiers`` package
(``classification_models``) with the 4096-1024 classifier head of the original LHC-Net
code (``REFERENCE.md``). Layer names follow that package, so a local ImageNet weights file
of its resnet34 layout loads by name (:func:`load_backbone_weights`). LHC-Net adds five
:class:`lhc.layers.LHC` modules at the paper's positions (figure 1, table in section 3);
LHC-NetC gates each module's residual sum with a trainable scalar. :func:`insert_lhc` and
:func:`insert_attention` add LHC or one of its channel-attention peers (SE, CBAM, ECA,
:mod:`lhc.channel_attention`) after named layers of any functional CNN.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import h5py
import keras
import numpy as np

from lhc.channel_attention import CBAM, ECA, SqueezeExcitation
from lhc.layers import LHC

__all__ = [
    "ATTENTION_KINDS",
    "HEAD_LAYER_NAMES",
    "LHCBlockSettings",
    "LHCC_GATE_INIT",
    "LHC_POSITIONS",
    "PAPER_BLOCKS",
    "VARIANTS",
    "build_lhc_net",
    "build_resnet34v2",
    "derive_block_settings",
    "freeze_all_but_gates",
    "insert_attention",
    "insert_lhc",
    "lhc_feature_shapes",
    "load_backbone_weights",
    "transfer_backbone_weights",
]

BN_EPSILON = 2e-5
STEM_FILTERS = 64
STAGE_UNITS = (3, 4, 6, 3)  # ResNet-34
HEAD_UNITS = (4096, 1024)
HEAD_DROPOUT = 0.4
HEAD_LAYER_NAMES = ("fc1", "dropout1", "fc2", "dropout2", "predictions")
# Layers whose output feeds an LHC module in LHC-Net (paper figure 1).
LHC_POSITIONS = (
    "pooling0",
    "stage1_unit3_add",
    "stage2_unit4_add",
    "stage3_unit6_add",
    "stage4_unit3_add",
)
LHCC_GATE_INIT = (0.0, 0.0, 0.0, -1.0, -0.5)
VARIANTS = ("lhc", "lhcc")
MIN_HEAD_DIM = 4
PAPER_INPUT_SIZE = 224
# Modules insert_attention adds: LHC (the paper's local heads), LHC with global heads (the
# comparison arm of section 2.2), SE, CBAM, ECA, or nothing (an unchanged copy, the baseline).
ATTENTION_KINDS = ("lhc", "lhc_global", "se", "cbam", "eca", "none")
_CHANNEL_ATTENTION_LAYERS = {"se": SqueezeExcitation, "cbam": CBAM, "eca": ECA}


@dataclass(frozen=True)
class LHCBlockSettings:
    """Hyper-parameters of one LHC module (the paper's n, d, p, s, g; section 2.1).

    Args:
        num_heads: number of local heads ``n``; must divide the module's ``H*W``.
        head_dim: embedding size ``d`` of each head.
        pool_size: pool size ``p`` of the query/key pooling.
        kernel_size: kernel size ``s`` of the value convolution.
        scale_exponent: the dynamic-scaling constant ``g`` (eq. 14).
    """

    num_heads: int
    head_dim: int
    pool_size: int = 3
    kernel_size: int = 3
    scale_exponent: float = 1.0

    @classmethod
    def from_value(cls, value: LHCBlockSettings | Mapping) -> LHCBlockSettings:
        """Accept settings or a dict of them (e.g. from YAML); unknown keys are an error."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(
                f"LHC block settings must be LHCBlockSettings or a dict, got {type(value).__name__}"
            )
        allowed = [field.name for field in fields(cls)]
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown LHC block setting(s) {unknown}; allowed keys: {allowed}"
            )
        missing = [key for key in ("num_heads", "head_dim") if key not in value]
        if missing:
            raise ValueError(f"LHC block settings miss required key(s) {missing}")
        return cls(**value)


# The paper's table (section 3): (heads, dim, pool, kernel, scale) for LHC1..LHC5.
PAPER_BLOCKS = (
    LHCBlockSettings(8, 196, 3, 3, 1.0),
    LHCBlockSettings(8, 196, 3, 3, 1.0),
    LHCBlockSettings(7, 56, 3, 3, 1.0),
    LHCBlockSettings(7, 14, 3, 3, 1.0),
    LHCBlockSettings(1, 25, 3, 3, 1.0),
)


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(size, int | np.integer) and size > 0 for size in shape):
        raise ValueError(f"input_shape must be (height, width, channels) of positive ints, got {shape}")
    return tuple(int(size) for size in shape)


def _halve(size: int) -> int:
    # Output size of every stride-2 step here: ZeroPad(k//2) + 'valid' k x k window, stride 2.
    return (size - 1) // 2 + 1


def lhc_feature_shapes(input_shape: Sequence[int]) -> list[tuple[int, int, int]]:
    """The ``(H, W, C)`` feature maps at the five LHC positions for a given input shape.

    Args:
        input_shape: ``(height, width, channels)`` of the network input.

    Returns:
        Five ``(H, W, C)`` tuples, e.g. 56x56x64, 56x56x64, 28x28x128, 14x14x256, 7x7x512
        at 224x224.
    """
    height, width, _ = _check_input_shape(input_shape)
    sizes = [(_halve(_halve(height)), _halve(_halve(width)))]  # conv0 then pooling0
    sizes.append(sizes[0])  # stage 1 keeps the resolution
    for _ in range(3):  # stages 2-4 halve it
        sizes.append((_halve(sizes[-1][0]), _halve(sizes[-1][1])))
    channels = (STEM_FILTERS, STEM_FILTERS, 2 * STEM_FILTERS, 4 * STEM_FILTERS, 8 * STEM_FILTERS)
    return [(h, w, c) for (h, w), c in zip(sizes, channels, strict=True)]


def _nearest_divisor(value: int, target: int) -> int:
    # Ties go to the smaller divisor: fewer heads keep longer bands.
    divisors = [k for k in range(1, value + 1) if value % k == 0]
    return min(divisors, key=lambda k: (abs(k - target), k))


def _derive_one(
    shape: tuple[int, int, int], reference: LHCBlockSettings, label: str
) -> tuple[LHCBlockSettings, str]:
    """Fit ``reference``'s heads to an ``(H, W, C)`` map and size d by ``ceil(H*W / (2n))``."""
    height, width, channels = shape
    area = height * width
    num_heads = _nearest_divisor(area, reference.num_heads)
    if num_heads == reference.num_heads:
        heads_note = f"paper heads n={num_heads} divide H*W={area}, kept"
    else:
        heads_note = (
            f"paper heads n={reference.num_heads} do not divide H*W={area}; "
            f"nearest divisor n={num_heads}"
        )
    head_dim = max(MIN_HEAD_DIM, math.ceil(area / (2 * num_heads)))
    explanation = (
        f"{label} on {height}x{width}x{channels}: {heads_note}; "
        f"d = max({MIN_HEAD_DIM}, ceil({area}/(2*{num_heads}))) = {head_dim} "
        f"(paper d={reference.head_dim}); p={reference.pool_size}, s={reference.kernel_size}, "
        f"g={reference.scale_exponent:g} as in the paper"
    )
    settings = LHCBlockSettings(
        num_heads, head_dim, reference.pool_size, reference.kernel_size, reference.scale_exponent
    )
    return settings, explanation


def derive_block_settings(
    input_shape: Sequence[int],
) -> tuple[tuple[LHCBlockSettings, ...], tuple[str, ...]]:
    """Derive valid LHC-Net block settings for an input size other than the paper's 224.

    Rule: keep the paper's ``num_heads`` where it divides the module's ``H*W``, else use
    the divisor of ``H*W`` nearest to it (ties: the smaller); ``head_dim`` follows the
    rule of the paper's first two blocks, ``d = H*W / (2n)``, rounded up and at least 4.
    At 224x224 this reproduces :data:`PAPER_BLOCKS` exactly (LHC5: 49/2 = 24.5 -> 25).

    Args:
        input_shape: ``(height, width, channels)`` of the network input.

    Returns:
        ``(settings, explanations)``: five :class:`LHCBlockSettings` and one
        human-readable sentence per block saying how it was obtained.
    """
    derived = [
        _derive_one(shape, reference, f"lhc{index} after {position}")
        for index, (shape, reference, position) in enumerate(
            zip(lhc_feature_shapes(input_shape), PAPER_BLOCKS, LHC_POSITIONS, strict=True), 1
        )
    ]
    return tuple(s for s, _ in derived), tuple(e for _, e in derived)


def _batch_norm(name: str, scale: bool = True) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, scale=scale, name=name)


def _conv(filters: int, kernel_size: int, strides: int, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="valid", use_bias=False,
        kernel_initializer="he_uniform", name=name,
    )


def _residual_unit(x, filters: int, stage: int, unit: int, strides: int, projection: bool):
    """Pre-activation basic block: BN-ReLU-Conv3x3-BN-ReLU-Conv3x3 plus shortcut."""
    prefix = f"stage{stage}_unit{unit}_"
    y = _batch_norm(prefix + "bn1")(x)
    y = keras.layers.Activation("relu", name=prefix + "relu1")(y)
    # The projection reads the pre-activated input, as in image-classifiers ("post" cut).
    shortcut = _conv(filters, 1, strides, prefix + "sc")(y) if projection else x
    y = keras.layers.ZeroPadding2D(1, name=prefix + "pad1")(y)
    y = _conv(filters, 3, strides, prefix + "conv1")(y)
    y = _batch_norm(prefix + "bn2")(y)
    y = keras.layers.Activation("relu", name=prefix + "relu2")(y)
    y = keras.layers.ZeroPadding2D(1, name=prefix + "pad2")(y)
    y = _conv(filters, 3, 1, prefix + "conv2")(y)
    return keras.layers.Add(name=prefix + "add")([y, shortcut])


def _build_backbone_with_head(
    input_shape: Sequence[int],
    num_classes: int,
    modules: Mapping[str, keras.layers.Layer],
    name: str,
) -> keras.Model:
    """ResNet34v2 graph; ``modules`` maps a layer name to a layer applied to its output."""
    input_shape = _check_input_shape(input_shape)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")

    def tap(tensor, layer_name):
        return modules[layer_name](tensor) if layer_name in modules else tensor

    inputs = keras.Input(shape=input_shape, name="data")
    x = _batch_norm("bn_data", scale=False)(inputs)  # normalises raw [0, 255] pixels
    x = keras.layers.ZeroPadding2D(3, name="zero_padding")(x)
    x = _conv(STEM_FILTERS, 7, 2, "conv0")(x)
    x = _batch_norm("bn0")(x)
    x = keras.layers.Activation("relu", name="relu0")(x)
    x = keras.layers.ZeroPadding2D(1, name="zero_padding_pool")(x)
    x = tap(keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="pooling0")(x), "pooling0")
    for stage, num_units in enumerate(STAGE_UNITS, 1):
        filters = STEM_FILTERS * 2 ** (stage - 1)
        for unit in range(1, num_units + 1):
            first = unit == 1
            # Stage 1 keeps the resolution: the stem's max pool already halved it.
            strides = 2 if first and stage > 1 else 1
            x = _residual_unit(x, filters, stage, unit, strides, projection=first)
            x = tap(x, f"stage{stage}_unit{unit}_add")
    x = _batch_norm("bn1")(x)
    x = keras.layers.Activation("relu", name="relu1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool1")(x)
    for index, units in enumerate(HEAD_UNITS, 1):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{index}")(x)
        x = keras.layers.Dropout(HEAD_DROPOUT, name=f"dropout{index}")(x)
    # float32 softmax keeps probabilities well-formed under a mixed-precision policy.
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions"
    )(x)
    return keras.Model(inputs, outputs, name=name)


def build_resnet34v2(input_shape=(224, 224, 3), num_classes: int = 7) -> keras.Model:
    """Pre-activation ResNet-34 ("ResNet34v2") with the 4096-1024 head; 27.6M params at 224.

    Inputs are raw pixels in [0, 255]: the scale-free input BatchNorm ``bn_data`` acts as
    the normalisation. Every BatchNorm has epsilon 2e-5; convolutions have no bias and use
    explicit ``ZeroPadding2D`` followed by a 'valid' convolution, as in image-classifiers.

    Layer names (stable, those of image-classifiers' resnet34 for the backbone):

    - ``data`` (input), ``bn_data`` (BatchNorm without scale);
    - stem: ``zero_padding`` (3), ``conv0`` (7x7/2, 64), ``bn0``, ``relu0``,
      ``zero_padding_pool`` (1), ``pooling0`` (max pool 3x3/2);
    - units ``stage{S}_unit{U}_`` with S in 1..4 and U in 1..(3, 4, 6, 3)[S-1]:
      ``bn1``, ``relu1``, ``sc`` (1x1 projection on the pre-activated input, first unit of
      each stage only, stride 2 in stages 2-4), ``pad1``, ``conv1`` (3x3, stride 2 in the
      first unit of stages 2-4), ``bn2``, ``relu2``, ``pad2``, ``conv2``, ``add``;
    - top: ``bn1``, ``relu1``, ``pool1`` (global average pooling);
    - head: ``fc1`` (Dense 4096, relu), ``dropout1`` (0.4), ``fc2`` (Dense 1024, relu),
      ``dropout2`` (0.4), ``predictions`` (Dense ``num_classes``, softmax, float32).

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of output classes.

    Returns:
        A functional ``keras.Model`` named ``resnet34v2``: ``(B, H, W, 3)`` pixels in
        [0, 255] -> ``(B, num_classes)`` probabilities.
    """
    return _build_backbone_with_head(input_shape, num_classes, {}, "resnet34v2")


def build_lhc_net(
    input_shape=(224, 224, 3),
    num_classes: int = 7,
    variant: str = "lhc",
    blocks: Sequence[LHCBlockSettings | Mapping] | None = None,
    enabled: bool = True,
    head_layout: str = "bands",
    value_initializer="glorot_uniform",
) -> keras.Model:
    """LHC-Net (``variant="lhc"``) or LHC-NetC (``"lhcc"``): ResNet34v2 plus 5 LHC modules.

    The modules ``lhc1``..``lhc5`` sit after :data:`LHC_POSITIONS` (paper figure 1); all
    other layers are named as in :func:`build_resnet34v2`. At 224x224 with the paper's
    blocks the model has 32.4M parameters, 4,805,444 (14.8%) in the LHC modules. LHC-NetC
    gates every residual sum, ``x + (1 + tanh(w_i)) * attention_i``, with ``w_i``
    initialised to :data:`LHCC_GATE_INIT`.

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of output classes.
        variant: ``"lhc"`` or ``"lhcc"``.
        blocks: five :class:`LHCBlockSettings` (or dicts of their fields); ``None`` uses
            :func:`derive_block_settings`, which is :data:`PAPER_BLOCKS` at 224x224.
            Settings whose heads do not divide a module's ``H*W`` raise the LHC layer's
            ``ValueError``.
        enabled: ``False`` builds every LHC module switched off (identity), e.g. to check
            a weight transfer or for ablations.
        head_layout: ``"bands"`` (the paper's local heads) or ``"global"`` (every head sees
            the whole map: the comparison arm of the head-correlation analysis, section 2.2).
        value_initializer: the LHC modules' value-kernel initializer (:class:`lhc.layers.LHC`);
            ``"zeros"`` starts every module as the identity.

    Returns:
        A functional ``keras.Model`` named ``lhc_net`` or ``lhc_netc``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; allowed values: {list(VARIANTS)}")
    if blocks is None:
        blocks, _ = derive_block_settings(input_shape)
    if len(blocks) != len(LHC_POSITIONS):
        raise ValueError(
            f"blocks must hold {len(LHC_POSITIONS)} LHC block settings (one per position "
            f"{list(LHC_POSITIONS)}), got {len(blocks)}"
        )
    gates = LHCC_GATE_INIT if variant == "lhcc" else (None,) * len(LHC_POSITIONS)
    modules = {
        position: LHC(
            **asdict(LHCBlockSettings.from_value(block)),
            gate_init=gate,
            enabled=enabled,
            head_layout=head_layout,
            value_initializer=value_initializer,
            name=f"lhc{index}",
        )
        for index, (position, block, gate) in enumerate(
            zip(LHC_POSITIONS, blocks, gates, strict=True), 1
        )
    }
    name = "lhc_net" if variant == "lhc" else "lhc_netc"
    if head_layout != "bands":
        name += f"_{head_layout}"
    return _build_backbone_with_head(input_shape, num_classes, modules, name)


def transfer_backbone_weights(source: keras.Model, target: keras.Model) -> dict[str, list[str]]:
    """Copy every weight of ``source`` into ``target``, matched by layer and variable name.

    The paper's stage 4 starts LHC-Net from a trained ResNet34v2 this way, and LHC-NetC
    starts from a trained LHC-Net (its extra ``gate`` weights keep their initial values).
    Every source weight must exist in ``target`` with the same shape; otherwise nothing is
    copied and a ``ValueError`` lists all the problems.

    Args:
        source: model to copy from.
        target: model to copy into (e.g. from :func:`build_lhc_net`).

    Returns:
        ``{"copied": [...], "target_only": [...]}``: the layer names copied, and the paths
        of the target's variables left as they were (e.g. ``lhc1/value_kernel``, ``lhc1/gate``).
    """
    target_layers = {layer.name: layer for layer in target.layers}
    problems, assignments, copied = [], [], []
    for layer in source.layers:
        if not layer.weights:
            continue
        counterpart = target_layers.get(layer.name)
        if counterpart is None:
            problems.append(f"layer '{layer.name}' is missing from '{target.name}'")
            continue
        target_weights = {weight.name: weight for weight in counterpart.weights}
        for weight in layer.weights:
            destination = target_weights.get(weight.name)
            if destination is None or tuple(destination.shape) != tuple(weight.shape):
                found = "missing" if destination is None else f"shape {tuple(destination.shape)}"
                problems.append(
                    f"'{weight.path}' {tuple(weight.shape)} in '{source.name}': {found} in "
                    f"'{target.name}'"
                )
            else:
                assignments.append((destination, weight))
        copied.append(layer.name)
    if problems:
        raise ValueError(
            f"cannot transfer weights from '{source.name}' to '{target.name}':\n  "
            + "\n  ".join(problems)
        )
    for destination, weight in assignments:
        destination.assign(weight.value)
    written = {id(destination) for destination, _ in assignments}
    return {
        "copied": copied,
        "target_only": [w.path for w in target.weights if id(w) not in written],
    }


def _read_legacy_h5(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Weights of a Keras 2 style h5 file (``save_weights`` or full model): layer -> name -> array."""
    with h5py.File(path, "r") as handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in group.attrs:
            raise ValueError(
                f"{path}: not a Keras h5 weights file of the image-classifiers layout "
                "(expected a 'layer_names' attribute listing layer groups such as 'bn_data', "
                "'conv0', 'stage1_unit1_conv1')"
            )
        weights = {}
        for layer_name in group.attrs["layer_names"]:
            layer_name = layer_name.decode() if isinstance(layer_name, bytes) else layer_name
            layer_group = group[layer_name]
            arrays = {}
            for weight_name in layer_group.attrs.get("weight_names", []):
                weight_name = weight_name.decode() if isinstance(weight_name, bytes) else weight_name
                # "bn0/moving_mean:0" -> "moving_mean", Keras 3's variable name.
                short_name = weight_name.split("/")[-1].split(":")[0]
                arrays[short_name] = np.asarray(layer_group[weight_name])
            if arrays:
                weights[layer_name] = arrays
    return weights


def load_backbone_weights(model: keras.Model, path: str | os.PathLike) -> dict:
    """Load a local ImageNet weights file of image-classifiers' resnet34 layout, by layer name.

    The file is a Keras 2 h5 weights (or full-model) file whose layer groups carry the names
    of :func:`build_resnet34v2` (``bn_data``, ``conv0``, ``stage1_unit1_conv1``, ...).
    Classifier layers (:data:`HEAD_LAYER_NAMES`, and the file's own 1000-class ``fc1``)
    whose shapes differ are skipped and reported; a shape mismatch anywhere else means a
    wrong file and raises. No download is ever attempted.

    Args:
        model: a model built by this module (ResNet34v2, LHC-Net, LHC-NetC).
        path: the local ``.h5`` file.

    Returns:
        ``{"loaded": [...], "skipped": {layer: reason}, "missing": [...]}``: layers loaded,
        file layers not loaded and why, and the model's layers with weights that the file
        lacks (e.g. the LHC modules and the head).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not of that layout, a backbone shape differs, or no layer
            matched.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such weights file. Expected a local h5 file of the image-classifiers "
            "resnet34 ImageNet weights (e.g. resnet34_imagenet_1000_no_top.h5) with layer "
            "groups 'bn_data', 'conv0', 'bn0', 'stage{1-4}_unit{U}_{bn1,conv1,bn2,conv2,sc}', "
            "'bn1'; downloads are never attempted"
        )
    file_weights = _read_legacy_h5(path)
    model_layers = {layer.name: layer for layer in model.layers if layer.weights}
    loaded, skipped, problems = [], {}, []
    for layer_name, arrays in file_weights.items():
        layer = model_layers.get(layer_name)
        if layer is None:
            skipped[layer_name] = "not in the model"
            continue
        model_shapes = {w.name: tuple(w.shape) for w in layer.weights}
        file_shapes = {name: array.shape for name, array in arrays.items()}
        if model_shapes == file_shapes:
            layer.set_weights([arrays[w.name] for w in layer.weights])
            loaded.append(layer_name)
        elif layer_name in HEAD_LAYER_NAMES:
            skipped[layer_name] = f"classifier shapes differ: file {file_shapes}, model {model_shapes}"
        else:
            problems.append(f"layer '{layer_name}': file {file_shapes}, model {model_shapes}")
    if problems:
        raise ValueError(f"{path}: backbone weights do not fit the model:\n  " + "\n  ".join(problems))
    if not loaded:
        raise ValueError(
            f"{path}: no layer name matched the model; file layers start with "
            f"{list(file_weights)[:5]}, expected names such as 'bn_data', 'conv0'"
        )
    return {
        "loaded": loaded,
        "skipped": skipped,
        "missing": [name for name in model_layers if name not in loaded],
    }


def freeze_all_but_gates(model: keras.Model) -> list[str]:
    """Freeze everything except the LHC-NetC gates ``w_i`` (the paper's LHC-NetC stage).

    Args:
        model: a model with gated LHC modules (``build_lhc_net(variant="lhcc")``).

    Returns:
        The paths of the variables left trainable (e.g. ``lhc1/gate``).
    """
    gates = []
    for layer in model.layers:
        is_gated = isinstance(layer, LHC) and layer.gate_init is not None
        # BatchNorm must be frozen as a layer so that it also runs in inference mode.
        layer.trainable = is_gated
        for variable in layer.weights if is_gated else ():
            variable.trainable = variable.name == "gate"
            if variable.trainable:
                gates.append(variable.path)
    if not gates:
        raise ValueError(
            f"model '{model.name}' has no gated LHC modules; build it with variant='lhcc'"
        )
    return gates


def _module_positions(
    model: keras.Model, after: Sequence[str], caller: str, module: str
) -> tuple[list[str], dict[str, tuple[int, int, int]]]:
    """``after`` as a list, and the ``(H, W, C)`` output of every layer it names.

    Checks that ``model`` is functional and every named layer exists with a static 4D
    output; ``caller`` and ``module`` name the function and the module in the messages.
    """
    # Sequential and subclassed models have no graph of layer calls to rebuild.
    if isinstance(model, keras.Sequential) or not hasattr(model, "_run_through_graph"):
        raise ValueError(f"{caller} needs a functional Keras model, got {type(model).__name__}")
    if isinstance(after, str):
        raise ValueError(f"after must be a list of layer names, got the string {after!r}")
    after = list(after)
    layer_names = {layer.name for layer in model.layers}
    unknown = [name for name in after if name not in layer_names]
    if unknown:
        candidates = [layer.name for layer in model.layers if len(layer.output.shape) == 4]
        raise ValueError(
            f"model '{model.name}' has no layer(s) {unknown}; layers with 4D outputs include "
            f"{candidates[:3] + candidates[-3:]} ({len(candidates)} in all)"
        )
    shapes = {}
    for name in after:
        shape = tuple(model.get_layer(name).output.shape)
        if len(shape) != 4 or None in shape[1:]:
            raise ValueError(
                f"layer '{name}' outputs shape {shape}; {module} needs a static (B, H, W, C) map"
            )
        shapes[name] = shape[1:]
    return after, shapes


def _rebuild_with_modules(
    model: keras.Model, modules: Mapping[str, keras.layers.Layer]
) -> keras.Model:
    """``model``'s graph rebuilt with ``modules[name]`` applied to layer ``name``'s output.

    The layers are fresh copies of the same configuration with the original weights copied
    in, so the result shares nothing with ``model``; every consumer of a named layer's
    output reads the module's output instead.
    """

    def call_with_modules(layer, *args, **kwargs):
        output = layer(*args, **kwargs)
        return modules[layer.name](output) if layer.name in modules else output

    new_model = keras.models.clone_model(model, call_function=call_with_modules)
    for layer in model.layers:
        if layer.weights:
            new_model.get_layer(layer.name).set_weights(layer.get_weights())
    return new_model


def insert_lhc(
    model: keras.Model,
    after: Sequence[str],
    settings: Sequence[LHCBlockSettings | Mapping] | str = "derive",
) -> keras.Model:
    """Add LHC modules after named layers of a functional CNN (the paper's plug-in use).

    The functional graph is rebuilt with fresh layers of the same configuration and the
    original weights copied in, so the result is independent of ``model``. Every consumer
    of a named layer's output reads the LHC module's output instead. The modules are named
    ``lhc_after_<layer name>``. :func:`insert_attention` does the same for every module kind.

    Args:
        model: a functional Keras model (e.g. ``keras.applications.ResNet50V2``).
        after: names of layers with 4D ``(B, H, W, C)`` outputs.
        settings: one :class:`LHCBlockSettings` (or dict) per name in ``after``, or
            ``"derive"``: each module takes the heads of the paper block whose map size
            ``H*W`` is nearest (at 224x224) and is fitted as in :func:`derive_block_settings`.

    Returns:
        The new functional ``keras.Model``.
    """
    after, shapes = _module_positions(model, after, "insert_lhc", "LHC")
    if isinstance(settings, str):
        if settings != "derive":
            raise ValueError(f"settings must be a list of block settings or 'derive', got {settings!r}")
        settings = [_derive_one(shapes[name], _paper_reference(shapes[name]), name)[0] for name in after]
    if len(settings) != len(after):
        raise ValueError(f"settings has {len(settings)} entries but after names {len(after)} layers")
    modules = {
        name: LHC(**asdict(LHCBlockSettings.from_value(block)), name=f"lhc_after_{name}")
        for name, block in zip(after, settings, strict=True)
    }
    return _rebuild_with_modules(model, modules)


def _lhc_block_after(
    model: keras.Model, name: str, shape: tuple[int, int, int]
) -> LHCBlockSettings:
    """LHC settings for a module after layer ``name`` with output ``shape``.

    At a paper position of a ResNet34v2 (name in :data:`LHC_POSITIONS` and the map it has
    there) the block :func:`build_lhc_net` puts there; elsewhere :func:`insert_lhc`'s
    derivation.
    """
    input_shape = model.input_shape
    if name in LHC_POSITIONS and isinstance(input_shape, tuple) and len(input_shape) == 4:
        index = LHC_POSITIONS.index(name)
        try:
            paper_shape = lhc_feature_shapes(input_shape[1:])[index]
        except ValueError:  # an input of no static size is not a ResNet34v2 of build_resnet34v2
            paper_shape = None
        if paper_shape == shape:
            return derive_block_settings(input_shape[1:])[0][index]
    return _derive_one(shape, _paper_reference(shape), name)[0]


def insert_attention(
    model: keras.Model, kind: str, after: Sequence[str] | None = None, **settings
) -> keras.Model:
    """Add one attention module of ``kind`` after each named layer of a functional CNN.

    The comparison of issue #18: LHC and its channel-attention peers plugged in at the same
    places under one protocol. The graph is rebuilt as in :func:`insert_lhc` (fresh layers,
    original weights copied in, every consumer of a named layer reads the module's output),
    so the result is independent of ``model``. The modules are named
    ``<kind>_after_<layer name>`` (``lhc_after_<layer name>`` as :func:`insert_lhc` names them).

    Kinds (:data:`ATTENTION_KINDS`):

    - ``"lhc"``: :class:`lhc.layers.LHC` with local heads. At the paper's positions of a
      ResNet34v2 its settings are those :func:`build_lhc_net` uses (the paper's table at
      224x224); after other layers they are derived as :func:`insert_lhc` derives them.
    - ``"lhc_global"``: the same with ``head_layout="global"``, the comparison arm of
      section 2.2 (every head sees the whole map).
    - ``"se"``, ``"cbam"``, ``"eca"``: :class:`lhc.channel_attention.SqueezeExcitation`,
      :class:`~lhc.channel_attention.CBAM`, :class:`~lhc.channel_attention.ECA`; they start
      as the identity by default (``identity_start=True``).
    - ``"none"``: no module, an unchanged copy of ``model`` (the baseline arm).

    LHC starts as the identity only with ``value_initializer="zeros"``; its default keeps
    the paper's (and :func:`build_lhc_net`'s) Glorot value kernel. Pass it in ``settings`` to
    start every kind at the backbone's predictions.

    Args:
        model: a functional Keras model: ResNet34v2 (:func:`build_resnet34v2`) or any other
            functional CNN (e.g. ``keras.applications.ResNet50V2``).
        kind: one of :data:`ATTENTION_KINDS`.
        after: names of layers with static 4D ``(B, H, W, C)`` outputs; ``None`` means
            :data:`LHC_POSITIONS`, the five LHC positions of ResNet34v2 (paper figure 1).
        **settings: passed to every module's constructor, e.g. ``reduction=8`` (SE, CBAM),
            ``kernel_size=5`` (ECA), ``identity_start=False``; for the LHC kinds any
            :class:`lhc.layers.LHC` argument (``num_heads``, ``head_dim``, ...,
            ``value_initializer``), overriding the derived block settings. ``head_layout``
            is chosen by ``kind``, ``name`` by the position.

    Returns:
        The new functional ``keras.Model``.

    Raises:
        ValueError: an unknown kind, a missing layer or one without a static 4D output, a
            non-functional model, ``head_layout`` or ``name`` in ``settings``, or settings
            a module rejects.
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention kind {kind!r}; allowed kinds: {list(ATTENTION_KINDS)}")
    for fixed in ("name", "head_layout"):
        if fixed in settings:
            how = "by the position" if fixed == "name" else "by kind: 'lhc' (bands) or 'lhc_global'"
            raise ValueError(f"insert_attention sets '{fixed}' itself ({how}); remove it from settings")
    after, shapes = _module_positions(
        model, LHC_POSITIONS if after is None else after, "insert_attention", f"the '{kind}' module"
    )
    modules = {}
    positions = [] if kind == "none" else after  # "none": the rebuilt copy alone
    for name in positions:
        module_name = f"{kind}_after_{name}"
        if kind in ("lhc", "lhc_global"):
            block = asdict(_lhc_block_after(model, name, shapes[name]))
            head_layout = "bands" if kind == "lhc" else "global"
            modules[name] = LHC(**{**block, **settings}, head_layout=head_layout, name=module_name)
        else:
            modules[name] = _CHANNEL_ATTENTION_LAYERS[kind](**settings, name=module_name)
    return _rebuild_with_modules(model, modules)


def _paper_reference(shape: tuple[int, int, int]) -> LHCBlockSettings:
    """The paper block whose 224x224 map size is nearest (in log scale) to ``shape``'s."""
    paper_shapes = lhc_feature_shapes((PAPER_INPUT_SIZE, PAPER_INPUT_SIZE, 3))
    area = shape[0] * shape[1]
    index = min(
        range(len(PAPER_BLOCKS)),
        key=lambda i: abs(math.log(paper_shapes[i][0] * paper_shapes[i][1] / area)),
    )
    return PAPER_BLOCKS[index]
