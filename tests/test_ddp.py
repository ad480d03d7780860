"""DDP and FSDP on CPU (gloo): 2 processes by torchrun log the same losses as 1 process with the same global batch."""
import pytest
import torch

from conftest import TINY, read_log, run_script, run_train, train_losses
from model import GPT, GPTConfig


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


@pytest.mark.slow  # about 8 s each, and part of the default run
@pytest.mark.parametrize('grad_accum,fsdp', [(2, False), (4, False), (4, True)])  # 4: no_sync on 2 micro-batches
def test_two_processes_match_one(tmp_path, char_data, grad_accum, fsdp):
    args = ['--max_iters=6', '--batch_size=2', f'--grad_accum={grad_accum}', '--eval_iters=4']
    two = torchrun(tmp_path / 'two', char_data, *args, f'--fsdp={fsdp}')
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
    """Full-state checkpoints: an FSDP run stopped and resumed follows the uninterrupted 1-process run."""
    args = ['--batch_size=2', '--grad_accum=2', '--eval_iters=4', '--lr_decay_iters=6', '--fsdp=True']
    torchrun(tmp_path / 'two', char_data, '--max_iters=3', *args)
    two = torchrun(tmp_path / 'two', char_data, '--max_iters=6', '--init_from=resume', *args)
    one = run_train(tmp_path / 'one', char_data, '--max_iters=6', *args[:-1])
    assert sorted(two) == sorted(one) == list(range(1, 7))
    for it in one:
        assert two[it] == pytest.approx(one[it], abs=1e-4), it
    check_checkpoint(tmp_path / 'two')
