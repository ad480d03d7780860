"""compress.py and the train.py settings it pairs with: int8 checkpoints (close to fp32, smaller, loaded as int8),
magnitude and 2:4 pruning, masks kept through fine-tuning and resuming, and distillation from a teacher."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F

from compress import shrink as compress
from conftest import make_text, run_scripts, run_train, write
from model import GPT, GPTConfig
from seedgpt import dataset
from seedgpt.checkpoint import load_model
from seedgpt.config import load_config
from seedgpt.int8 import Int8Linear
from seedgpt.objectives import Distill
from seedgpt.prune import block_matrices, sparsity


def compressed(tmp_path, src, name, *args):
    """compress.py's main on `src` with these --key=value args; returns the output directory."""
    out = tmp_path / name
    compress.main(load_config(compress.Config, [f'--out_dir={src}', f'--to={out}', *args]))
    return out


def test_int8_checkpoint_is_close_smaller_and_loads_as_int8(tmp_path, trained_out):
    fp32 = compressed(tmp_path, trained_out, 'fp32')
    int8 = compressed(tmp_path, trained_out, 'int8', '--int8')
    ref, _ = load_model(fp32, 'cpu')
    model, _ = load_model(int8, 'cpu')
    at_load, _ = load_model(trained_out, 'cpu', quant='int8')  # sample.py --quant=int8: quantised at load
    linears = [m for m in model.transformer.h.modules() if isinstance(m, torch.nn.Linear)]
    int8s = [m for m in model.transformer.h.modules() if isinstance(m, Int8Linear)]
    assert not linears and len(int8s) == 2 * 4  # per block: c_attn, attn.c_proj, c_fc, mlp.c_proj
    assert all(m.weight.dtype == torch.int8 for m in int8s)
    idx = torch.randint(ref.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, ref_logits, load_logits = model(idx, idx)[0], ref(idx, idx)[0], at_load(idx, idx)[0]
    assert torch.equal(logits, load_logits)  # one int8 scheme: stored or made at load, the same numbers
    err = (logits - ref_logits).abs().max().item()
    assert 0 < err < 0.01 * ref_logits.abs().max().item()  # within 1% of the largest logit (0.1% here), and really quantised
    size = lambda d: os.path.getsize(d / 'ckpt.pt')
    blocks = sum(v.numel() for k, v in torch.load(fp32 / 'ckpt.pt', weights_only=True)['model'].items()
                 if k.startswith('transformer.h.') and v.dim() == 2)
    assert size(fp32) - size(int8) > 0.7 * 3 * blocks  # int8 saves ~3 of fp32's 4 bytes per block weight
    assert size(fp32) < size(trained_out)  # no optimizer state either


def test_int8_checkpoint_samples_as_quant_int8(tmp_path, trained_out):
    int8 = compressed(tmp_path, trained_out, 'int8', '--int8')
    args = ['--device=cpu', '--dtype=float32', '--max_new_tokens=40', '--num_samples=1', '--temperature=0']
    a, b = run_scripts(['sample.py', f'--out_dir={int8}', *args],
                       ['sample.py', f'--out_dir={trained_out}', '--quant=int8', *args])
    assert a.returncode == b.returncode == 0, a.stderr
    assert a.stdout == b.stdout and len(a.stdout) > 40


def test_magnitude_pruning(tmp_path, trained_out):
    src = torch.load(trained_out / 'ckpt.pt', weights_only=True)['model']
    for fraction in (0.3, 0.5, 0.9):
        ckpt = torch.load(compressed(tmp_path, trained_out, f'p{fraction}', f'--prune={fraction}') / 'ckpt.pt',
                          weights_only=True)
        matrices = block_matrices(src)
        assert sorted(ckpt['masks']) == sorted(matrices) and len(matrices) == 8
        for name, w in matrices.items():
            pruned, mask = ckpt['model'][name], ckpt['masks'][name]
            assert (pruned == 0).sum() == (~mask).sum() == round(fraction * w.numel()), name  # per matrix
            assert torch.equal(pruned, w * mask)
            assert w[~mask].abs().max() <= w[mask].abs().min()  # the smallest went
        for name in set(src) - set(matrices):  # embeddings, norms
            assert torch.equal(ckpt['model'][name], src[name]), name
        assert sparsity(ckpt['model']) == pytest.approx(fraction, abs=1e-3)


def test_2_4_pattern(tmp_path, trained_out):
    src = torch.load(trained_out / 'ckpt.pt', weights_only=True)['model']
    ckpt = torch.load(compressed(tmp_path, trained_out, 'p24', '--prune_pattern=2:4') / 'ckpt.pt', weights_only=True)
    for name, w in block_matrices(src).items():
        groups = ckpt['model'][name].view(w.size(0), -1, 4)  # 4 consecutive inputs of one output row
        assert ((groups != 0).sum(-1) == 2).all(), name
        orig = w.abs().view(w.size(0), -1, 4)
        kept = ckpt['masks'][name].view(w.size(0), -1, 4)
        # in every group, each kept weight is at least as large as each dropped one
        assert (orig.masked_fill(~kept, float('inf')).amin(-1) >= orig.masked_fill(kept, 0).amax(-1)).all(), name
    assert sparsity(ckpt['model']) == 0.5


def test_masks_survive_fine_tuning_and_resume(tmp_path, char_data, trained_out):
    pruned = compressed(tmp_path, trained_out, 'p50', '--prune=0.5')
    masks = torch.load(pruned / 'ckpt.pt', weights_only=True)['masks']
    start = torch.load(pruned / 'ckpt.pt', weights_only=True)['model']
    for muon_lr in (0.0, 0.02):
        out = tmp_path / f'ft{muon_lr}'
        run_train(out, char_data, f'--init_from={pruned}', '--max_iters=3', f'--muon_lr={muon_lr}')
        run_train(out, char_data, '--init_from=resume', '--max_iters=6', f'--muon_lr={muon_lr}')
        ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
        assert ckpt['iter_num'] == 6 and sorted(ckpt['masks']) == sorted(masks)
        for name, mask in masks.items():
            w = ckpt['model'][name]
            assert torch.equal(ckpt['masks'][name], mask)
            assert (w[~mask] == 0).all(), name  # exactly zero after 6 steps
            assert (w[mask] != start[name][mask]).float().mean() > 0.9, name  # the rest did train


def test_compress_refuses_bad_input(tmp_path, char_data, trained_out):
    before = (trained_out / 'ckpt.pt').read_bytes()
    for args, words in [([f'--to={trained_out}', '--int8'], 'source checkpoint'),
                        ([f'--to={trained_out / "ckpt.pt"}', '--prune=0.5'], 'source checkpoint'),
                        ([f'--to={tmp_path / "x"}', '--prune=1.5'], 'prune'),
                        ([f'--to={tmp_path / "x"}', '--prune=0.5', '--prune_pattern=2:4'], 'not both'),
                        ([f'--to={tmp_path / "x"}', '--prune_pattern=4:2'], 'N:M'),
                        ([f'--to={tmp_path / "x"}', '--prune_pattern=2:5'], 'multiple of 5')]:
        with pytest.raises(SystemExit, match=f'^error: .*{words}'):
            compress.main(load_config(compress.Config, [f'--out_dir={trained_out}', *args]))
    assert (trained_out / 'ckpt.pt').read_bytes() == before
    assert not (tmp_path / 'x').exists()
    int8 = compressed(tmp_path, trained_out, 'int8', '--int8')
    with pytest.raises(SystemExit, match='^error: .*already int8'):
        compressed(tmp_path, int8, 'again', '--int8')
    with pytest.raises(SystemExit, match='^error: .*int8 weights, which do not train'):
        run_train(tmp_path / 'ft', char_data, f'--init_from={int8}', '--max_iters=1')


def test_distillation_kl_against_a_direct_computation():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=40)
    student, teacher = GPT(cfg), GPT(cfg).eval()
    x = torch.randint(40, (3, 8))
    y = x.clone()
    y[0, :5] = -1  # positions without a target (chat prompts) are left out
    T, alpha = 2.0, 0.3
    stats, loss = Distill(teacher, T, alpha).wrap(student)(x, y)
    keep = y != -1
    p = F.softmax(teacher(x, y)[0][keep] / T, -1)
    q = F.softmax(student(x, y)[0][keep] / T, -1)
    kl = (p * (p.log() - q.log())).sum(-1).mean()
    assert stats['kl'].item() == pytest.approx(kl.item(), rel=1e-5)
    assert stats['ce'].item() == pytest.approx(student(x, y)[1].item(), rel=1e-6)
    assert loss.item() == pytest.approx(alpha * T ** 2 * kl.item() + (1 - alpha) * stats['ce'].item(), rel=1e-5)
    same = Distill(copy.deepcopy(student).eval(), T, alpha).wrap(student.eval())
    assert same(x, y)[0]['kl'].abs().item() < 1e-6  # a student that is its teacher has nothing to learn


def test_distillation_with_alpha_0_is_plain_training(tmp_path, char_data, trained_out):
    plain = run_train(tmp_path / 'plain', char_data, '--max_iters=8')
    distilled = run_train(tmp_path / 'ce', char_data, '--max_iters=8', f'--teacher_dir={trained_out}',
                          '--distill_alpha=0.0')
    assert sorted(plain) == sorted(distilled) == list(range(1, 9))
    for it in plain:
        assert distilled[it] == pytest.approx(plain[it], abs=1e-6), it
    assert plain[8] < plain[1] - 0.1  # it did learn: not two flat lines (a drop 10^5 times the tolerance)


def test_distillation_loss_falls(tmp_path, char_data, trained_out):
    # a student half the teacher's width learns the teacher's distribution alone (alpha=1)
    run_train(tmp_path / 'kd', char_data, '--max_iters=30', '--n_embd=16', f'--teacher_dir={trained_out}',
              '--distill_alpha=1.0')
    from conftest import read_log
    rows = [r for r in read_log(tmp_path / 'kd') if 'kl' in r]
    assert rows[-1]['kl'] < 0.5 * rows[0]['kl']
    assert rows[-1]['loss'] == pytest.approx(4.0 * rows[-1]['kl'], rel=1e-5)  # alpha * T^2 * KL, T = 2
    ckpt = torch.load(tmp_path / 'kd' / 'ckpt.pt', weights_only=True)
    assert ckpt['model_args']['n_embd'] == 16  # the student is saved, not the teacher
    assert 'val_kl' in read_log(tmp_path / 'kd')[-1]


def test_teacher_with_another_vocabulary_is_refused(tmp_path, trained_out):
    other = tmp_path / 'upper'
    dataset.prepare([str(write(tmp_path / 'upper.txt', make_text(3000).upper()))], tokenizer='char',
                   out_dir=str(other), block_size=16, quiet=True)
    with pytest.raises(SystemExit, match='^error: the teacher .* another tokenizer or vocabulary'):
        run_train(tmp_path / 'kd', other, '--max_iters=1', f'--teacher_dir={trained_out}')
