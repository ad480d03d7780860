"""seedgpt/charts.py: train.py's out_dir/loss.png, several runs in one PNG, and training without matplotlib."""
import sys

import pytest

from conftest import read_log, run_scripts, run_train
from seedgpt import charts
from seedgpt.charts import draw_run, draw_runs, loss_png


def test_loss_png_after_a_tiny_run(tmp_path, char_data):
    image = pytest.importorskip('matplotlib.image')
    out = tmp_path / 'out'
    run_train(out, char_data, '--max_iters=6', '--eval_interval=3')
    pixels = image.imread(out / 'loss.png')
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 300 and pixels.std() > 0.05
    # the figure holds the logged numbers: step losses, eval train and val losses, the learning rate
    rows = read_log(out)
    fig = draw_run(out, tmp_path / 'again.png', tokens=4 * 16)
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    assert list(lines['val loss (eval)'].get_ydata()) == [r['val_loss'] for r in rows if 'val_loss' in r]
    assert list(lines['train loss (each logged step)'].get_xdata()) == [1, 2, 3, 4, 5, 6]
    lr = [line for line in fig.axes[-1].get_lines()][0]
    assert list(lr.get_ydata()) == [r['lr'] for r in rows if 'lr' in r]
    assert any('tokens seen (64 per iteration)' in ax.get_xlabel() for ax in fig.axes[0].child_axes)


def test_training_without_matplotlib(tmp_path, char_data, monkeypatch, capsys):
    for name in ('matplotlib', 'matplotlib.figure'):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if it were not installed
    monkeypatch.setattr(charts, '_hinted', False)
    run_train(tmp_path / 'out', char_data, '--max_iters=4', '--eval_interval=2')
    assert (tmp_path / 'out' / 'ckpt.pt').exists() and not (tmp_path / 'out' / 'loss.png').exists()
    assert capsys.readouterr().out.count('pip install matplotlib') == 1  # three evals, one hint


def test_loss_png_never_raises(tmp_path, capsys):
    pytest.importorskip('matplotlib')
    (tmp_path / 'log.jsonl').write_text('{"iter": 0, "val_loss": \n')  # a torn line
    charts._hinted = False
    loss_png(tmp_path)
    assert 'could not write' in capsys.readouterr().out and not (tmp_path / 'loss.png').exists()


def test_plot_overlays_runs(tmp_path, char_data, trained_out):
    image = pytest.importorskip('matplotlib.image')
    run_train(tmp_path / 'b', char_data, '--max_iters=10', '--eval_interval=5', '--n_layer=1')
    p, nothing = run_scripts(['-m', 'explain.plot', trained_out, tmp_path / 'b', '--x=tokens',
                              f'--out={tmp_path / "runs.png"}'], ['-m', 'explain.plot', tmp_path / 'nothing'])
    assert p.returncode == 0, p.stderr
    assert image.imread(tmp_path / 'runs.png').std() > 0.05
    fig = draw_runs([trained_out, tmp_path / 'b'], tmp_path / 'runs2.png', x='tokens')
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith('out: val (best') and labels[1].startswith('b: val (best')
    val_b = fig.axes[0].get_lines()[3]  # b's val line, after trained_out's two
    assert list(val_b.get_xdata()) == [0, 5 * 64, 10 * 64]  # tokens: iterations * batch_size 4 * block_size 16
    assert nothing.returncode != 0 and 'no ' in nothing.stderr and 'log.jsonl' in nothing.stderr


def test_bits_per_byte_in_the_plots(tmp_path, trained_out):
    """A run that logged bits per byte: loss.png reads the val loss in bits per byte on a right-hand axis, and
    overlaid runs are drawn in bits per byte, where runs of different tokenizers compare."""
    pytest.importorskip('matplotlib')
    evals = [r for r in read_log(trained_out) if 'val_loss' in r]
    assert all(r['val_bpb'] > 0 and r['train_bpb'] > 0 for r in evals)
    fig = draw_run(trained_out, tmp_path / 'one.png')
    assert any(ax.get_ylabel() == 'val bits per byte' for ax in fig.axes[0].child_axes)
    fig = draw_runs([trained_out], tmp_path / 'runs.png')
    assert fig.axes[0].get_ylabel().startswith('bits per byte')
    val = fig.axes[0].get_lines()[1]  # after the thin train line
    assert list(val.get_ydata()) == pytest.approx([r['val_bpb'] for r in evals], rel=1e-12)
