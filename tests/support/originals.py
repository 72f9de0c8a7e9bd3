"""The original packages the tests compare against (seqpool, linformer-pytorch,
positional-embeddings-pytorch, labml-nn).

A missing original skips those tests, with the reason, unless SEQOPS_REQUIRE_ORIGINALS=1 (CI
sets it, as it sets SEQOPS_REQUIRE_CPP), where it fails them. Only ImportError means "missing":
an original that is installed but raises anything else on import (a changed API, a broken
dependency) is an error of the test, never a skip.

The import names required: seqpool, linformer_pytorch, positional_embeddings_pytorch, labml and
labml_nn (labml_nn.transformers.compressive, .feed_forward, .utils, .xl.relative_mha).
"""
import importlib
import os
from types import ModuleType

import pytest

REQUIRE_ORIGINALS = os.environ.get("SEQOPS_REQUIRE_ORIGINALS") == "1"


def missing(what: str, error: ImportError):
    """Skips (or, under SEQOPS_REQUIRE_ORIGINALS=1, fails) the running test."""
    if REQUIRE_ORIGINALS:
        pytest.fail(f"{what} is required (SEQOPS_REQUIRE_ORIGINALS=1) but not importable: {error!r}",
                    pytrace=False)
    pytest.skip(f"{what} not installed (SEQOPS_REQUIRE_ORIGINALS=1 makes this a failure): {error}")


def import_original(name: str, package: str) -> ModuleType:
    """importlib.import_module(name); `package` is the pip name given in the skip reason."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"{package} ({name})", e)


def labml_modules():
    """labml_nn's (compressive module, FeedForward, RelativeMultiHeadAttention, subsequent_mask),
    imported as `seqops bench` imports them (labml-nn 0.5.1 beside labml 0.5.3)."""
    from seqops.bench.compressive_steps import import_labml
    try:
        return import_labml()
    except ImportError as e:
        missing("labml-nn and labml (labml_nn, labml)", e)
