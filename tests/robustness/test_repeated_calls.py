"""Long-running use: no memory growth over 1000 calls (forward and backward) of each op, and
correct results when several Python threads call the ops at once."""
import threading

import pytest
import torch

from support import kernel_context
from support.op_cases import CASES, CATALOG_DEVICES, Sizes, input_grads, with_grads
from test_determinism import forward_backward


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.parametrize("name", list(CASES))
def test_no_memory_growth_over_1000_calls(name):
    # CPU only: resident memory is the host's (a device allocator's growth would need its own probe).
    case = CASES[name]
    # Large enough that leaking any one output or saved tensor per call (>= 32 KiB) would show.
    kw = case.inputs(Sizes(batch=2, length=256, length_q=64, dim=32, heads=2), torch.Generator().manual_seed(0))

    def call():
        args = with_grads(case, kw)
        input_grads(case, args, case.run(**args))

    for _ in range(100):  # warm up the allocator and the thread pool
        call()
    before = resident_bytes()
    for _ in range(1000):
        call()
    growth = resident_bytes() - before
    assert growth < 4 * 2 ** 20, f"{name}: resident memory grew by {growth / 2 ** 20:.1f} MiB over 1000 calls"


@pytest.mark.parametrize("device", CATALOG_DEVICES)
def test_concurrent_calls_from_python_threads_give_the_single_thread_results(device):
    names = list(CASES)
    expected = {name: forward_backward(name, device) for name in names}
    failures = []

    # One emulated thread order per call in the threads: the orders' agreement is checked by
    # every other emulated test, here only the interleaving of the Python threads matters.
    context = kernel_context(orders=("random",))

    def worker(offset: int):
        with context():
            run(offset)

    def run(offset: int):
        for i in range(len(names)):
            name = names[(i + offset) % len(names)]
            for a, b in zip(forward_backward(name, device), expected[name]):
                if not torch.equal(a, b):
                    failures.append(name)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not failures, f"results differ under concurrency: {sorted(set(failures))}"
