"""The `seqops` command: `info` (build and runtime facts), `bench` (seqops against the baselines,
with tables, results.json and plots), `train` (the training demos)."""
import argparse
import os
import signal

import torch


def info() -> None:
    import seqops
    from seqops.ops import OP_NAMES, registered_devices

    b = seqops.build_info()
    lines = [
        ("seqops", seqops.__version__),
        ("torch (built against)", b["torch_version"]),
        ("torch (running)", torch.__version__),
        ("CUDA kernels compiled", f"yes, archs {';'.join(b['cuda_archs'])}" if b["cuda_kernels"] else "no"),
        ("CUDA device available", torch.cuda.get_device_name() if torch.cuda.is_available() else "no"),
        ("CPU vector ISAs compiled", ", ".join(b["cpu_isas"])),
        ("CPU vector ISA in use", torch.ops.seqops.cpu_isa()),
        ("threads", str(torch.get_num_threads())),
    ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")
    print("\nops (devices with a kernel):")
    op_width = max(len(op) for op in OP_NAMES) + len("seqops::")
    for op in OP_NAMES:
        print(f"  {'seqops::' + op:<{op_width}}  {', '.join(registered_devices(op)) or 'none'}")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}


def bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from seqops.bench import FAMILIES, run

    families = [f.strip() for f in args.ops.split(",") if f.strip()] if args.ops else list(FAMILIES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown op family {', '.join(unknown)} (choose from {', '.join(FAMILIES)})")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to this torch")
    profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    return run(families, args.device, DTYPES[args.dtype], profile, args.out)


TRAINERS = {"compressive": "seqops.training.compressive", "linformer": "seqops.training.linformer"}


def train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import importlib

    from seqops.training import common as training

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to this torch")
    if args.data is not None and not os.path.isfile(args.data):
        parser.error(f"--data: no such file: {args.data}")
    trainer = importlib.import_module(TRAINERS[args.model])
    checkpoint = args.checkpoint or os.path.join("checkpoints", f"{args.model}.pt")
    result = trainer.train(data_path=args.data, steps=args.steps, device=args.device, seed=args.seed,
                           checkpoint=checkpoint)
    for line in training.summary(args.model, result):
        print(line)
    print(f"validation loss {result['valid_loss']:.3f}; checkpoint {result.get('checkpoint', '-')}")
    print("sample:\n" + result["sample"])
    return 130 if result["interrupted"] else 0


def main(argv=None) -> int:
    # Behave like other command-line tools when the output is cut short (`seqops info | head`).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser(prog="seqops", description="seqops command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="build and runtime facts: versions, CUDA archs, CPU ISA, registered ops")
    b = sub.add_parser("bench", help="time seqops against eager PyTorch, SDPA, FlexAttention and the originals")
    b.add_argument("--ops", help="comma-separated op families (default: all)")
    b.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    b.add_argument("--dtype", choices=list(DTYPES), default="float32")
    b.add_argument("--quick", action="store_true", help="small sizes, few repeats: about a minute on 2 cores")
    b.add_argument("--out", help="directory for results.json and the PNG plots")
    b.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny sizes, for tests
    t = sub.add_parser("train", help="train a demo character-level language model (no download needed)")
    t.add_argument("--model", choices=list(TRAINERS), required=True)
    t.add_argument("--data", help="a text file to train on (default: the Python standard library's sources)")
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint", help="where to save the model (default: checkpoints/<model>.pt)")
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
        return 0
    if args.command == "train":
        return train(args, t)
    return bench(args, b)

