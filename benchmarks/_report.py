"""What every benchmark ends with: its JSON report, stamped with the machine it ran on."""

from __future__ import annotations

import json

from lhc._io import write_text
from lhc.workbench import environment_summary


def emit(report: dict, out: str | None = None) -> str:
    """Print ``report`` as JSON with a ``machine`` entry; also write it to ``out`` if given."""
    import keras

    machine = {**environment_summary(), "keras_backend": keras.backend.backend()}
    text = json.dumps({**report, "machine": machine}, indent=2)
    print(text)
    if out:
        write_text(out, text + "\n")
    return text
