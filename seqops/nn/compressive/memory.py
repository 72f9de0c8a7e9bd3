"""CompressiveMemory: the memory bookkeeping of a Compressive Transformer that labml leaves to its
trainer (experiment.py's merge_compress_memory), as an object: FIFO update, compression of the
oldest entries, truncation of the compressed memory, detaching, padding masks, and the tensors
the attention-reconstruction loss needs."""
from typing import List, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn


class ReconstructionInputs(NamedTuple):
    """What AttentionReconstructionLoss needs after an update that compressed: per layer, the
    segment's layer inputs ``h`` (B, Lq, D) (the queries), the memories that were just
    compressed ``mem`` (B, n * rate, D), oldest first, with their key-padding ``mask``
    (B, n * rate) (None: all valid), and ``compressed`` = compressor(mem) (B, n, D), attached to
    the compressor's parameters when grad mode was on (c_mem stores it detached), so the loss
    does not compress again."""
    h: List[Tensor]
    mem: List[Tensor]
    mask: Optional[Tensor]
    compressed: List[Tensor]


def _valid(mask: Optional[Tensor], batch: int, length: int, device: torch.device) -> Tensor:
    return mask if mask is not None else torch.ones(batch, length, dtype=torch.bool, device=device)


class CompressiveMemory:
    """Per-layer memories, oldest first: ``mem[i]`` (B, Lm, D) and ``c_mem[i]`` (B, Lc, D), with
    bool key-padding masks ``mem_mask`` (B, Lm) / ``c_mem_mask`` (B, Lc), None while every entry
    is valid.

    update(hidden, compressors, mask) after each segment:
      1. appends the detached hidden[i] (B, Lq, D) (layer i's input for the segment; mask (B, Lq)
         marks its valid tokens) to mem[i];
      2. once mem holds more than mem_len entries, the overflow's whole windows of
         compression_rate entries, oldest first, are compressed by compressors[i] and appended,
         detached, to c_mem[i]. The overflow's remainder (< compression_rate
         entries) stays in mem, uncompressed, until a later update completes its window -- the
         remainder='keep' policy of seqops.ops.compress, so nothing is dropped: right after an
         update mem_len <= len(mem) < mem_len + compression_rate (labml instead rounds the
         count up and compresses entries early). A compressed slot is valid when any entry of
         its window was;
      3. c_mem keeps its newest c_mem_len entries (older ones are dropped: the paper's design).
    It returns ReconstructionInputs when it compressed, else None. With c_mem_len == 0 nothing
    is compressed and mem keeps its newest mem_len entries (Transformer-XL's memory).
    """

    def __init__(self, mem_len: int, c_mem_len: int, compression_rate: int) -> None:
        if mem_len < 0 or c_mem_len < 0:
            raise ValueError(f"mem_len and c_mem_len must be >= 0, got {mem_len} and {c_mem_len}")
        if compression_rate < 1:
            raise ValueError(f"compression_rate must be >= 1, got {compression_rate}")
        self.mem_len = mem_len
        self.c_mem_len = c_mem_len
        self.compression_rate = compression_rate
        # Declared here, with their types, so that TorchScript can compile the class.
        self.mem: List[Tensor] = []
        self.c_mem: List[Tensor] = []
        self.mem_mask: Optional[Tensor] = None
        self.c_mem_mask: Optional[Tensor] = None

    def reset(self) -> None:
        """Forgets everything (a new document, or a new batch of streams)."""
        self.mem = []
        self.c_mem = []
        self.mem_mask = None
        self.c_mem_mask = None

    def __len__(self) -> int:
        """Key positions the memory adds in front of a segment: Lc + Lm."""
        return self.memory_length + self.compressed_length

    @property
    def memory_length(self) -> int:
        return self.mem[0].shape[1] if self.mem else 0

    @property
    def compressed_length(self) -> int:
        return self.c_mem[0].shape[1] if self.c_mem else 0

    def key_padding_mask(self, mask: Optional[Tensor], batch: int, length: int,
                         device: torch.device) -> Optional[Tensor]:
        """The key mask (B, Lc + Lm + length) of a segment with token mask ``mask`` (B, length)
        attending over this memory, or None when every key is valid."""
        if mask is None and self.mem_mask is None and self.c_mem_mask is None:
            return None
        return torch.cat([_valid(self.c_mem_mask, batch, self.compressed_length, device),
                          _valid(self.mem_mask, batch, self.memory_length, device),
                          _valid(mask, batch, length, device)], dim=1)

    @torch.jit.unused
    def update(self, hidden: Sequence[Tensor], compressors: Sequence[nn.Module],
               mask: Optional[Tensor] = None) -> Optional[ReconstructionInputs]:
        """Adds a segment (see the class doc); hidden and compressors have one entry per layer."""
        if self.mem and len(hidden) != len(self.mem):
            raise ValueError(f"hidden has {len(hidden)} layers, the memory {len(self.mem)}")
        if len(compressors) != len(hidden):
            raise ValueError(f"need one compressor per layer: {len(compressors)} for {len(hidden)} layers")
        batch, length, _ = hidden[0].shape
        device = hidden[0].device
        if self.mem and self.mem[0].shape[0] != batch:
            raise ValueError(f"the memory holds batch {self.mem[0].shape[0]}, the segment has {batch}; "
                             "call reset() before changing the batch")
        hidden = [h.detach() for h in hidden]
        mem = [torch.cat((m, h), 1) for m, h in zip(self.mem, hidden)] if self.mem else hidden
        mem_mask = None
        if mask is not None or self.mem_mask is not None:
            mem_mask = torch.cat((_valid(self.mem_mask, batch, self.memory_length, device),
                                  _valid(mask, batch, length, device)), 1)
        total = mem[0].shape[1]
        if self.c_mem_len == 0:                      # no compression: Transformer-XL's FIFO
            keep = min(total, self.mem_len)
            self.mem = [m[:, total - keep:] for m in mem]
            self.mem_mask = None if mem_mask is None else mem_mask[:, total - keep:]
            return None
        n_old = max(total - self.mem_len, 0) // self.compression_rate * self.compression_rate
        self.mem = [m[:, n_old:] for m in mem]
        self.mem_mask = None if mem_mask is None else mem_mask[:, n_old:]
        if n_old == 0:
            return None
        old = [m[:, :n_old] for m in mem]
        old_mask = None if mem_mask is None else mem_mask[:, :n_old]
        compressed = [f(o) for f, o in zip(compressors, old)]  # old is detached: only f's weights
        self._append_compressed([c.detach() for c in compressed], old_mask, batch, device)
        return ReconstructionInputs(hidden, old, old_mask, compressed)

    @torch.jit.unused
    def _append_compressed(self, new_c: List[Tensor], old_mask: Optional[Tensor], batch: int,
                           device: torch.device) -> None:
        c_mem = [torch.cat((c, n), 1) for c, n in zip(self.c_mem, new_c)] if self.c_mem else new_c
        c_mask = None
        if old_mask is not None or self.c_mem_mask is not None:
            windows = new_c[0].shape[1]
            new_mask = _valid(old_mask, batch, windows * self.compression_rate, device)
            c_mask = torch.cat((_valid(self.c_mem_mask, batch, self.compressed_length, device),
                                new_mask.view(batch, windows, self.compression_rate).any(-1)), 1)
        total = c_mem[0].shape[1]
        keep = min(total, self.c_mem_len)
        self.c_mem = [c[:, total - keep:] for c in c_mem]
        self.c_mem_mask = None if c_mask is None else c_mask[:, total - keep:]
