"""Device, dtype and process handling that the CPU training tests do not reach: GPU dtype and peak rules,
vocabulary padding, the logger's teardown, one clock and per-rank randomness under torchrun."""
import os
import sys

import pytest
import torch
import torch.distributed as dist

from conftest import ROOT, TINY, read_log, run_script, run_train
from model import GPT, GPTConfig, padded_vocab
from seedgpt.generate import generate
from seedgpt.optim import newton_schulz
from seedgpt.runtime import Runtime, fast_matmul_dtype, gpu_peak_flops, peak_flops, pick_dtype, setup_runtime


# each figure as its data sheet prints it: NVIDIA gives the Hopper, L4 and the sparse half of the A100, L40S
# tensor-core figures "with sparsity", twice the dense rate that real training gets
SPARSE = 2


@pytest.mark.parametrize('name,dtype,flops', [
    ('NVIDIA H100 80GB HBM3', 'bfloat16', 1979e12 / SPARSE), ('NVIDIA H100 80GB HBM3', 'float32', 989e12 / SPARSE),
    ('NVIDIA H100 PCIe', 'bfloat16', 1513e12 / SPARSE), ('NVIDIA H100 PCIe', 'float32', 756e12 / SPARSE),
    ('NVIDIA H100 NVL', 'bfloat16', 1671e12 / SPARSE), ('NVIDIA H200', 'bfloat16', 1979e12 / SPARSE),
    ('NVIDIA H200', 'float32', 989e12 / SPARSE), ('NVIDIA A100-SXM4-80GB', 'bfloat16', 312e12),
    ('NVIDIA A100-SXM4-80GB', 'float32', 156e12), ('NVIDIA A100-PCIE-40GB', 'float32', 156e12),
    ('NVIDIA L40S', 'bfloat16', 362.05e12), ('NVIDIA L40S', 'float32', 366e12 / SPARSE),
    ('NVIDIA L4', 'bfloat16', 242e12 / SPARSE), ('NVIDIA L4', 'float32', 120e12 / SPARSE),
    # no TF32 on these two: fp32 is the CUDA cores' figure, far below half the fp16 one
    ('Tesla V100-SXM2-16GB', 'float16', 125e12), ('Tesla V100-SXM2-16GB', 'float32', 15.7e12),
    ('Tesla V100-PCIE-32GB', 'float16', 112e12), ('Tesla V100-PCIE-32GB', 'float32', 14e12),
    ('Tesla T4', 'float16', 65e12), ('Tesla T4', 'float32', 8.1e12),
    # whole words only: none of these is a GPU above
    ('NVIDIA GeForce GTX 1080', 'float16', None), ('NVIDIA L40', 'bfloat16', None),
    ('Tesla V100S-PCIE-32GB', 'float32', None)])
def test_gpu_peak_is_the_data_sheets(monkeypatch, name, dtype, flops):
    """What MFU divides by on a GPU, by the path train.py takes (peak_flops asks CUDA for the device's name)."""
    asked = []
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device: asked.append(device) or name)
    peak = peak_flops(Runtime('cuda:1', 'cuda', dtype, False, 0, 1, 1))
    assert asked == ['cuda:1']
    assert peak == (None if flops is None else pytest.approx(flops, rel=2e-3))  # the sheets round to 3-4 digits


def test_fp32_is_each_gpus_own_figure():
    """Not half the fp16 figure where fp32 has no TF32 tensor cores to run on (V100, T4)."""
    assert gpu_peak_flops('Tesla V100-SXM2-16GB', 'float32') == 15.7e12
    assert gpu_peak_flops('Tesla T4', 'float32') == 8.1e12
    assert gpu_peak_flops('NVIDIA A100-SXM4-80GB', 'float32') == 156e12


@pytest.fixture
def tf32_switches():
    """setup_runtime('cuda') turns TF32 on for the whole process: start from off, put the old values back.
    By hand, not monkeypatch: torch serves cuda.matmul.allow_tf32 from a module __getattr__, which pytest's
    monkeypatch (9.2) records as absent and then fails to delete at teardown."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    yield
    matmul.allow_tf32, cudnn.allow_tf32 = saved


@pytest.mark.parametrize('capability,dtype', [((7, 0), 'float16'), ((7, 5), 'float16'), ((8, 0), 'bfloat16'),
                                              ((9, 0), 'bfloat16')])
def test_gpu_auto_dtype_by_compute_capability(monkeypatch, tf32_switches, capability, dtype):
    """dtype='auto' on a GPU, through setup_runtime as every script calls it: bf16 from compute capability 8.0.
    (torch.cuda.is_bf16_supported would say yes to 7.x too, counting emulation: the capability decides.)"""
    asked = []
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda *a: asked.append(a) or capability)
    rng = torch.get_rng_state()
    assert setup_runtime('cuda', 'auto').dtype == dtype
    torch.set_rng_state(rng)  # it seeds, as a script's start should; the tests after this one draw on
    assert asked  # the capability was asked, not assumed
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # fp32 matmuls on tensor cores
    assert fast_matmul_dtype('cuda') == (torch.bfloat16 if dtype == 'bfloat16' else torch.float32)


def test_cpu_without_bf16_gets_fp32_everywhere(monkeypatch):
    monkeypatch.setenv('SEEDGPT_CPU_BF16', '0')
    assert pick_dtype('cpu') == 'float32' and fast_matmul_dtype('cpu') == torch.float32


def test_newton_schulz_dtype_and_batching():
    g = torch.randn(3, 48, 16, generator=torch.Generator().manual_seed(0))
    batched = newton_schulz(g, dtype=torch.float32)
    for i in range(3):  # one batched call equals one call per matrix
        torch.testing.assert_close(batched[i], newton_schulz(g[i], dtype=torch.float32), rtol=1e-4, atol=1e-5)
    # close to orthogonal: singular values pushed into roughly [0.7, 1.2] (the quintic does not converge exactly)
    s = torch.linalg.svdvals(batched)
    assert s.min() > 0.5 and s.max() < 1.3
    # in fp32 it really computes in fp32: far closer to the fp32 iteration than a bf16 one is
    bf16 = newton_schulz(g, dtype=torch.bfloat16)
    assert batched.dtype == bf16.dtype == torch.float32
    assert (bf16 - batched).abs().max() > 10 * (newton_schulz(g.double(), dtype=torch.float64).float() - batched).abs().max()


def test_vocab_padded_but_never_predicted():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=70))
    assert padded_vocab(70) == 128 and padded_vocab(50257) == 50304 and padded_vocab(64) == 64
    assert model.lm_head.weight.shape == (128, 16)
    with torch.no_grad():
        model.lm_head.weight[70:] = 100.0  # padding rows that would win every argmax if they counted
    idx = torch.randint(70, (2, 8))
    logits, loss = model(idx, idx)
    assert logits.shape == (2, 8, 70) and loss.item() < 20
    out = generate(model, idx[:, :2], 6, temperature=1.0)
    assert out.max() < 70
    assert model(idx)[0].shape == (2, 1, 70)


def test_vocab_size_comes_from_the_data(tmp_path, char_data):
    with pytest.raises(SystemExit, match='^error: vocab_size'):
        run_train(tmp_path / 'v', char_data, '--vocab_size=100')


def test_logger_closes_its_file_and_finishes_wandb(tmp_path, char_data, monkeypatch):
    calls = []

    class FakeRun:
        def log(self, row, step):
            calls.append(('log', step))

        def finish(self):
            calls.append(('finish', None))

    fake = type(sys)('wandb')
    fake.init = lambda **kw: FakeRun()
    monkeypatch.setitem(sys.modules, 'wandb', fake)
    before = set(os.listdir('/proc/self/fd'))
    run_train(tmp_path / 'w', char_data, '--max_iters=3', '--wandb_log=True')
    assert calls and calls[-1] == ('finish', None)
    log_path = str(tmp_path / 'w' / 'log.jsonl')
    still_open = [os.readlink(f'/proc/self/fd/{fd}') for fd in set(os.listdir('/proc/self/fd')) - before
                  if os.path.exists(f'/proc/self/fd/{fd}')]
    assert log_path not in still_open


def test_eval_only_leaves_no_process_group(tmp_path, char_data, monkeypatch):
    """A 1-process group set up the way torchrun would: eval_only must tear it down like a training run."""
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT='29517').items():
        monkeypatch.setenv(key, value)
    try:
        run_train(tmp_path / 'e', char_data, '--eval_only=True')
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def torchrun_child(tmp_path, code, *args):
    """Run `code` (a script that starts train.py) as 2 torchrun processes on the tiny config into tmp_path/o."""
    script = tmp_path / 'child.py'
    script.write_text(code)
    p = run_script('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', script, *TINY,
                   f'--out_dir={tmp_path / "o"}', '--grad_accum=2', *args, timeout=120,
                   env={'PYTHONPATH': str(ROOT)})  # the script lives in tmp_path; it imports train from the root
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p


# rank 1 lives on another machine: its clock runs 1000 times fast (alone, it would think the time budget spent
# at once; an offset would cancel out of every elapsed time), and it times its matmuls a million times faster
# than rank 0 (alone, it would keep the big model)
SKEWED = r"""
import os, sys, time
from seedgpt import runtime
if os.environ['RANK'] == '1':
    real, start = time.time, time.time()
    time.time = lambda: start + 1000 * (real() - start)
    runtime.measured_matmul_flops = lambda *a, **k: 1e18
import train
from seedgpt.config import load_config
train.main(load_config(train.Config, sys.argv[1:]))
os._exit(0)
"""


@pytest.mark.slow
def test_rank0_decides_the_clock_and_the_model_size(tmp_path, char_data):
    """Ranks that disagreed would hang in their first collective (other models) or their last (one stops early)."""
    p = torchrun_child(tmp_path, SKEWED, f'--data_dir={char_data}', '--max_time=2', '--max_iters=100000',
                       '--slow_tflops=1000', "--slow={'n_embd': 16}")
    steps = [row for row in read_log(tmp_path / 'o') if 'loss' in row]
    # rank 0's 2 s, not rank 1's none: the last step ends within a step (milliseconds) of the budget, on any CPU
    assert steps and steps[-1]['time'] > 1, steps[-1:]
    # rank 0's real peak, a fraction of a TFLOP/s, is far below 1000: it picks the slow settings
    assert 'below slow_tflops=1000' in p.stdout
    ckpt = torch.load(tmp_path / 'o' / 'ckpt.pt', weights_only=True)
    assert ckpt['model_args']['n_embd'] == 16 and ckpt['model']['transformer.wte.weight'].shape[1] == 16


@pytest.mark.slow
def test_two_processes_resume_exactly_with_dropout(tmp_path, char_data):
    """Each rank draws its own dropout masks, and each gets its own RNG state back on resume."""
    def torchrun(out, *args):
        p = run_script('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py', *TINY,
                       f'--out_dir={out}', f'--data_dir={char_data}', '--grad_accum=2', '--dropout=0.2',
                       '--lr_decay_iters=8', *args, timeout=300)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        return {row['iter']: row['loss'] for row in read_log(out) if 'loss' in row}

    full = torchrun(tmp_path / 'full', '--max_iters=8')
    torchrun(tmp_path / 'half', '--max_iters=4')
    ckpt = torch.load(tmp_path / 'half' / 'ckpt.pt', weights_only=True)
    assert len(ckpt['rng']) == 2 and not torch.equal(ckpt['rng'][0]['cpu'], ckpt['rng'][1]['cpu'])
    resumed = torchrun(tmp_path / 'half', '--max_iters=8', '--init_from=resume')
    for it in range(5, 9):
        assert resumed[it] == pytest.approx(full[it], abs=1e-6), it
