"""Drop-in namespaces named after the originals seqops re-implements.

Migrating is one import line::

    from seqpool import CVTSeqPool                  ->  from seqops.compat.seqpool import CVTSeqPool
    from linformer_pytorch import Linformer         ->  from seqops.compat.linformer_pytorch import Linformer
    from positional_embeddings_pytorch import ...   ->  from seqops.compat.positional_embeddings_pytorch import ...
    from modules.lama import LAMA                   ->  from seqops.compat.lama import LAMA
    from labml_nn.transformers.compressive import ...  ->  from seqops.compat.labml_compressive import ...

Each namespace exposes the original's public names (its ``__all__`` lists them), bound to
seqops' implementations (the same objects as ``seqops.nn``'s, except for the few small adapters
each namespace's docstring names and justifies). Names the original has but seqops does not
implement are absent (an ``ImportError`` / ``AttributeError`` names them), never stubbed.
Behaviour differs from the originals where the originals were broken; docs/compat.md lists
every difference with the test that pins it.
"""
from . import labml_compressive, lama, linformer_pytorch, positional_embeddings_pytorch, seqpool

__all__ = ["labml_compressive", "lama", "linformer_pytorch", "positional_embeddings_pytorch", "seqpool"]
