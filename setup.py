"""Build seqops._C against the torch that is already installed.

Environment knobs:
  FORCE_CUDA=1            build the CUDA kernels even if torch has no CUDA (needs nvcc)
  SEQOPS_NO_CUDA=1        never build the CUDA kernels
  TORCH_CUDA_ARCH_LIST    CUDA archs (default "8.0;9.0+PTX")
  MAX_JOBS                parallel compile jobs (honoured by torch's ninja build)
  DEBUG=1                 -O0 -g

Objects are kept in build/objects whichever way the build runs (editable install, wheel,
build_ext), so a rebuild compiles only what changed; delete the folder for a clean build.
"""
import glob
import json
import os
import platform
import sys

from setuptools import setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # an isolated build environment has no torch
    sys.exit(
        "seqops: torch is not importable in this build environment. seqops must be compiled against "
        "the torch you run it with, so build without isolation:\n"
        "    pip install torch==2.13.0\n"
        "    pip install --no-build-isolation .\n"
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"

# The vector-primitive file is compiled once per CPU ISA into its own namespace
# (seqops::cpu::<ISA>), and the fastest one the running CPU supports is picked at run time.
ISA_SOURCE = "csrc/common/cpu/vector_primitives.cpp"
IS_X86 = platform.machine().lower() in ("x86_64", "amd64")
CPU_ISAS = {"DEFAULT": []}
if IS_X86:
    CPU_ISAS["AVX2"] = ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2"]
    CPU_ISAS["AVX512"] = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
                          "-DCPU_CAPABILITY_AVX512"]


def want_cuda():
    if os.environ.get("SEQOPS_NO_CUDA") == "1":
        return False
    if os.environ.get("FORCE_CUDA") == "1":
        return True
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


class BuildWithIsaVariants(cpp_extension.BuildExtension):
    """Compiles ISA_SOURCE once per CPU ISA with its own flags, then links the objects in."""

    def finalize_options(self):
        super().finalize_options()
        # One object folder for every route (editable install, wheel, build_ext): ninja then
        # recompiles only what changed. An editable install would otherwise compile everything
        # in a fresh temporary folder each time, and `pip wheel` after it compile it all again.
        self.build_temp = os.path.join(ROOT, "build", "objects")

    def build_extension(self, ext):
        extra = ext.extra_compile_args
        cxx_args = list(extra["cxx"] if isinstance(extra, dict) else extra)
        for isa, flags in CPU_ISAS.items():
            args = cxx_args + flags + [f"-DCPU_CAPABILITY={isa}"]
            post = {"cxx": args, "nvcc": []} if isinstance(extra, dict) else args
            ext.extra_objects += self.compiler.compile(
                [os.path.join(ROOT, ISA_SOURCE)],
                output_dir=os.path.join(self.build_temp, "isa", isa),
                macros=ext.define_macros,
                include_dirs=ext.include_dirs,
                extra_postargs=post,
            )
        super().build_extension(ext)


def write_build_info(with_cuda, archs):
    info = {
        "version": "0.1.0",
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_kernels": with_cuda,
        "cuda_archs": archs if with_cuda else [],
        "cpu_isas": list(CPU_ISAS),
    }
    with open(os.path.join(ROOT, "seqops", "_build_info.json"), "w") as f:
        json.dump(info, f, indent=2)


def make_extension():
    with_cuda = want_cuda()
    debug = os.environ.get("DEBUG") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # -fopenmp: at::parallel_for is an inline OpenMP loop; without it every kernel runs serially.
    cxx = ["-std=c++20", "-fopenmp", "-Wall", "-Wno-unused-function", "-Wno-psabi"] + opt
    cxx += ["-DCPU_ISA_" + isa for isa in CPU_ISAS]  # which ISA namespaces exist
    # One folder per op family (csrc/<family>/{cpu,cuda}/) plus csrc/common/; includes are
    # written from csrc/ ("common/checks.h", "attention/attention.h").
    sources = [s for s in glob.glob("csrc/**/*.cpp", recursive=True) if s != ISA_SOURCE]
    macros = [("SEQOPS_PYTHON_MODULE", None)]
    archs = []
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
        archs = os.environ["TORCH_CUDA_ARCH_LIST"].replace(" ", ";").split(";")
        sources += glob.glob("csrc/**/*.cu", recursive=True)
        macros.append(("SEQOPS_WITH_CUDA", None))
        nvcc = ["-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"] + opt
        ext = cpp_extension.CUDAExtension(
            "seqops._C", sources, include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=macros, extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=["-fopenmp"])
    else:
        # The CUDA helper .cpp (stream, device guard) only builds with a CUDA torch: every
        # csrc/**/cuda/ folder is left out.
        sources = [s for s in sources if "cuda" not in s.split(os.sep)[:-1]]
        ext = cpp_extension.CppExtension(
            "seqops._C", sources, include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=macros, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    write_build_info(with_cuda, archs)
    return ext


setup(
    ext_modules=[make_extension()],
    cmdclass={"build_ext": BuildWithIsaVariants.with_options(use_ninja=True)},
)
