"""Every training script against every setting that changes how it trains: each cell runs one step and
saves a checkpoint that loads, or stops at start-up with a one-line error. A crash, a traceback or a
setting silently ignored in any cell fails the test.

The scripts: train.py (here as chat SFT), feedback/reward.py, feedback/dpo.py and feedback/rl.py, each
through its own main(cfg). FSDP needs torchrun: alone, each script refuses it; tests/test_faults.py runs the
objectives under torchrun with FSDP.
"""
import json

import pytest
import torch

import train
from compress import shrink
from conftest import make_ckpt, read_log
from feedback import dpo, reward, rl
from prepare.tasks import prepare as prepare_tasks
from seedgpt import runtime
from seedgpt.checkpoint import load_checkpoint, load_model, save_checkpoint
from seedgpt.config import load_config

LOOP = ['--max_iters=1', '--eval_interval=1', '--eval_iters=1', '--batch_size=2', '--log_interval=1',
        '--warmup_iters=0', '--block_size=64', '--compile=False']
RL = ['--max_iters=1', '--eval_interval=1', '--log_interval=1', '--warmup_iters=0', '--prompts_per_step=2',
      '--group_size=2', '--max_new_tokens=3', '--minibatch_size=4', '--eval_examples=2']

SCRIPTS = {  # name: (Config, main, the data fixture's key, settings every run of it gets)
    'sft': (train.Config, train.main, 'tasks', LOOP),
    'reward': (reward.Config, reward.main, 'pairs', LOOP),
    'dpo': (dpo.Config, dpo.main, 'pairs', LOOP),
    'rl': (rl.Config, rl.main, 'tasks', RL),
}
SETTINGS = {  # name: arguments; START_* names the checkpoint the run starts from
    'plain': [],
    'fp16': ['--dtype=float16'],  # the gradient scaler's path
    'muon': ['--muon_lr=0.02'],
    'grad_accum': ['--grad_accum=2'],
    'lora': ['--lora_rank=2'],
    'freeze': ['--freeze_blocks=1', '--freeze_embeddings=True'],
    'pruned': ['START_pruned'],
    'int8': ['START_int8'],
    'teacher': ['--teacher_dir=START_sft'],
    'fsdp': ['--fsdp=True'],
}
# the cells that must be refused, and a word their error must hold; every other cell must run
REFUSED = {
    ('sft', 'int8'): 'int8', ('reward', 'int8'): 'int8', ('dpo', 'int8'): 'int8', ('rl', 'int8'): 'int8',
    ('sft', 'fsdp'): 'torchrun', ('reward', 'fsdp'): 'torchrun', ('dpo', 'fsdp'): 'torchrun',
    ('rl', 'fsdp'): 'unknown setting',
    ('reward', 'teacher'): 'unknown setting', ('dpo', 'teacher'): 'unknown setting', ('rl', 'teacher'): 'unknown setting',
    ('rl', 'grad_accum'): 'unknown setting', ('rl', 'lora'): 'unknown setting', ('rl', 'freeze'): 'unknown setting',
}


@pytest.fixture(scope='module')
def starts(tmp_path_factory):
    """The data and the checkpoints the cells start from: a tiny task suite, preference pairs that anyone
    can tell apart, a random chat model (sft), its 50%-pruned copy and its int8 copy."""
    root = tmp_path_factory.mktemp('matrix')
    meta = prepare_tasks(out_dir=str(root / 'tasks'), n_train=8, n_val=2, n_test=2, quiet=True)
    (root / 'sft').mkdir()
    sft = make_ckpt(root / 'sft', meta)
    pairs = root / 'pairs'
    pairs.mkdir()
    for split in ('train', 'val'):
        with open(root / 'tasks' / f'{split}.jsonl', encoding='utf-8') as f, \
                open(pairs / f'{split}.jsonl', 'w', encoding='utf-8') as out:
            for line in f:
                r = json.loads(line)
                out.write(json.dumps({'prompt': r['messages'][:-1], 'chosen': r['meta']['answer'], 'rejected': 'zz',
                                      'meta': r['meta']}) + '\n')
    keep = ('tokenizer', 'vocab_size', 'special_tokens', 'chars')
    (pairs / 'meta.json').write_text(json.dumps({**{k: meta[k] for k in keep}, 'format': 'pairs'}))
    out = {'tasks': root / 'tasks', 'pairs': pairs, 'sft': sft, 'ref': root / 'ref'}
    # RL's reference: another model, so that the KL term pulls even where every answer earns the same reward
    ckpt = dict(load_checkpoint(sft))
    g = torch.Generator().manual_seed(1)
    ckpt['model'] = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in ckpt['model'].items()}
    save_checkpoint(str(root / 'ref' / 'ckpt.pt'), ckpt)
    for name, args in (('pruned', ['--prune=0.5']), ('int8', ['--int8=True'])):
        cfg = load_config(shrink.Config, [f'--out_dir={sft}', f'--to={root / name}', *args])
        save_checkpoint(str(root / name / 'ckpt.pt'), shrink.compress(cfg))
        out[name] = root / name
    return out


def args_for(script, setting, starts, out_dir):
    Config, main, data, base = SCRIPTS[script]
    args = ['--device=cpu', f'--out_dir={out_dir}', f'--data_dir={starts[data]}', f'--init_from={starts["sft"]}']
    if script == 'dpo':
        args.append(f'--ref_dir={starts["sft"]}')
    if script == 'rl':
        args += [f'--ref_dir={starts["ref"]}', '--kl_coef=0.5']
    if 'dtype' not in ' '.join(SETTINGS[setting]):
        args.append('--dtype=float32')
    for a in SETTINGS[setting]:
        if a.startswith('START_'):
            args.append(f'--init_from={starts[a[len("START_"):]]}')
        else:
            args.append(a.replace('START_sft', str(starts['sft'])))
    return base + args


@pytest.mark.parametrize('setting', list(SETTINGS))
@pytest.mark.parametrize('script', list(SCRIPTS))
def test_cell_runs_one_step_or_is_refused(script, setting, starts, tmp_path, monkeypatch):
    Config, main, _, _ = SCRIPTS[script]
    if setting == 'fp16':  # a CPU has no fp16 matmul kernels: timing 2048x2048 ones for MFU's peak takes minutes
        monkeypatch.setattr(runtime, 'measured_matmul_flops', lambda *a, **k: None)  # MFU 'n/a', as on unknown GPUs
    out = tmp_path / 'out'
    argv = args_for(script, setting, starts, out)
    torch.manual_seed(0)
    if (script, setting) in REFUSED:
        with pytest.raises(SystemExit) as e:
            main(load_config(Config, argv))
        message = str(e.value)
        assert message.startswith('error:') and '\n' not in message, message
        assert REFUSED[script, setting] in message, message
        assert not (out / 'ckpt.pt').exists()  # refused before anything was written
        return

    main(load_config(Config, argv))
    steps = [row for row in read_log(out) if 'iter' in row and 'loss' in row]
    assert steps and steps[-1]['iter'] == 1 and all(torch.isfinite(torch.tensor(r['loss'])) for r in steps)
    ckpt = load_checkpoint(out)
    assert ckpt['iter_num'] == 1
    model, _ = load_model(out, 'cpu')  # every stage's checkpoint loads as a language model
    start = load_checkpoint(starts['sft'])['model']
    saved = ckpt['model']
    if setting == 'pruned':  # the pruned weights stayed exactly zero through the step
        masks = ckpt['masks']
        assert masks and all((saved[name][~mask] == 0).all() for name, mask in masks.items())
    if setting == 'freeze':  # the first block and the embeddings did not move; the rest did
        for name, value in saved.items():
            if name.startswith(('transformer.h.0.', 'transformer.wte', 'lm_head')):
                assert torch.equal(value, start[name]), name
    if setting == 'lora':  # only adapters trained: the checkpoint keeps them and the base weights
        assert ckpt['lora'] and all(torch.equal(ckpt['lora'][k], start[k]) for k in ckpt['lora'] if k.endswith('.weight'))
    if setting == 'fp16':
        assert ckpt['scaler'], "an fp16 run saves its gradient scaler's state"
    # a new head (a reward model's) starts at zero: then the first step can only move the head
    moved = [k for k in saved if not torch.equal(saved[k].float(), start.get(k, torch.zeros_like(saved[k])).float())]
    assert moved, "one step changed no weight"
