"""DDP and FSDP on CPU (gloo): 2 processes by torchrun log the same losses as 1 process with the same global batch,
for plain training, the objectives (reward model, DPO, distillation) and a fine-tune from a value-head checkpoint."""
import json

import pytest
import torch

import train
from conftest import TINY, read_log, run_script, run_train, train_losses
from feedback import dpo, reward
from model import GPT, GPTConfig
from prepare import tasks
from seedgpt.checkpoint import save_checkpoint
from seedgpt.config import load_config


def torchrun(out_dir, data_dir, *args):
    p = run_script('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py', *TINY,
                   f'--out_dir={out_dir}', f'--data_dir={data_dir}', *args, timeout=300)
    max_iters = next(a for a in reversed(args) if a.startswith('--max_iters=')).split('=')[1]
    finished = f'iter {max_iters}: train loss' in p.stdout and f'saved {out_dir}/ckpt.pt' in p.stdout
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]  # train.py skips gloo's racy teardown
    assert finished and 'processes 2' in p.stdout
    return train_losses(out_dir)


def check_checkpoint(out_dir):
    """Whole, plain tensors under clean names: loadable into a GPT on one process."""
    ckpt = torch.load(out_dir / 'ckpt.pt', weights_only=True)
    assert not [k for k in ckpt['model'] if k.startswith(('module.', '_orig_mod.'))]
    GPT(GPTConfig(**ckpt['model_args'])).load_state_dict(ckpt['model'])


@pytest.mark.slow  # about 8 s each, and part of the default run; FSDP's twin is the resume test below
@pytest.mark.parametrize('grad_accum', [2, 4])  # 4: no_sync on 2 micro-batches
def test_two_processes_match_one(tmp_path, char_data, grad_accum):
    args = ['--max_iters=6', '--batch_size=2', f'--grad_accum={grad_accum}', '--eval_iters=4']
    two = torchrun(tmp_path / 'two', char_data, *args)
    one = run_train(tmp_path / 'one', char_data, *args)
    assert sorted(two) == sorted(one) == list(range(1, 7))
    for it in one:
        assert two[it] == pytest.approx(one[it], abs=1e-4), it
    # the final evaluation, shared out over the ranks, agrees too
    assert read_log(tmp_path / 'two')[-1]['val_loss'] == pytest.approx(read_log(tmp_path / 'one')[-1]['val_loss'],
                                                                       abs=1e-4)
    check_checkpoint(tmp_path / 'two')


@pytest.mark.slow
def test_fsdp_resume_matches_one_process(tmp_path, char_data):
    """Full-state checkpoints: an FSDP run of 2 micro-batches per rank (no_sync on the first), stopped and resumed,
    follows the uninterrupted 1-process run, to its last evaluation."""
    args = ['--batch_size=2', '--grad_accum=4', '--eval_iters=4', '--lr_decay_iters=6', '--fsdp=True']
    torchrun(tmp_path / 'two', char_data, '--max_iters=3', *args)
    two = torchrun(tmp_path / 'two', char_data, '--max_iters=6', '--init_from=resume', *args)
    one = run_train(tmp_path / 'one', char_data, '--max_iters=6', *args[:-1])
    assert sorted(two) == sorted(one) == list(range(1, 7))
    for it in one:
        assert two[it] == pytest.approx(one[it], abs=1e-4), it
    assert read_log(tmp_path / 'two')[-1]['val_loss'] == pytest.approx(read_log(tmp_path / 'one')[-1]['val_loss'],
                                                                       abs=1e-4)
    check_checkpoint(tmp_path / 'two')


@pytest.fixture(scope='module')
def pair_suite(tmp_path_factory):
    """(pairs_dir, sft_dir): preference pairs on a tiny char task suite (chosen the right answer, rejected a run
    of 'z', as prepare/preferences.py writes them) and a random chat model for them (block_size 64)."""
    root = tmp_path_factory.mktemp('pairs')
    meta = tasks.prepare(out_dir=str(root / 'tasks'), n_train=8, n_val=2, n_test=2, quiet=True)
    torch.manual_seed(0)
    args = dict(n_layer=1, n_head=2, n_embd=32, block_size=64, vocab_size=meta['vocab_size'], bias=False)
    save_checkpoint(str(root / 'sft' / 'ckpt.pt'), {'model': GPT(GPTConfig(**args)).state_dict(), 'model_args': args,
                                                    'meta': meta, 'config': {}})
    (root / 'pairs').mkdir()
    for split in ('train', 'val'):
        with open(root / 'tasks' / f'{split}.jsonl', encoding='utf-8') as f, \
                open(root / 'pairs' / f'{split}.jsonl', 'w', encoding='utf-8') as out:
            for r in map(json.loads, f):
                out.write(json.dumps({'prompt': r['messages'][:-1], 'chosen': r['meta']['answer'],
                                      'rejected': 'z' * 8}) + '\n')
    keep = ('tokenizer', 'vocab_size', 'special_tokens', 'chars')
    (root / 'pairs' / 'meta.json').write_text(json.dumps({**{k: meta[k] for k in keep}, 'format': 'pairs'}))
    return root / 'pairs', root / 'sft'


@pytest.mark.slow  # about 10 s each
@pytest.mark.parametrize('objective', ['reward', 'dpo', 'distill'])
def test_fsdp_objectives_match_one_process(tmp_path, char_data, trained_out, pair_suite, objective):
    """Under FSDP an objective's module wraps the sharded GPT: gradient sync is switched on the GPT, and every
    score goes through its forward, where FSDP gathers the weights."""
    pairs, sft = pair_suite
    common = ['--max_iters=2', '--batch_size=2', '--grad_accum=2', '--eval_iters=2', '--log_interval=1']
    chat = ['--device=cpu', '--dtype=float32', '--compile=False', '--block_size=64', '--warmup_iters=0',
            '--learning_rate=1e-2', f'--init_from={sft}', f'--data_dir={pairs}', *common]
    script, module, args = {
        'reward': (['-m', 'feedback.reward'], reward, chat),
        'dpo': (['-m', 'feedback.dpo'], dpo, chat + ['--beta=0.5']),
        'distill': (['train.py'], train, TINY + [f'--data_dir={char_data}', f'--teacher_dir={trained_out}', *common]),
    }[objective]
    p = run_script('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', *script, *args,
                   f'--out_dir={tmp_path / "two"}', '--fsdp=True', '--muon_lr=0', timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert 'processes 2' in p.stdout and 'iter 2: train loss' in p.stdout
    cfg = load_config(module.Config, args + [f'--out_dir={tmp_path / "one"}'])
    train.main(cfg, {'reward': reward.Objective, 'dpo': lambda: dpo.Objective(cfg), 'distill': lambda: None}[objective]())
    two, one = read_log(tmp_path / 'two'), read_log(tmp_path / 'one')
    assert [row['iter'] for row in two] == [row['iter'] for row in one] == [0, 1, 2, 2]  # eval, 2 steps, eval
    for a, b in zip(two, one):
        for key in b:
            if key not in ('time', 'ms', 'tok_s', 'mfu'):
                assert a[key] == pytest.approx(b[key], abs=1e-4), (a['iter'], key)
    check_checkpoint(tmp_path / 'two')


@pytest.mark.slow
def test_ddp_fine_tune_drops_an_unused_value_head(tmp_path, char_data, trained_out):
    """A reward or PPO checkpoint fine-tuned as a language model: the head would get no gradients, which DDP
    calls an error at the next step. It is dropped, so the run equals one from the same model without it."""
    ckpt = torch.load(trained_out / 'ckpt.pt', weights_only=True)
    n_embd = ckpt['model_args']['n_embd']
    head = {'value_head.weight': torch.randn(1, n_embd), 'value_head.bias': torch.randn(1)}
    save_checkpoint(str(tmp_path / 'rm' / 'ckpt.pt'), {**ckpt, 'model': {**ckpt['model'], **head},
                                                       'model_args': {**ckpt['model_args'], 'value_head': True}})
    args = ['--max_iters=2', '--batch_size=2', '--grad_accum=2', '--eval_iters=4']
    p = run_script('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py', *TINY,
                   f'--out_dir={tmp_path / "two"}', f'--data_dir={char_data}', f'--init_from={tmp_path / "rm"}', *args,
                   timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.count('has a value head; this run does not ask for one') == 1  # one line, from rank 0
    saved = torch.load(tmp_path / 'two' / 'ckpt.pt', weights_only=True)
    assert not saved['model_args']['value_head'] and not [k for k in saved['model'] if k.startswith('value_head.')]
    one = run_train(tmp_path / 'one', char_data, f'--init_from={trained_out}', *args)
    two = train_losses(tmp_path / 'two')
    assert sorted(two) == sorted(one) == [1, 2]
    for it in one:
        assert two[it] == pytest.approx(one[it], abs=1e-4), it
