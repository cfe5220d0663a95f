"""Training profiles: the paper's four-stage protocol as YAML data, validated into dataclasses.

A profile (``lhc/profiles/<name>.yaml``, or any YAML file of the same shape) fixes everything a
run needs: input size, LHC block settings, mode, distribution strategy, precision, seed, data,
and per stage the model, optimizer, learning rate, batch size, augmentation, early-stopping
patience and epoch limit. Stages (paper section 3, ``REFERENCE.md``):

- ``stage1``..``stage3`` train ResNet34v2 (``modular`` mode); ``stage4`` builds LHC-Net from
  the trained backbone (``model: resnet34v2`` there gives the paper's set A: stage 4 without
  LHC modules); ``lhcc`` trains LHC-NetC's five gates from the trained LHC-Net.
- In ``standalone`` mode stages 1-3 train LHC-Net from the start with the stage's ResNet34v2
  trained alongside on the same data seeds; ``stage4`` is skipped and ``lhcc`` starts from the
  stage-3 LHC-Net.

Every key is required except those of :data:`PROFILE_DEFAULTS` (``lhc_value_init``:
``glorot_uniform``) and the stage keys of :data:`STAGE_DEFAULTS` (schedule, momentum, weight decay, label smoothing: the
paper's plain constant-rate optimizers and cross-entropy when left out), and no other key is
allowed; errors name the file, the line (1-based) and the key path, e.g.
``smoke.yaml, line 14: stages.stage1.batch_sise: unknown key``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lhc.training.registry import MODEL_BUILDERS

__all__ = [
    "MODELS",
    "STAGES",
    "DataSettings",
    "Profile",
    "ProfileError",
    "StageSettings",
    "available_profiles",
    "load_profile",
    "profile_from_dict",
]

STAGES = ("stage1", "stage2", "stage3", "stage4", "lhcc")
# The model registry's names (lhc.training.registry): resnet34v2, lhc_net, lhc_netc,
# lhc_net_global (full-map heads, the head-correlation comparison arm of section 2.2) and the
# channel-attention peers se_net, cbam_net, eca_net.
MODELS = tuple(MODEL_BUILDERS)
# Which models each stage may train (section docstring).
STAGE_MODELS = {
    "stage1": ("resnet34v2",), "stage2": ("resnet34v2",), "stage3": ("resnet34v2",),
    "stage4": ("lhc_net", "resnet34v2", "lhc_net_global", "se_net", "cbam_net", "eca_net"),
    "lhcc": ("lhc_netc",),
}
MODES = ("modular", "standalone")
STRATEGIES = ("auto", "none", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16")
LHC_VALUE_INITS = ("glorot_uniform", "zeros")
# Top-level keys a profile may leave out, with the value they then take: the original code's
# Glorot-uniform LHC value kernels.
PROFILE_DEFAULTS = {"lhc_value_init": "glorot_uniform"}
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")
# Stage keys a profile may leave out, with the value they then take: the paper's constant
# learning rate, plain SGD (Keras's default, which the original code uses), no weight decay,
# plain cross-entropy.
STAGE_DEFAULTS = {"schedule": "constant", "momentum": 0.0, "weight_decay": 0.0,
                  "label_smoothing": 0.0}
AUGMENTATION_NAMES = ("stage1", "stage2", "stage3", "stage4", "none")
BLOCK_KEYS = ("num_heads", "head_dim", "pool_size", "kernel_size", "scale_exponent")
# Five stride-2 steps take the input to the last LHC map; below 32 pixels that map vanishes.
MIN_INPUT_SIZE = 32


class ProfileError(ValueError):
    """An invalid profile, located by file, line (1-based) and key path."""


@dataclasses.dataclass(frozen=True)
class StageSettings:
    """One training stage (paper section 3, "Stage1".."Stage 4").

    Attributes:
        model: ``resnet34v2``, ``lhc_net``, ``lhc_netc``, ``lhc_net_global``, ``se_net``,
            ``cbam_net`` or ``eca_net`` (allowed values depend on the stage).
        optimizer: ``adam`` or ``sgd`` (Keras defaults otherwise: no momentum, as the paper's).
        learning_rate: constant learning rate.
        batch_size: global batch size (split over replicas under a distribution strategy).
        augmentation: a stage name (``stage1``..``stage4``, the paper's settings in
            :data:`lhc.data.pipeline.STAGE_AUGMENTATION`), ``none``, or a mapping of
            :class:`lhc.data.pipeline.Augmentation` fields.
        patience: early stopping on validation accuracy: epochs without improvement before
            the stage stops; the best epoch's weights are restored at the end of the stage.
        max_epochs: epoch limit of the stage.
        schedule: ``constant`` (the paper's) or ``cosine``: the learning rate decays along a
            half cosine to 1% of ``learning_rate`` over ``max_epochs`` epochs (a stage that
            early stopping ends sooner stops part way down). Optional, default ``constant``.
        momentum: SGD momentum (ignored by Adam). Optional, default 0 (the paper's plain SGD).
        weight_decay: decoupled weight decay of the optimizer. Optional, default 0 (none).
        label_smoothing: the cross-entropy target puts ``1 - label_smoothing`` on the true class
            and spreads ``label_smoothing`` evenly over all classes. Optional, default 0 (the
            paper's plain cross-entropy).
    """

    model: str
    optimizer: str
    learning_rate: float
    batch_size: int
    augmentation: str | Mapping[str, Any]
    patience: int
    max_epochs: int
    schedule: str = STAGE_DEFAULTS["schedule"]
    momentum: float = STAGE_DEFAULTS["momentum"]
    weight_decay: float = STAGE_DEFAULTS["weight_decay"]
    label_smoothing: float = STAGE_DEFAULTS["label_smoothing"]

    def make_augmentation(self):
        """The :class:`lhc.data.pipeline.Augmentation` of this stage, or None for ``none``."""
        from lhc.data.pipeline import STAGE_AUGMENTATION, augmentation_from_dict

        if isinstance(self.augmentation, Mapping):
            return augmentation_from_dict(self.augmentation)
        if self.augmentation == "none":
            return None
        return STAGE_AUGMENTATION[int(self.augmentation.removeprefix("stage"))]

    def make_optimizer(self, steps_per_epoch: int = 1):
        """A fresh Keras optimizer for this stage.

        Args:
            steps_per_epoch: optimizer steps in one epoch; sets the length of a ``cosine``
                schedule (``max_epochs * steps_per_epoch`` steps).
        """
        import keras

        rate = self.learning_rate
        if self.schedule == "cosine":
            rate = keras.optimizers.schedules.CosineDecay(
                self.learning_rate, decay_steps=self.max_epochs * max(1, steps_per_epoch),
                alpha=0.01)
        decay = self.weight_decay or None
        if self.optimizer == "adam":
            return keras.optimizers.Adam(rate, weight_decay=decay)
        return keras.optimizers.SGD(rate, momentum=self.momentum, weight_decay=decay)

    def make_loss(self):
        """The stage's training loss on integer labels and softmax outputs.

        Keras's sparse cross-entropy has no label smoothing, so a smoothed stage one-hot
        encodes the labels and uses the categorical form; without smoothing the two agree.
        """
        import keras

        if not self.label_smoothing:
            return "sparse_categorical_crossentropy"
        smoothing = self.label_smoothing

        def smoothed_sparse_crossentropy(labels, probabilities):
            # labels (B,) or (B, 1) integers -> one-hot (B, num_classes)
            labels = keras.ops.reshape(keras.ops.cast(labels, "int32"), (-1,))
            one_hot = keras.ops.one_hot(labels, probabilities.shape[-1])
            return keras.losses.categorical_crossentropy(one_hot, probabilities,
                                                         label_smoothing=smoothing)

        return smoothed_sparse_crossentropy


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Data of a run.

    Attributes:
        n: rows of the synthetic data set generated when no data path is given.
        carve_test: fraction of each class carved from train as a test split when the source
            has none (the shared FER2013 withholds PrivateTest), or None.
        paper_jpeg: feed training images through the paper's JPEG round trip
            (:func:`lhc.data.pipeline.paper_jpeg_cache`).
    """

    n: int
    carve_test: float | None
    paper_jpeg: bool


@dataclasses.dataclass(frozen=True)
class Profile:
    """A validated training profile (module docstring).

    Attributes:
        name: the profile's name (runs default to ``runs/<name>``).
        input_size: side of the square model input in pixels (the paper: 224).
        blocks: ``"derive"`` (:func:`lhc.models.derive_block_settings`) or five
            :class:`lhc.models.LHCBlockSettings`.
        mode: ``modular`` or ``standalone``.
        strategy: ``auto``, ``none``, ``mirrored``, ``multi_worker`` or ``tpu``.
        precision: ``float32`` or ``mixed_bfloat16``.
        seed: seeds weights, data order, augmentation and dropout.
        imagenet_weights: local h5 file of ImageNet backbone weights, or None (from scratch).
        lhc_value_init: the LHC modules' value-kernel initializer, ``glorot_uniform`` (the
            original code's; the default when left out) or ``zeros`` (modules start as the
            identity, :class:`lhc.layers.LHC`).
        data: :class:`DataSettings`.
        stages: stage name -> :class:`StageSettings`, for every name in :data:`STAGES`.
        source: the file the profile was read from (not part of its identity).
    """

    name: str
    input_size: int
    blocks: Any
    mode: str
    strategy: str
    precision: str
    seed: int
    imagenet_weights: str | None
    data: DataSettings
    stages: Mapping[str, StageSettings]
    lhc_value_init: str = PROFILE_DEFAULTS["lhc_value_init"]
    source: str = dataclasses.field(default="<dict>", compare=False)

    def resolved_blocks(self) -> tuple:
        """The five LHC block settings, derived for ``input_size`` when ``blocks`` is "derive"."""
        from lhc.models import derive_block_settings

        if self.blocks == "derive":
            return derive_block_settings(self.input_size_shape)[0]
        return tuple(self.blocks)

    @property
    def input_size_shape(self) -> tuple[int, int, int]:
        """``(input_size, input_size, 3)``."""
        return (self.input_size, self.input_size, 3)

    def replace(self, **changes) -> Profile:
        """A copy with top-level fields changed (validated again)."""
        return profile_from_dict({**self.to_dict(resolve=False), **changes}, self.source)

    def replace_stage(self, stage: str, **changes) -> Profile:
        """A copy with fields of one stage changed (validated again), e.g. ``model``."""
        raw = self.to_dict(resolve=False)
        if stage not in raw["stages"]:
            raise ProfileError(f"{self.source}: stages: no stage {stage!r}; stages: {list(STAGES)}")
        raw["stages"][stage] = {**raw["stages"][stage], **changes}
        return profile_from_dict(raw, self.source)

    def to_dict(self, resolve: bool = True) -> dict[str, Any]:
        """Plain data for YAML; ``resolve`` writes derived block settings out explicitly."""
        blocks = self.resolved_blocks() if resolve else self.blocks
        raw = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
               if field.name not in ("source", "blocks", "data", "stages")}
        raw["blocks"] = blocks if isinstance(blocks, str) else [dataclasses.asdict(b) for b in blocks]
        raw["data"] = dataclasses.asdict(self.data)
        raw["stages"] = {}
        for name, stage in self.stages.items():
            settings = dataclasses.asdict(stage)
            if isinstance(stage.augmentation, Mapping):
                settings["augmentation"] = dict(stage.augmentation)
            raw["stages"][name] = settings
        return raw

    def to_yaml(self, resolve: bool = True) -> str:
        """The profile as YAML text, readable by :func:`load_profile`."""
        return yaml.safe_dump(self.to_dict(resolve), sort_keys=False)


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``lhc/profiles``."""
    folder = resources.files("lhc") / "profiles"
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir()
                  if entry.name.endswith(".yaml"))


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """Read and validate a profile: a shipped name (``paper``, ``cpu``, ``smoke``) or a YAML path.

    Args:
        name_or_path: profile name or path of a YAML file.

    Returns:
        The validated :class:`Profile`.

    Raises:
        ProfileError: unknown name, unreadable YAML, or invalid content (file, line, key path).
    """
    path = Path(name_or_path)
    if not path.is_file():
        name = str(name_or_path)
        if name not in available_profiles():
            raise ProfileError(f"no profile file {name!r} and no shipped profile of that name; "
                               f"shipped profiles: {available_profiles()}")
        path = Path(str(resources.files("lhc") / "profiles" / f"{name}.yaml"))
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        raise ProfileError(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    lines: dict[tuple, int] = {}
    raw = _construct(node, (), lines) if node is not None else None
    return profile_from_dict(raw, str(path), lines)


def _construct(node, path: tuple, lines: dict[tuple, int]):
    """Python data from a YAML node, noting the 1-based line of every mapping key and item."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            # Every key of the schema is text; a scalar key's source text is that text.
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            result[key] = _construct(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, index), lines) for index, item in enumerate(node.value)]
    return yaml.SafeLoader("").construct_object(node)


class _Checker:
    """Raises :class:`ProfileError` with the file, the line and the key path."""

    def __init__(self, source: str, lines: Mapping[tuple, int]):
        self.source, self.lines = source, lines

    def fail(self, path: tuple, problem: str):
        line = next((self.lines[path[:end]] for end in range(len(path), -1, -1)
                     if path[:end] in self.lines), None)
        where = self.source if line is None else f"{self.source}, line {line}"
        key = ".".join(str(part) for part in path) or "profile"
        raise ProfileError(f"{where}: {key}: {problem}")

    def mapping(self, value, path: tuple, keys: tuple[str, ...],
                optional: tuple[str, ...] = ()) -> Mapping:
        if not isinstance(value, Mapping):
            self.fail(path, f"expected a mapping with keys {list(keys)}, got {value!r}")
        for key in value:
            if key not in keys:
                self.fail((*path, key), f"unknown key; expected one of {list(keys)}")
        missing = [key for key in keys if key not in value and key not in optional]
        if missing:
            self.fail(path, f"missing key(s) {missing}")
        return value

    def choice(self, value, path: tuple, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            self.fail(path, f"expected one of {list(allowed)}, got {value!r}")
        return value

    def integer(self, value, path: tuple, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(path, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def positive_number(self, value, path: tuple) -> float:
        if isinstance(value, str):
            self.fail(path, f"expected a positive number, got the text {value!r} (YAML reads "
                            "1e-4 as text: write 1.0e-4)")
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value <= 0):
            self.fail(path, f"expected a positive number, got {value!r}")
        return float(value)


def profile_from_dict(raw: Any, source: str = "<dict>",
                      lines: Mapping[tuple, int] | None = None) -> Profile:
    """Validate plain profile data (as read from YAML) into a :class:`Profile`.

    Args:
        raw: the mapping.
        source: the file name errors name.
        lines: key path -> 1-based line, for error messages.

    Returns:
        The validated :class:`Profile`.

    Raises:
        ProfileError: naming the file, line and key path of the first problem.
    """
    check = _Checker(source, lines or {})
    top_keys = tuple(field.name for field in dataclasses.fields(Profile) if field.name != "source")
    raw = {**PROFILE_DEFAULTS, **check.mapping(raw, (), top_keys, tuple(PROFILE_DEFAULTS))}
    name = raw["name"]
    if not isinstance(name, str) or not name or "/" in name:
        check.fail(("name",), f"expected a non-empty name without '/', got {name!r}")
    input_size = check.integer(raw["input_size"], ("input_size",), MIN_INPUT_SIZE)
    check.mapping(raw["stages"], ("stages",), STAGES)
    weights = raw["imagenet_weights"]
    if weights is not None and not isinstance(weights, str):
        check.fail(("imagenet_weights",), f"expected a file path or null, got {weights!r}")
    return Profile(
        name=name,
        input_size=input_size,
        blocks=_blocks(raw["blocks"], input_size, check),
        mode=check.choice(raw["mode"], ("mode",), MODES),
        strategy=check.choice(raw["strategy"], ("strategy",), STRATEGIES),
        precision=check.choice(raw["precision"], ("precision",), PRECISIONS),
        seed=check.integer(raw["seed"], ("seed",), 0),
        imagenet_weights=weights,
        data=_data(raw["data"], check),
        stages={stage: _stage(raw["stages"], stage, check) for stage in STAGES},
        lhc_value_init=check.choice(raw["lhc_value_init"], ("lhc_value_init",), LHC_VALUE_INITS),
        source=source,
    )


def _blocks(value, input_size: int, check: _Checker):
    from lhc.models import LHC_POSITIONS, LHCBlockSettings, lhc_feature_shapes

    if value == "derive":
        return value
    if not isinstance(value, list) or len(value) != len(LHC_POSITIONS):
        check.fail(("blocks",), f"expected 'derive' or a list of 5 block settings (one per LHC "
                                f"module), got {value!r}")
    maps = lhc_feature_shapes((input_size, input_size, 3))
    blocks = []
    for index, (block, (height, width, _)) in enumerate(zip(value, maps, strict=True)):
        path = ("blocks", index)
        check.mapping(block, path, BLOCK_KEYS)
        check.integer(block["num_heads"], (*path, "num_heads"), 1)
        check.integer(block["head_dim"], (*path, "head_dim"), 1)
        check.integer(block["pool_size"], (*path, "pool_size"), 1)
        check.integer(block["kernel_size"], (*path, "kernel_size"), 1)
        scale = block["scale_exponent"]
        if isinstance(scale, bool) or not isinstance(scale, int | float) or scale < 0:
            check.fail((*path, "scale_exponent"), f"expected a number >= 0, got {scale!r}")
        if (height * width) % block["num_heads"]:
            check.fail((*path, "num_heads"), f"{block['num_heads']} heads do not divide "
                       f"H*W = {height}x{width} = {height * width} of LHC module {index + 1} at "
                       f"input size {input_size}")
        blocks.append(LHCBlockSettings.from_value({**block, "scale_exponent": float(scale)}))
    return tuple(blocks)


def _data(value, check: _Checker) -> DataSettings:
    keys = tuple(field.name for field in dataclasses.fields(DataSettings))
    check.mapping(value, ("data",), keys)
    carve = value["carve_test"]
    if carve is not None and (isinstance(carve, bool) or not isinstance(carve, int | float)
                              or not 0 < carve < 1):
        check.fail(("data", "carve_test"), f"expected a fraction in (0, 1) or null, got {carve!r}")
    if not isinstance(value["paper_jpeg"], bool):
        check.fail(("data", "paper_jpeg"), f"expected true or false, got {value['paper_jpeg']!r}")
    return DataSettings(n=check.integer(value["n"], ("data", "n"), 10),
                        carve_test=carve, paper_jpeg=value["paper_jpeg"])


def _stage(stages: Mapping, stage: str, check: _Checker) -> StageSettings:
    from lhc.data.pipeline import augmentation_from_dict

    path = ("stages", stage)
    keys = tuple(field.name for field in dataclasses.fields(StageSettings))
    value = {**STAGE_DEFAULTS, **check.mapping(stages[stage], path, keys, tuple(STAGE_DEFAULTS))}
    for key in ("momentum", "weight_decay", "label_smoothing"):
        number = value[key]
        if isinstance(number, bool) or not isinstance(number, int | float) or not 0 <= number < 1:
            check.fail((*path, key), f"expected a number in [0, 1), got {number!r}")
    augmentation = value["augmentation"]
    if isinstance(augmentation, Mapping):
        try:
            augmentation_from_dict(augmentation)
        except ValueError as error:
            check.fail((*path, "augmentation"), str(error))
    else:
        check.choice(augmentation, (*path, "augmentation"), AUGMENTATION_NAMES)
    return StageSettings(
        model=check.choice(value["model"], (*path, "model"), STAGE_MODELS[stage]),
        optimizer=check.choice(value["optimizer"], (*path, "optimizer"), OPTIMIZERS),
        learning_rate=check.positive_number(value["learning_rate"], (*path, "learning_rate")),
        batch_size=check.integer(value["batch_size"], (*path, "batch_size"), 1),
        augmentation=augmentation,
        patience=check.integer(value["patience"], (*path, "patience"), 1),
        max_epochs=check.integer(value["max_epochs"], (*path, "max_epochs"), 1),
        schedule=check.choice(value["schedule"], (*path, "schedule"), SCHEDULES),
        momentum=float(value["momentum"]),
        weight_decay=float(value["weight_decay"]),
        label_smoothing=float(value["label_smoothing"]),
    )
