"""Loads the compiled library and checks it was built against the running torch."""
import json
import os

import torch

_INFO_PATH = os.path.join(os.path.dirname(__file__), "_build_info.json")


def build_info() -> dict:
    """Facts recorded by setup.py when seqops._C was compiled."""
    try:
        with open(_INFO_PATH) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ImportError(
            "seqops: build information is missing; the package was not built. Install it with "
            "`pip install --no-build-isolation .` (or `-e .`) from the repository root."
        ) from None


def load_library() -> dict:
    info = build_info()
    if info["torch_version"] != torch.__version__:
        raise ImportError(
            f"seqops was compiled against torch {info['torch_version']} but torch "
            f"{torch.__version__} is running; rebuild with `pip install --no-build-isolation .`"
        )
    try:
        from . import _C  # noqa: F401  (registers the ops)
    except ImportError as e:
        raise ImportError(f"seqops: the compiled library seqops._C failed to load: {e}") from e
    return info
