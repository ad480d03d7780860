"""The CUDA lane: mixed precision, the gradient scaler, compile, resume and the KV cache on a GPU.

Every test here is marked `cuda` and skipped without a GPU; run them on a GPU machine with
`python -m pytest -m cuda`. They train the same tiny model as the CPU tests, so they take seconds.
"""
import pytest
import torch

from conftest import run_train
from model import GPT, GPTConfig
from seedgpt import runtime
from seedgpt.checkpoint import load_model
from seedgpt.generate import generate
from seedgpt.runtime import fast_bf16

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]

ON_GPU = ['--device=cuda']  # after conftest's TINY, so it overrides its --device=cpu


def fresh(*args):
    runtime._measured_peak.clear()
    return run_train(*args)


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_mixed_precision_trains(tmp_path, char_data, dtype):
    """bf16 autocast, and fp16 with the gradient scaler (its state is checkpointed): the loss falls."""
    if dtype == 'bfloat16' and not fast_bf16('cuda'):
        pytest.skip('this GPU has no native bf16')
    losses = run_train(tmp_path / dtype, char_data, *ON_GPU, f'--dtype={dtype}', '--max_iters=40')
    assert all(loss == loss for loss in losses.values())  # no NaN
    assert losses[40] < losses[1] - 0.5
    ckpt = torch.load(tmp_path / dtype / 'ckpt.pt', weights_only=True)
    assert ckpt['env']['dtype'] == dtype and ckpt['env']['device'].startswith('cuda')
    if dtype == 'float16':
        assert ckpt['scaler']['scale'] > 0  # the scaler ran and saved its state


def test_compile_matches_eager(tmp_path, char_data):
    eager = run_train(tmp_path / 'eager', char_data, *ON_GPU, '--max_iters=10')
    compiled = run_train(tmp_path / 'compiled', char_data, *ON_GPU, '--max_iters=10', '--compile=True')
    for it in eager:
        assert compiled[it] == pytest.approx(eager[it], abs=2e-3), it
    ckpt = torch.load(tmp_path / 'compiled' / 'ckpt.pt', weights_only=True)
    assert not [k for k in ckpt['model'] if '_orig_mod' in k]


def test_resume_on_cuda_is_exact(tmp_path, char_data):
    """The checkpoint is read on the CPU: the CPU RNG state must stay there (torch.set_rng_state rejects a
    CUDA tensor), the CUDA one comes back to the GPU, and the run continues as if never stopped."""
    args = [*ON_GPU, '--lr_decay_iters=20', '--dropout=0.1']
    full = fresh(tmp_path / 'full', char_data, '--max_iters=20', *args)
    fresh(tmp_path / 'resumed', char_data, '--max_iters=10', *args)
    resumed = fresh(tmp_path / 'resumed', char_data, '--max_iters=20', '--init_from=resume', *args)
    for it in range(11, 21):
        assert resumed[it] == pytest.approx(full[it], abs=1e-4), it  # GPU kernels may add in another order


@pytest.mark.parametrize('pos', ['learned', 'rope'])
def test_kv_cache_on_cuda_equals_uncached(pos):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=50, n_layer=2, n_head=2, n_embd=64, pos=pos)).cuda().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
    idx = torch.randint(50, (2, 5), device='cuda', generator=torch.Generator('cuda').manual_seed(1))
    cached = generate(model, idx, 80, temperature=0, use_cache=True)  # past block_size: the window jumps
    plain = generate(model, idx, 80, temperature=0, use_cache=False)
    assert torch.equal(cached, plain)


def test_sampling_loads_weights_only(trained_out):
    """sample.py puts the model on the GPU and nothing else: not the optimizer's moments."""
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    model, _ = load_model(str(trained_out), 'cuda')
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert torch.cuda.memory_allocated() - before <= weights + buffers + 2 ** 20
