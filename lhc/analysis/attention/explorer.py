"""The interactive attention explorer (ipywidgets, imported only when a widget is built)."""

from __future__ import annotations

import collections
import io
from collections.abc import Sequence

import keras
import numpy as np

from lhc.analysis.attention.collect import AttentionAnalysis, AttentionCollector, model_inputs
from lhc.analysis.attention.figures import attention_weights_figure, overlay_figure, scales_figure
from lhc.analysis.attention.maps import head_contribution_map
from lhc.plots import apply_style

__all__ = ["AttentionExplorer"]


class AttentionExplorer:
    """Browse attention maps image by image: static figures, and ipywidgets on request.

    The analysis of each image viewed is computed once and cached (the last ``cache_size``
    images); changing the module or head only redraws the figure. Widgets are created only by
    :meth:`widget`, so headless runs (tests, papermill) use :meth:`figure` alone.

    Args:
        model: a functional model with LHC layers.
        images: ``(N, ...)`` anything :func:`model_inputs` accepts, e.g. a test split's uint8
            ``(N, 48, 48)`` faces; converted one image at a time, when viewed.
        labels: int ``(N,)`` true classes.
        class_names: class index -> name.
        layer_names: LHC layers to offer; ``None``: all.
        show_images: ``False`` never draws a face: the contribution map is shown on its own.
        cache_size: how many images' analyses to keep.
    """

    def __init__(self, model: keras.Model, images: np.ndarray, labels: np.ndarray,
                 class_names: Sequence[str], layer_names: Sequence[str] | None = None,
                 show_images: bool = True, cache_size: int = 32):
        labels = np.asarray(labels)
        if len(labels) != len(images) or len(images) == 0:
            raise ValueError(f"images and labels must be non-empty and of equal length, got "
                             f"{len(images)} images and {len(labels)} labels")
        if labels.min() < 0 or labels.max() >= len(class_names):
            raise ValueError(f"labels must lie in [0, {len(class_names)}) for class names "
                             f"{list(class_names)}, got {labels.min()}..{labels.max()}")
        self.collector = AttentionCollector(model, layer_names)
        self.images, self.labels = images, labels
        self.class_names = tuple(class_names)
        self.show_images = show_images
        self.cache_size = cache_size
        self._cache: collections.OrderedDict[int, tuple] = collections.OrderedDict()

    @property
    def module_heads(self) -> dict[str, int]:
        """LHC layer name -> number of heads."""
        return {name: layer.num_heads for name, layer in self.collector.layers.items()}

    def view(self, image_index: int) -> tuple[np.ndarray, AttentionAnalysis]:
        """The model-ready image ``(S, S, 3)`` and its one-image analysis (cached)."""
        if not 0 <= image_index < len(self.images):
            raise ValueError(f"image_index {image_index} is outside 0..{len(self.images) - 1}")
        if image_index in self._cache:
            self._cache.move_to_end(image_index)
        else:
            image = model_inputs(self.collector.model, self.images[image_index:image_index + 1])
            self._cache[image_index] = (image[0], self.collector.collect(image))
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return self._cache[image_index]

    def figure(self, image_index: int, module: str, head: int):
        """The explorer's view as a static figure: contribution overlay, ``W_h``, ``T_h``.

        Returns:
            The matplotlib Figure.
        """
        import matplotlib.pyplot as plt

        apply_style()
        image, analysis = self.view(image_index)
        contribution = head_contribution_map(analysis, module, head, 0)
        fig, axes = plt.subplots(1, 3, figsize=(15.5, 4.4),
                                 gridspec_kw={"width_ratios": [1, 1.1, 1.5]})
        predicted = int(np.argmax(analysis.probabilities[0]))
        first, stop = contribution.band_rows
        overlay_figure(image if self.show_images else None,
                       contribution.upsampled if self.show_images else contribution.grid,
                       contribution.band_mask, f"{module} head {head}: rows {first}-{stop - 1}",
                       ax=axes[0])
        attention_weights_figure(analysis, module, head, 0, ax=axes[1])
        axes[1].set_title(f"W_h (eq. 15), {analysis[module].channels} channels")
        scales_figure(analysis, module, 0, head, ax=axes[2])
        axes[2].set_title("T_h (eq. 13), channels sorted")
        fig.suptitle(f"image {image_index}: true {self.class_names[self.labels[image_index]]}, "
                     f"predicted {self.class_names[predicted]} "
                     f"({analysis.probabilities[0, predicted]:.2f})")
        fig.tight_layout()
        return fig

    def widget(self):
        """ipywidgets controls (class filter, image, module, head) above the redrawn figure.

        The figure is rendered to PNG into an ``ipywidgets.Image``, which works in JupyterLab
        and needs no display to be built or updated.

        Returns:
            An ``ipywidgets.VBox``; display it in a notebook cell.
        """
        import ipywidgets as widgets
        import matplotlib.pyplot as plt

        class_filter = widgets.Dropdown(
            options=[("all classes", -1)] + [(name, k) for k, name in enumerate(self.class_names)],
            value=-1, description="class")
        picker = widgets.IntSlider(min=0, max=len(self.images) - 1, description="image",
                                   continuous_update=False)
        caption = widgets.Label()
        heads = self.module_heads
        module = widgets.Dropdown(options=list(heads), description="module")
        head = widgets.IntSlider(min=0, max=heads[module.value] - 1, description="head",
                                 continuous_update=False)
        picture = widgets.Image(format="png")
        # "quiet" holds back the redraws that resetting one control's value would trigger.
        state = {"indices": np.arange(len(self.images)), "quiet": False}

        def redraw(_=None):
            if state["quiet"]:
                return
            if not len(state["indices"]):
                caption.value = "no image of this class"
                return
            image_index = int(state["indices"][picker.value])
            caption.value = (f"#{image_index} ({self.class_names[self.labels[image_index]]}), "
                             f"{picker.value + 1} of {len(state['indices'])}")
            fig = self.figure(image_index, module.value, head.value)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=80)
            plt.close(fig)
            picture.value = buffer.getvalue()

        def filter_changed(_):
            wanted = class_filter.value
            state["indices"] = (np.arange(len(self.images)) if wanted < 0
                                else np.flatnonzero(self.labels == wanted))
            state["quiet"] = True
            picker.value = 0
            picker.max = max(len(state["indices"]) - 1, 0)
            picker.disabled = not len(state["indices"])
            state["quiet"] = False
            redraw()

        def module_changed(_):
            state["quiet"] = True
            head.value = 0
            head.max = heads[module.value] - 1
            state["quiet"] = False
            redraw()

        class_filter.observe(filter_changed, names="value")
        module.observe(module_changed, names="value")
        picker.observe(redraw, names="value")
        head.observe(redraw, names="value")
        redraw()
        return widgets.VBox([widgets.HBox([class_filter, picker, caption]),
                             widgets.HBox([module, head]), picture])
