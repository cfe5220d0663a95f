"""One stage's fit, on a small model: what :mod:`lhc.training.stage` prepares before it."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lhc.training.stage import build_compiled_state


def variables_created_while_tracing(build_first: bool) -> list[str]:
    """The names of the variables a compiled model's first ``fit`` creates inside a traced
    function (TensorFlow traces such a function a second time)."""
    tf = pytest.importorskip("tensorflow")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    images = np.random.default_rng(0).random((16, 8), dtype=np.float32)
    labels = keras.utils.to_categorical(np.arange(16) % 4, 4)
    if build_first:
        build_compiled_state(model, (images[:8], labels[:8]))
    created = []

    def creator(next_creator, **kwargs):
        if tf.inside_function():
            created.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    return created


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="only TensorFlow traces a variable-creating function twice")
def test_compiled_metrics_exist_before_the_first_traced_step():
    # Keras left alone creates the accuracy metric's variables in the first traced step ...
    assert sorted(variables_created_while_tracing(build_first=False)) == ["count", "total"]
    # ... and after build_compiled_state, nothing is created while tracing.
    assert variables_created_while_tracing(build_first=True) == []
