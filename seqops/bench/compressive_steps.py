"""One Compressive Transformer training step, seqops and labml_nn side by side (used by
`seqops bench --ops compressive` and benchmarks/bench_compressive.py).

A step = forward over a segment attending over full memories ([c_mem; mem; x]), the memory update
(FIFO, compression of the evicted entries, truncation), LM cross entropy + attention-
reconstruction loss, backward; no optimizer step. labml's side is labml_nn's modules plus its
trainer's merge_compress_memory logic, re-typed (experiment.py needs torchvision), sequence-first
as labml runs it. labml needs `pip install --no-deps labml-nn labml`.
"""
import torch
import torch.nn.functional as F
from torch import nn

VOCAB, RATE = 256, 4


def import_labml():
    from labml import tracker
    if not hasattr(tracker, "debug"):  # labml-nn 0.5.1 calls tracker.debug, labml 0.5.3 lacks it
        tracker.debug = lambda *args, **kwargs: None
    from labml_nn.transformers import compressive
    from labml_nn.transformers.feed_forward import FeedForward
    from labml_nn.transformers.utils import subsequent_mask
    from labml_nn.transformers.xl.relative_mha import RelativeMultiHeadAttention
    return compressive, FeedForward, RelativeMultiHeadAttention, subsequent_mask


class LabmlStep:
    """labml's AutoregressiveModel layout (src_embed, transformer, generator) and its trainer's
    step without the optimizer: model, merge_compress_memory, CE + reconstruction loss."""

    def __init__(self, d, heads, seq_len, layers, batch, d_ff):
        compressive, FeedForward, Attention, self.subsequent_mask = import_labml()
        layer = compressive.CompressiveTransformerLayer(
            d_model=d, self_attn=Attention(heads, d, 0.0), feed_forward=FeedForward(d, d_ff, 0.0),
            dropout_prob=0.0, compress=compressive.Conv1dCompression(RATE, d))
        self.model = nn.Module()
        self.model.src_embed = nn.Embedding(VOCAB, d)
        self.model.transformer = compressive.CompressiveTransformer(layer, layers)
        self.model.generator = nn.Linear(d, VOCAB)
        with torch.no_grad():  # labml zero-initializes the relative tables; make them count
            for name, p in self.model.named_parameters():
                if "pos" in name:
                    p.normal_(0, 0.02)
        self.loss = compressive.AttentionReconstructionLoss(self.model.transformer.layers)
        self.mem_len = self.c_mem_len = seq_len

    def set_memory(self, mem, c_mem):  # batch-first in, sequence-first kept
        self.mem = [m.transpose(0, 1).contiguous() for m in mem]
        self.c_mem = [c.transpose(0, 1).contiguous() for c in c_mem]

    def merge_compress_memory(self, new_mem):
        """labml experiment.py's Configs.merge_compress_memory, re-typed."""
        mem = [torch.cat((m, x), dim=0) for m, x in zip(self.mem, new_mem)]
        to_compress = []
        if len(mem[0]) > self.mem_len:
            n_old = (len(mem[0]) - self.mem_len + RATE - 1) // RATE * RATE
            to_compress = [m[:n_old] for m in mem]
            mem = [m[n_old:] for m in mem]
            new_c = [layer.compress(m) for layer, m in zip(self.model.transformer.layers, to_compress)]
            self.c_mem = [torch.cat((c, n), dim=0)[-self.c_mem_len:] for c, n in zip(self.c_mem, new_c)]
        self.mem = mem
        return to_compress

    def __call__(self, x, y):  # x, y (B, L) ids
        x, y = x.t(), y.t()
        L = x.shape[0]
        m_len = len(self.mem[0]) + len(self.c_mem[0])
        mask = self.subsequent_mask(L)
        mask = torch.cat((mask.new_ones(L, m_len, 1), mask), dim=1)
        out, new_mem = self.model.transformer(self.model.src_embed(x), self.mem, self.c_mem, mask)
        logits = self.model.generator(out)
        with torch.no_grad():
            to_compress = self.merge_compress_memory(new_mem)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        if to_compress:
            loss = loss + self.loss(new_mem, to_compress)
        loss.backward()
        return loss.detach()


class SeqopsStep:
    """CompressiveTransformerLM.segment_loss + backward."""

    def __init__(self, d, heads, seq_len, layers, batch, d_ff, labml_state=None):
        from seqops.nn import CompressiveTransformerLM, load_labml_state_dict
        self.model = CompressiveTransformerLM(VOCAB, d, layers, heads, d_ff, mem_len=seq_len,
                                              c_mem_len=seq_len, compression_rate=RATE)
        if labml_state is not None:
            load_labml_state_dict(self.model, labml_state)
        self.memory = self.model.new_memory()

    def set_memory(self, mem, c_mem):
        self.memory.mem, self.memory.c_mem = list(mem), list(c_mem)

    def __call__(self, x, y):
        out = self.model.segment_loss(x, y, self.memory)
        out.loss.backward()
        return out.loss.detach()


IMPLS = {"seqops": SeqopsStep, "labml": LabmlStep}


def steady_memories(d, seq_len, layers, batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    mem = [torch.randn(batch, seq_len, d, generator=g) for _ in range(layers)]
    c_mem = [torch.randn(batch, seq_len, d, generator=g) for _ in range(layers)]
    return mem, c_mem
