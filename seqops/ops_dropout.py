"""Moved to seqops.ops.dropout (seqops/ops/dropout.py); kept only for seqops.nn.dropout's import
until seqops/nn imports from seqops.ops."""
from .ops.dropout import dropout, dropout_rng  # noqa: F401
