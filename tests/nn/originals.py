"""The original packages some module tests compare against (labml-nn, linformer-pytorch).

A missing original skips those tests, with the reason, unless SEQOPS_REQUIRE_ORIGINALS=1 (CI
sets it, as it sets SEQOPS_REQUIRE_CPP), where it fails them. Only ImportError means "missing":
an original that is installed but raises anything else on import (a changed API, a broken
dependency) is an error of the test, never a skip.

The import names required: labml, labml_nn (labml_nn.transformers.compressive,
labml_nn.transformers.feed_forward, labml_nn.transformers.utils,
labml_nn.transformers.xl.relative_mha) and linformer_pytorch.
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
