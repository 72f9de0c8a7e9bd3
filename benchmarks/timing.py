"""The benchmark scripts' timing helpers live in seqops.bench.timing (shared with `seqops bench`)."""
from seqops.bench.timing import compare, markdown_table, peak_memory, sync  # noqa: F401
