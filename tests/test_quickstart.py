"""The README quick start, end to end on a tiny model: prepare the stdlib corpus, train, sample."""
import json

from conftest import run_script

SEP = '\n---------------\n'


def test_quickstart(tmp_path):
    data, out = tmp_path / 'data', tmp_path / 'out'
    p = run_script('-m', 'prepare.stdlib', f'--out_dir={data}')
    assert p.returncode == 0, p.stderr
    meta = json.loads((data / 'meta.json').read_text(encoding='utf-8'))
    assert meta['tokenizer'] == 'char' and meta['train_tokens'] > 1_000_000 and meta['val_tokens'] > 100_000

    p = run_script('train.py', 'config/stdlib_char.py', f'--data_dir={data}', f'--out_dir={out}',
                   '--device=cpu', '--dtype=float32', '--max_time=0', '--max_iters=6', '--warmup_iters=2',
                   '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
                   '--eval_iters=2', '--log_interval=2')
    assert p.returncode == 0, p.stderr
    assert 'iter 6: train loss' in p.stdout and (out / 'ckpt.pt').exists()

    p = run_script('sample.py', f'--out_dir={out}', '--max_new_tokens=50')
    assert p.returncode == 0, p.stderr
    # num_samples=2 by default: each the default prompt '\n', 50 characters, then the separator
    sample = 1 + 50 + len(SEP)
    assert len(p.stdout) == 2 * sample
    for i in (0, sample):
        assert p.stdout[i] == '\n' and p.stdout[i + 51:i + sample] == SEP
    assert (p.stdout[1:51] + p.stdout[sample + 1:sample + 51]).strip()  # text, not only whitespace
