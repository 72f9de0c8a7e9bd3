"""Train a character-level Compressive Transformer LM on this machine's Python standard library
sources (no download) or on any text file: progress bar, periodic loss, checkpoint, sample.

    OMP_NUM_THREADS=2 python examples/train_compressive.py [--data FILE] [--steps 2000]
        [--checkpoint checkpoints/compressive.pt] [--device cpu|cuda]

The loop lives in seqops.training.compressive.train (also behind `seqops train --model
compressive`); this script only parses arguments and prints the results.
"""
import argparse

from seqops.training import common as training
from seqops.training.compressive import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="a text file (default: the standard library's .py files)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", default="checkpoints/compressive.pt")
    args = parser.parse_args()
    result = train(args.data, steps=args.steps, device=args.device, checkpoint=args.checkpoint)
    for line in training.summary("compressive", result):
        print(line)
    print(f"held-out loss {result['valid_loss_before']:.3f} -> {result['valid_loss']:.3f} nats/char "
          f"({result['valid_bpc']:.2f} bits/char); checkpoint: {result['checkpoint']}")
    print(f"\nprompt:\n{result['prompt']}\n\nsample:\n{result['sample']}")


if __name__ == "__main__":
    main()
