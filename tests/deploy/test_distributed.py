"""torch.distributed on this machine: examples/train_ddp.py under torchrun with 2 gloo processes
(DDP for LinformerLM and the compressive LM, FSDP2 for LinformerLM) ends with the parameters of
single-process training on the same global batches."""
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
import train_ddp  # noqa: E402

STEPS, GLOBAL_BATCH = 4, 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(EXAMPLES / "train_ddp.py"),
               "--steps", str(STEPS), "--global-batch", str(GLOBAL_BATCH), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("model, fsdp", [("linformer", False), ("compressive", False), ("linformer", True)])
def test_two_process_training_equals_single_process_training(model, fsdp, tmp_path):
    out = tmp_path / "params.pt"
    result = torchrun("--model", model, "--out", str(out), *(["--fsdp"] if fsdp else []))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    parallel = torch.load(out)

    single = train_ddp.build(model)
    train_ddp.train(single, train_ddp.global_batches(STEPS, GLOBAL_BATCH))
    expected = dict(single.named_parameters())
    assert parallel.keys() == expected.keys()
    for name, value in parallel.items():
        torch.testing.assert_close(value, expected[name].detach(), atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    initial = dict(train_ddp.build(model).named_parameters())
    assert any(not torch.equal(v, initial[n]) for n, v in parallel.items()), "nothing trained"


def test_fsdp_of_the_compressive_lm_is_refused_with_a_reason():
    result = torchrun("--model", "compressive", "--fsdp")
    assert result.returncode != 0
    assert "outside forward" in result.stdout + result.stderr
