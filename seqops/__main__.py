"""The `seqops` command. `seqops info` prints build and runtime facts."""
import argparse
import signal
import sys

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


def main(argv=None) -> None:
    # Behave like other command-line tools when the output is cut short (`seqops info | head`).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser(prog="seqops", description="seqops command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="build and runtime facts: versions, CUDA archs, CPU ISA, registered ops")
    args = parser.parse_args(argv)
    if args.command == "info":
        info()


if __name__ == "__main__":
    sys.exit(main())
