"""seqops.compat: each namespace exposes exactly the original's public names, bound to seqops' objects.

Against the installed original where it is installable (see docs/compat.md for the pip lines),
and against a written list always (LAMA has no package)."""
import importlib
import inspect

import pytest

import seqops.nn
from support.originals import import_original, labml_modules
from seqops import compat

# The names each namespace must expose (docs/compat.md explains every absence).
EXPECTED = {
    "seqpool": {"CVTSeqPool", "MeanSeqPool"},
    "linformer_pytorch": {"Linformer", "LinformerLM", "LinformerEncDec", "MHAttention", "LinearAttentionHead",
                          "FeedForward", "PositionalEmbedding", "get_EF", "Padder", "Visualizer"},
    "positional_embeddings_pytorch": {"PositionalEmbedding", "SinusoidalPositionalEmbedding",
                                      "LearnedPositionalEmbedding", "TransformerXLPositionalEmbedding",
                                      "T5PositionalEmbedding", "UnifiedPositionalEmbedding", "TUPE",
                                      "EnformerPositionalEmbedding"},
    "lama": {"LAMA", "LAMAEncoder", "LAMAPooler"},
    "labml_compressive": {"Conv1dCompression", "CompressiveTransformerLayer", "CompressiveTransformer",
                          "AttentionReconstructionLoss", "RelativeMultiHeadAttention", "FeedForward"},
}

# Which seqops.nn object each name is (None: an adapter subclass of the named seqops.nn class).
SAME_OBJECT = {
    "seqpool": {"CVTSeqPool": "CVTSeqPool", "MeanSeqPool": "MeanSeqPool"},
    "linformer_pytorch": {"PositionalEmbedding": "LinformerPositionalEmbedding",
                          **{n: n for n in EXPECTED["linformer_pytorch"] - {"PositionalEmbedding"}}},
    "positional_embeddings_pytorch": {**{n: n for n in EXPECTED["positional_embeddings_pytorch"] - {"TUPE"}}},
    "lama": {},
    "labml_compressive": {"FeedForward": "CompressiveFeedForward",
                          **{n: n for n in EXPECTED["labml_compressive"] - {"FeedForward"}}},
}
ADAPTERS = {"positional_embeddings_pytorch": {"TUPE": "UnifiedPositionalEmbedding"},
            "lama": {"LAMA": "LAMA", "LAMAEncoder": "LAMAEncoder", "LAMAPooler": "LAMAPooler"}}


def public_names(module):
    """A user's view of a module: its non-underscore attributes that are not submodules."""
    return {n for n in dir(module) if not n.startswith("_") and not inspect.ismodule(getattr(module, n))}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_namespace_exposes_exactly_the_expected_names(name):
    module = importlib.import_module(f"seqops.compat.{name}")
    assert set(module.__all__) == EXPECTED[name]
    assert len(module.__all__) == len(set(module.__all__))
    assert public_names(module) == EXPECTED[name], "helper names leak into the namespace"
    assert module.__doc__ and "absent" in module.__doc__.lower()  # says what the original has and we lack


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_names_are_seqops_objects_or_documented_adapters(name):
    module = importlib.import_module(f"seqops.compat.{name}")
    for public, target in SAME_OBJECT[name].items():
        assert getattr(module, public) is getattr(seqops.nn, target), public
    for public, base in ADAPTERS.get(name, {}).items():
        obj = getattr(module, public)
        assert obj is not getattr(seqops.nn, base) and issubclass(obj, getattr(seqops.nn, base)), public
    assert set(SAME_OBJECT[name]) | set(ADAPTERS.get(name, {})) == EXPECTED[name]


def test_compat_package_lists_its_namespaces():
    assert set(compat.__all__) == set(EXPECTED)
    for name in EXPECTED:
        assert getattr(compat, name) is importlib.import_module(f"seqops.compat.{name}")


def test_against_installed_seqpool():
    original = import_original("seqpool", "seqpool")
    assert public_names(original) == EXPECTED["seqpool"]


def test_against_installed_linformer_pytorch():
    original = import_original("linformer_pytorch", "linformer-pytorch")
    assert public_names(original) == EXPECTED["linformer_pytorch"]


def test_against_installed_positional_embeddings_pytorch():
    original = import_original("positional_embeddings_pytorch", "positional-embeddings-pytorch")
    # PyPI 0.0.1 predates HEAD's rename TUPE -> UnifiedPositionalEmbedding; we expose both names.
    assert public_names(original) == EXPECTED["positional_embeddings_pytorch"] - {"UnifiedPositionalEmbedding"}


def test_against_installed_labml_compressive():
    original = labml_modules()[0]
    defined = {n for n in public_names(original)
               if getattr(getattr(original, n), "__module__", "") == original.__name__}
    assert defined == {"Conv1dCompression", "CompressiveTransformerLayer", "CompressiveTransformer",
                       "AttentionReconstructionLoss"}
    imported = public_names(original) - defined
    # What the module imports (besides torch's modules): the two sublayers we mirror, two helpers we
    # leave out, and typing names.
    assert imported == {"RelativeMultiHeadAttention", "FeedForward", "PrepareForMultiHeadAttention",
                        "clone_module_list", "List", "Optional"}
    assert EXPECTED["labml_compressive"] == defined | {"RelativeMultiHeadAttention", "FeedForward"}


@pytest.mark.parametrize("name,missing", [("linformer_pytorch", "gen_causal_mask"),
                                          ("positional_embeddings_pytorch", "DountUnifiedPositionalEmbedding"),
                                          ("labml_compressive", "AutoregressiveModel"),
                                          ("seqpool", "HelperModule")])
def test_unimplemented_names_are_absent_not_stubbed(name, missing):
    with pytest.raises(ImportError, match=missing):
        exec(f"from seqops.compat.{name} import {missing}", {})
