"""train.py: accumulation vs one big batch, exact resume, checkpoint contents, atomic saves."""
import os

import pytest
import torch

from conftest import read_log, run_train
from model import GPT, GPTConfig
from seedgpt import runtime
from seedgpt.checkpoint import save_checkpoint
from seedgpt.data import load_meta


def test_grad_accum_equals_big_batch(tmp_path, char_data):
    accum = run_train(tmp_path / 'a', char_data, '--max_iters=8', '--batch_size=2', '--grad_accum=4')
    big = run_train(tmp_path / 'b', char_data, '--max_iters=8', '--batch_size=8', '--grad_accum=1')
    assert sorted(accum) == sorted(big) == list(range(1, 9))
    for it in big:
        assert accum[it] == pytest.approx(big[it], abs=1e-5), it
    # it did learn: the comparison is not between two flat lines (a drop 10^4 times the tolerance; about 0.4 here)
    assert big[8] < big[1] - 0.1


def fresh_run_train(*args):
    """run_train as a new process would see it: the peak-FLOP/s measurement not yet cached."""
    runtime._measured_peak.clear()
    return run_train(*args)


def test_resume_is_exact(tmp_path, char_data):
    common_args = ['--lr_decay_iters=20', '--dropout=0.1']  # dropout: the RNG state must come back too
    full = fresh_run_train(tmp_path / 'full', char_data, '--max_iters=20', *common_args)
    half = fresh_run_train(tmp_path / 'resumed', char_data, '--max_iters=10', *common_args)
    assert sorted(half) == list(range(1, 11))
    resumed = fresh_run_train(tmp_path / 'resumed', char_data, '--max_iters=20', '--init_from=resume', *common_args)
    assert sorted(full) == sorted(resumed) == list(range(1, 21))
    for it in range(1, 21):
        assert resumed[it] == pytest.approx(full[it], abs=1e-6, rel=0), it
    a = torch.load(tmp_path / 'full' / 'ckpt.pt', weights_only=True)
    b = torch.load(tmp_path / 'resumed' / 'ckpt.pt', weights_only=True)
    for k in a['model']:
        torch.testing.assert_close(b['model'][k], a['model'][k], rtol=0, atol=1e-6)


def test_resume_without_checkpoint_errors(tmp_path, char_data):
    with pytest.raises(SystemExit, match='^error: no checkpoint'):
        run_train(tmp_path / 'none', char_data, '--init_from=resume')


def test_checkpoint_contents(trained_out, char_data):
    ckpt = torch.load(trained_out / 'ckpt.pt', weights_only=True)
    for key in ('model', 'model_args', 'config', 'meta', 'optimizers', 'iter_num', 'rng', 'best_val_loss'):
        assert key in ckpt, key
    assert not [k for k in ckpt['model'] if k.startswith(('_orig_mod.', 'module.')) or '._orig_mod.' in k]
    assert ckpt['iter_num'] == 30
    assert ckpt['config']['max_iters'] == 30 and ckpt['config']['data_dir'] == str(char_data)
    assert ckpt['meta'] == load_meta(char_data)
    assert len(ckpt['rng']) == 1 and isinstance(ckpt['rng'][0]['cpu'], torch.Tensor)  # one state per process
    assert len(ckpt['optimizers']) == 1 and ckpt['optimizers'][0]['state']
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(ckpt['model'])  # strict: every name matches
    rows = read_log(trained_out)
    assert rows[-1]['iter'] == 30 and rows[-1]['val_loss'] == pytest.approx(ckpt['val_loss'])


def test_eval_only_writes_no_checkpoint(tmp_path, char_data):
    run_train(tmp_path / 'e', char_data, '--eval_only=True')
    rows = read_log(tmp_path / 'e')
    assert len(rows) == 1 and 'val_loss' in rows[0]
    assert not (tmp_path / 'e' / 'ckpt.pt').exists()


def test_block_size_too_big_for_data(tmp_path, char_data):
    with pytest.raises(SystemExit, match='^error: .*block_size'):
        run_train(tmp_path / 'x', char_data, '--block_size=1000000')


def test_atomic_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pt'
    save_checkpoint(str(path), {'iter_num': 1, 'w': torch.arange(1000)})
    real_save = torch.save

    def torn_save(obj, f):
        real_save(obj, f)
        with open(f, 'r+b') as fh:  # leave half a file behind, then die
            fh.truncate(os.path.getsize(f) // 2)
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', torn_save)
    with pytest.raises(OSError, match='disk full'):
        save_checkpoint(str(path), {'iter_num': 2, 'w': torch.zeros(1000)})
    monkeypatch.undo()
    old = torch.load(path, weights_only=True)
    assert old['iter_num'] == 1 and torch.equal(old['w'], torch.arange(1000))
    assert os.listdir(tmp_path) == ['ckpt.pt']  # no temp file left behind
    save_checkpoint(str(path), {'iter_num': 3})
    assert torch.load(path, weights_only=True) == {'iter_num': 3}
    assert os.listdir(tmp_path) == ['ckpt.pt']


def test_checkpoint_rename_is_flushed(tmp_path, monkeypatch):
    """The file is flushed before the rename, and the directory after it: the rename is a directory write,
    and until the directory reaches the disk a crash can undo it."""
    flushed = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        flushed.append(os.readlink(f'/proc/self/fd/{fd}'))  # what the descriptor is open on
        real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', recording_fsync)
    save_checkpoint(str(tmp_path / 'ckpt.pt'), {'iter_num': 1})
    assert len(flushed) == 2
    assert os.path.basename(flushed[0]).startswith('.ckpt.pt.tmp')  # the new file, under its temporary name
    assert flushed[1] == os.path.realpath(tmp_path)  # then the directory holding the renamed file
