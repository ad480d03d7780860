"""Fine-tuning knobs of train.py: LoRA adapters (merged vs unmerged, zero start, only adapters train, exact
resume), frozen embeddings and blocks, early stopping, and the trainable parameter count."""
import copy
import math
import re

import pytest
import torch

import train
from conftest import read_log, run_train
from model import GPT, GPTConfig
from seedgpt import runtime
from seedgpt.lora import LoRALinear, add_lora, freeze_and_adapt, merge_lora
from seedgpt.optim import Muon, configure_optimizers

TINY_MODEL = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65, bias=True)


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(TINY_MODEL).eval()


def test_lora_starts_as_the_base():
    base = tiny_gpt()
    lora = add_lora(copy.deepcopy(base), rank=4, alpha=16.0, targets=['c_attn', 'c_proj', 'c_fc'])
    adapted = [m for m in lora.modules() if isinstance(m, LoRALinear)]
    assert len(adapted) == 2 * 4  # per block: c_attn, attn.c_proj, c_fc, mlp.c_proj
    assert all(m.lora_A.abs().sum() > 0 and not m.lora_B.any() for m in adapted)
    idx = torch.randint(65, (3, 16), generator=torch.Generator().manual_seed(1))
    assert torch.equal(lora(idx, idx)[0], base(idx, idx)[0])  # B = 0: not close, equal


def test_merged_checkpoint_equals_unmerged_forward():
    base = tiny_gpt()
    model = add_lora(copy.deepcopy(base), rank=4, alpha=8.0, targets=['c_attn', 'mlp.c_proj'])
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, 0.1)  # as after training: the update is no longer zero
    idx = torch.randint(65, (3, 16), generator=torch.Generator().manual_seed(1))
    merged, lora = merge_lora(model.state_dict(), alpha=8.0)
    plain = GPT(TINY_MODEL).eval()
    plain.load_state_dict(merged)  # strict: the plain GPT names, nothing more
    assert sorted(merged) == sorted(plain.state_dict())
    assert sorted(lora) == sorted(f'transformer.h.{i}.{layer}.{p}' for i in range(2) for layer in ('attn.c_attn', 'mlp.c_proj')
                                  for p in ('weight', 'lora_A', 'lora_B'))
    logits = model(idx, idx)[0]
    assert (plain(idx, idx)[0] - logits).abs().max() < 1e-5
    assert (base(idx, idx)[0] - logits).abs().max() > 1e-3  # the comparison is not between two base models
    assert not torch.equal(merged['transformer.h.0.attn.c_attn.weight'], lora['transformer.h.0.attn.c_attn.weight'])


def test_bad_lora_target(tmp_path, char_data):
    with pytest.raises(SystemExit, match="^error: LoRA target 'c_xx' names no Linear"):
        run_train(tmp_path / 'x', char_data, '--lora_rank=2', '--lora_targets=c_attn,c_xx', '--max_iters=1')


def test_lora_trains_only_the_adapters(tmp_path, char_data, trained_out):
    run_train(tmp_path / 'ft', char_data, f'--init_from={trained_out}', '--max_iters=6', '--lora_rank=4',
              '--learning_rate=3e-2', '--lora_targets=c_attn,c_fc')
    base_ckpt = torch.load(trained_out / 'ckpt.pt', weights_only=True)
    base = base_ckpt['model']
    ft = torch.load(tmp_path / 'ft' / 'ckpt.pt', weights_only=True)
    rows = read_log(tmp_path / 'ft')
    assert rows[0]['iter'] == 0 and rows[0]['val_loss'] == pytest.approx(base_ckpt['val_loss'], abs=1e-5)  # B = 0
    adapted = [k for k in base if k.endswith(('c_attn.weight', 'c_fc.weight'))]
    assert len(adapted) == 4
    for k in base:
        if k in adapted:
            assert torch.equal(ft['lora'][k], base[k]), k  # the base under the adapters is bit-identical
            assert not torch.equal(ft['model'][k], base[k]), k  # the merged weight moved
            assert ft['lora'][k.replace('weight', 'lora_B')].any(), k
        else:
            assert torch.equal(ft['model'][k], base[k]), k  # biases, norms, embeddings, other Linears
    GPT(GPTConfig(**ft['model_args'])).load_state_dict(ft['model'])  # a normal checkpoint for sample.py etc.


@pytest.mark.parametrize('muon_lr', [0.0, 0.02])
def test_freezing_really_freezes(tmp_path, char_data, trained_out, muon_lr):
    run_train(tmp_path / 'ft', char_data, f'--init_from={trained_out}', '--max_iters=4', '--freeze_embeddings=True',
              '--freeze_blocks=1', f'--muon_lr={muon_lr}')
    base = torch.load(trained_out / 'ckpt.pt', weights_only=True)['model']
    ckpt = torch.load(tmp_path / 'ft' / 'ckpt.pt', weights_only=True)
    ft = ckpt['model']
    frozen = ('transformer.wte.', 'transformer.wpe.', 'lm_head.', 'transformer.h.0.')
    assert sorted(ft) == sorted(base)
    # the optimizers hold only the rest: block 1 and ln_f (without Muon, the frozen ones would simply get no
    # gradients, so this is the check that they are left out)
    held = sum(len(group['params']) for opt in ckpt['optimizers'] for group in opt['param_groups'])
    assert held == len([k for k in base if k.startswith(('transformer.h.1.', 'transformer.ln_f.'))])
    for k in base:
        assert torch.equal(ft[k], base[k]) == k.startswith(frozen), k  # frozen: identical; the rest: moved


def test_muon_leaves_the_adapters_to_adamw():
    """LoRA with muon_lr > 0: A and B go to AdamW; each trainable parameter is in exactly one optimizer and
    no frozen one in any. Muon is left out when it would get nothing (no hidden matrix trains)."""
    def held(optimizers):
        return [id(p) for opt in optimizers for group in opt.param_groups for p in group['params']]

    for lora_rank, freeze_blocks in [(4, 0), (0, 1)]:
        model = tiny_gpt()
        cfg = train.Config(lora_rank=lora_rank, freeze_blocks=freeze_blocks)
        freeze_and_adapt(model, cfg)
        optimizers = configure_optimizers(model, 0.1, 1e-3, (0.9, 0.95), 'cpu', muon_lr=0.02, matmul_dtype=torch.float32)
        names = {id(p): n for n, p in model.named_parameters()}
        muon = [names[i] for i in held(o for o in optimizers if isinstance(o, Muon))]
        assert not [n for n in muon if 'lora_' in n]
        trainable = sorted(id(p) for p in model.parameters() if p.requires_grad)
        assert sorted(held(optimizers)) == trainable  # each once, and nothing frozen
        if lora_rank:
            assert len(optimizers) == 1 and len(trainable) == 2 * 2 * 3  # A, B of c_attn, attn and mlp c_proj
        else:
            assert muon == [n for n, p in model.transformer.h[1].named_parameters(prefix='transformer.h.1')
                            if p.dim() == 2]  # block 1's four matrices; block 0 is frozen


def trainable_printed(capsys):
    """(trainable, total) from the last 'trainable: ...' line printed since the last call."""
    found = re.findall(r'^trainable: ([\d,]+) of ([\d,]+) parameters$', capsys.readouterr().out, re.M)
    return tuple(int(n.replace(',', '')) for n in found[-1])


def test_trainable_count_is_printed(tmp_path, char_data, trained_out, capsys):
    base = torch.load(trained_out / 'ckpt.pt', weights_only=True)['model']
    total = sum(v.numel() for k, v in base.items() if k != 'lm_head.weight')  # tied to wte: counted once
    capsys.readouterr()  # drop what came before
    run_train(tmp_path / 'full', char_data, f'--init_from={trained_out}', '--max_iters=1')
    assert trainable_printed(capsys) == (total, total)
    run_train(tmp_path / 'frozen', char_data, f'--init_from={trained_out}', '--max_iters=1', '--freeze_embeddings=True',
              '--freeze_blocks=1')
    rest = sum(v.numel() for k, v in base.items() if k.startswith(('transformer.h.1.', 'transformer.ln_f.')))
    assert trainable_printed(capsys) == (rest, total)
    run_train(tmp_path / 'lora', char_data, f'--init_from={trained_out}', '--max_iters=1', '--lora_rank=4')
    # n_embd=32, rank 4: c_attn 4*(32+96), attn.c_proj 4*(32+32), mlp.c_proj 4*(128+32), in each of 2 blocks
    adapters = 2 * 4 * ((32 + 96) + (32 + 32) + (128 + 32))
    assert trainable_printed(capsys) == (adapters, total + adapters)


def scripted_val_losses(monkeypatch, val_losses):
    """estimate_loss replaced by one that returns these val losses, one per call, in order."""
    queue = list(val_losses)
    monkeypatch.setattr(train, 'estimate_loss', lambda *args: {'train': 1.0, 'val': queue.pop(0)})


def test_early_stopping_keeps_the_best(tmp_path, char_data, monkeypatch):
    # evals at iters 0..: best at 1, then three without a new best (2.0 again is not better) -> stop at iter 4
    scripted_val_losses(monkeypatch, [3.0, 2.0, 2.5, 2.0, 2.2] + [1.0] * 10)
    losses = run_train(tmp_path / 'es', char_data, '--max_iters=20', '--eval_interval=1', '--patience=3',
                       '--always_save_checkpoint=False')
    assert sorted(losses) == [1, 2, 3, 4]
    assert [r['iter'] for r in read_log(tmp_path / 'es') if 'val_loss' in r] == [0, 1, 2, 3, 4]
    ckpt = torch.load(tmp_path / 'es' / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 1 and ckpt['val_loss'] == ckpt['best_val_loss'] == 2.0


def test_early_stopping_counts_across_a_resume(tmp_path, char_data, monkeypatch):
    scripted_val_losses(monkeypatch, [3.0, 2.0, 2.5, 2.1, 2.2] + [1.0] * 10)
    args = ['--eval_interval=1', '--patience=3']
    run_train(tmp_path / 'es', char_data, '--max_iters=2', *args)  # evals at 0, 1, 2: one without a new best
    run_train(tmp_path / 'es', char_data, '--max_iters=20', '--init_from=resume', *args)  # two more at 3, 4
    assert [r['iter'] for r in read_log(tmp_path / 'es') if 'val_loss' in r] == [0, 1, 2, 3, 4]


def test_early_stopping_on_a_rising_val_loss(tmp_path, char_data, trained_out):
    """No script: a learning rate far too high makes the real val loss rise, and training stops."""
    run_train(tmp_path / 'es', char_data, f'--init_from={trained_out}', '--max_iters=40', '--eval_interval=2',
              '--patience=2', '--learning_rate=3.0', '--warmup_iters=0', '--always_save_checkpoint=False')
    evals = [(r['iter'], r['val_loss']) for r in read_log(tmp_path / 'es') if 'val_loss' in r]
    losses = [v if math.isfinite(v) else math.inf for _, v in evals]
    best = losses.index(min(losses))
    assert evals[-1][0] < 40 and len(evals) - 1 - best == 2  # stopped on the second eval without a new best


def fresh_run_train(*args):
    runtime._measured_peak.clear()
    return run_train(*args)


def test_lora_resume_is_exact(tmp_path, char_data, trained_out):
    args = [f'--init_from={trained_out}', '--lora_rank=4', '--lora_dropout=0.1', '--dropout=0.1', '--lr_decay_iters=20',
            '--learning_rate=3e-2']
    full = fresh_run_train(tmp_path / 'full', char_data, '--max_iters=20', *args)
    fresh_run_train(tmp_path / 'resumed', char_data, '--max_iters=10', *args)
    resumed = fresh_run_train(tmp_path / 'resumed', char_data, '--max_iters=20', *args, '--init_from=resume')
    assert sorted(full) == sorted(resumed) == list(range(1, 21))
    for it in range(1, 21):
        assert resumed[it] == pytest.approx(full[it], abs=1e-6, rel=0), it
    a = torch.load(tmp_path / 'full' / 'ckpt.pt', weights_only=True)
    b = torch.load(tmp_path / 'resumed' / 'ckpt.pt', weights_only=True)
    assert a['lora']['transformer.h.0.attn.c_attn.lora_B'].any()  # the adapters did learn
    for part in ('model', 'lora'):
        for k in a[part]:
            torch.testing.assert_close(b[part][k], a[part][k], rtol=0, atol=1e-6)
