"""Adapters that plug seqops' kernels into other libraries. Each submodule imports its library
only when imported itself, so ``import seqops`` never needs them:

    seqops.integrations.transformers   an attention implementation for Hugging Face transformers
                                       (``pip install seqops[hf]``; call its ``register()``)
"""
