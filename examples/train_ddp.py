"""Data-parallel training of a seqops language model with torch.distributed: DDP, or FSDP2
(fully_shard) with --fsdp. gloo on CPU (nccl when CUDA is there). Each of the W ranks trains on
its 1/W of the rows of every global batch, so the run equals single-process training on the
global batch (tests/deploy/test_distributed.py checks it).

    torchrun --nproc_per_node 2 examples/train_ddp.py --model linformer --steps 5
    torchrun --nproc_per_node 2 examples/train_ddp.py --model compressive --fsdp --out params.pt

The compressive LM keeps its memories per row, so each rank's memory holds its own rows.
"""
import argparse
import os
from typing import List, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from seqops.nn import CompressiveTransformerLM, LinformerLM

VOCAB, LENGTH = 32, 16


class LinformerStep(nn.Module):
    """One training step's loss: next-token cross entropy of a LinformerLM."""

    skips_parameters = False

    def __init__(self) -> None:
        super().__init__()
        self.lm = LinformerLM(num_tokens=VOCAB, input_size=LENGTH, channels=32, dim_k=8, dim_ff=64, nhead=4,
                              depth=2, dropout=0.0, dropout_ff=0.0, dropout_tokens=0.0)

    def blocks(self) -> List[nn.Module]:
        return list(self.lm.linformer.seq)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(self.lm(x).flatten(0, 1), y.flatten())


class CompressiveStep(nn.Module):
    """One segment of a CompressiveTransformerLM (LM loss + reconstruction loss), carrying the
    memory from segment to segment. The compressor gets no gradient until the memory first
    overflows."""

    skips_parameters = True

    def __init__(self) -> None:
        super().__init__()
        self.lm = CompressiveTransformerLM(VOCAB, 32, 2, 4, 64, mem_len=8, c_mem_len=8, compression_rate=2)
        self.memory = self.lm.new_memory()

    def blocks(self) -> List[nn.Module]:
        return list(self.lm.transformer.layers)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.lm.segment_loss(x, y, self.memory).loss


STEPS = {"linformer": LinformerStep, "compressive": CompressiveStep}


def build(model: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return STEPS[model]()


def global_batches(steps: int, batch: int, seed: int = 1) -> List[Tuple[Tensor, Tensor]]:
    """(inputs, next-token targets) per step, (batch, LENGTH) each: consecutive windows of one
    random token stream per row, so the compressive memory sees a continuing text."""
    g = torch.Generator().manual_seed(seed)
    stream = torch.randint(0, VOCAB, (batch, steps * LENGTH + 1), generator=g)
    return [(stream[:, s * LENGTH:(s + 1) * LENGTH], stream[:, s * LENGTH + 1:(s + 1) * LENGTH + 1])
            for s in range(steps)]


def train(step: nn.Module, batches: List[Tuple[Tensor, Tensor]], lr: float = 0.05) -> List[float]:
    """Plain SGD over the batches; returns the losses."""
    optimizer = torch.optim.SGD(step.parameters(), lr=lr)
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = step(x, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def parallel(step: nn.Module, fsdp: bool) -> nn.Module:
    if fsdp:
        if isinstance(step, CompressiveStep):
            raise SystemExit("--fsdp supports the linformer model: the compressive LM runs its compressors "
                             "between segments, outside forward, where FSDP2 has resharded their weights; "
                             "use DDP")
        from torch.distributed.fsdp import fully_shard
        for block in step.blocks():
            fully_shard(block)
        return fully_shard(step)
    return nn.parallel.DistributedDataParallel(step, find_unused_parameters=step.skips_parameters)


def full_state(step: nn.Module) -> dict:
    """Every parameter as a full (unsharded) CPU tensor, named as in the unwrapped model."""
    inner = step.module if isinstance(step, nn.parallel.DistributedDataParallel) else step
    return {name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().cpu()
            for name, p in inner.named_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(STEPS), default="linformer")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--fsdp", action="store_true", help="FSDP2 (fully_shard) instead of DDP")
    parser.add_argument("--out", help="rank 0 saves the final parameters here (torch.save)")
    args = parser.parse_args()

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.global_batch % world:
        raise SystemExit(f"--global-batch ({args.global_batch}) must be a multiple of the world size ({world})")
    rows = slice(rank * args.global_batch // world, (rank + 1) * args.global_batch // world)
    step = parallel(build(args.model), args.fsdp)
    batches = [(x[rows], y[rows]) for x, y in global_batches(args.steps, args.global_batch)]
    losses = train(step, batches)
    state = full_state(step)
    if rank == 0:
        print(f"{args.model} {'FSDP2' if args.fsdp else 'DDP'} x{world}: losses " +
              " ".join(f"{loss:.4f}" for loss in losses))
        if args.out:
            torch.save(state, args.out)
    # Every rank done and the wrappers (DDP's reducer, FSDP2's DTensors) gone before the process
    # group: tearing gloo down under them can abort the process at exit.
    dist.barrier()
    del step, state
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
