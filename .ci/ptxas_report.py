"""The CUDA kernels' resources as ptxas reports them (nvcc -Xptxas -v output on stdin or in the
files named): one row per kernel instantiation and architecture with registers, stack, spill
stores / loads and static shared memory, the spilling ones first. CI prints it after its nvcc
compile check; BENCHMARKS.md records the numbers. Exit status 1 if a kernel named in --no-spills
(a substring of the demangled name) spills."""
import argparse
import re
import subprocess
import sys

ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse(text: str):
    rows, current = [], None
    for line in text.splitlines():
        if m := ENTRY.search(line):
            current = {"mangled": m.group(1), "arch": m.group(2), "stack": 0, "spill_st": 0, "spill_ld": 0}
        elif current and (m := FRAME.search(line)):
            current.update(stack=int(m.group(1)), spill_st=int(m.group(2)), spill_ld=int(m.group(3)))
        elif current and (m := USED.search(line)):
            current.update(registers=int(m.group(1)), smem=int(m.group(2) or 0))
            rows.append(current)
            current = None
    names = subprocess.run(["c++filt"], input="\n".join(r["mangled"] for r in rows), capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for row, name in zip(rows, names):
        row["name"] = re.sub(r"^void |\(.*\)$", "", name).replace("seqops::cuda::", "").replace("c10::", "")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="*", help="nvcc -Xptxas -v output (default: stdin)")
    parser.add_argument("--no-spills", action="append", default=[], metavar="KERNEL",
                        help="fail if a kernel whose name contains this spills")
    args = parser.parse_args()
    text = "".join(open(p).read() for p in args.logs) if args.logs else sys.stdin.read()
    rows = sorted(parse(text), key=lambda r: (-(r["spill_st"] + r["spill_ld"]), r["name"], r["arch"]))
    print(f"{'kernel':<90} {'arch':<6} {'regs':>4} {'stack':>5} {'spill st/ld':>11} {'smem':>6}")
    for r in rows:
        print(f"{r['name'][:90]:<90} {r['arch']:<6} {r['registers']:>4} {r['stack']:>5} "
              f"{r['spill_st']:>5}/{r['spill_ld']:<5} {r['smem']:>6}")
    spilling = [r for r in rows if r["spill_st"] + r["spill_ld"] > 0]
    print(f"{len(rows)} kernel instantiations, {len(spilling)} spill")
    bad = [r for r in spilling if any(k in r["name"] for k in args.no_spills)]
    for r in bad:
        print(f"FAIL {r['name']} ({r['arch']}) spills {r['spill_st']} / {r['spill_ld']} bytes", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
