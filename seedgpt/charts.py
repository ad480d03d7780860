"""
Loss curves from training logs (out_dir/log.jsonl), as PNG files. matplotlib is optional: pip install matplotlib.
explain/plot.py is the command; train.py writes out_dir/loss.png at each evaluation (loss_png below): train
and val loss against iterations (and tokens, on the top axis), with the learning rate on a second y axis and,
where the run logged it, bits per byte on a third: loss * tokens / bytes / ln 2, what compares runs of different
tokenizers.
"""
import json
import os

from seedgpt.checkpoint import atomic_write, load_checkpoint
from seedgpt.data import padded

_hinted = False  # the "install matplotlib" hint is printed once per process


def read_log(out_dir):
    """(step rows, eval rows) of out_dir/log.jsonl: steps have iter, loss, lr, ...; evals have iter, train_loss,
    val_loss."""
    steps, evals = [], []
    with open(os.path.join(out_dir, 'log.jsonl'), encoding='utf-8') as f:
        for line in f:
            row = json.loads(line)
            (evals if 'val_loss' in row else steps).append(row)
    # a resumed run appends: keep the last row logged for each iteration
    dedup = lambda rows: sorted({r['iter']: r for r in rows}.values(), key=lambda r: r['iter'])
    return dedup(steps), dedup(evals)


def tokens_per_iter(out_dir):
    """batch_size * grad_accum * block_size from the run's checkpoint; None without one, or for a run on
    conversations, whose batches are as long as their longest (seedgpt.data.padded)."""
    try:
        ckpt = load_checkpoint(out_dir)
        cfg = ckpt['config']
    except (SystemExit, OSError, KeyError):
        return None
    if padded(ckpt.get('meta') or {}):
        return None
    return cfg['batch_size'] * cfg['grad_accum'] * cfg['block_size']


def bpb_scale(evals, split='val'):
    """Bits per byte per nat of loss of a split (tokens / bytes / ln 2, fixed by the dataset), from the logged
    evaluations; None for a run that did not log bits per byte."""
    rows = [r for r in evals if r.get(f'{split}_bpb') is not None and r[f'{split}_loss']]
    return rows[-1][f'{split}_bpb'] / rows[-1][f'{split}_loss'] if rows else None


def figure(**kwargs):
    # a bare Figure, not pyplot: no GUI backend, no global state inside a training process
    from matplotlib.figure import Figure
    return Figure(**kwargs)


def save(fig, path):
    atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))  # never a half-written PNG


def draw_run(out_dir, path, tokens=None):
    """out_dir's loss curves into `path`: train loss at each logged step, train and val loss at each eval,
    the learning rate on a second y axis, tokens seen on the top axis (when tokens per iteration is known)."""
    steps, evals = read_log(out_dir)
    fig = figure(figsize=(8, 4.5), layout='constrained')
    ax = fig.add_subplot()
    if steps:
        ax.plot([r['iter'] for r in steps], [r['loss'] for r in steps], color='tab:blue', alpha=0.35, lw=1,
                label='train loss (each logged step)')
    if evals:
        it = [r['iter'] for r in evals]
        ax.plot(it, [r['train_loss'] for r in evals], 'o-', color='tab:blue', ms=3, label='train loss (eval)')
        ax.plot(it, [r['val_loss'] for r in evals], 'o-', color='tab:red', ms=3, label='val loss (eval)')
        best = min(evals, key=lambda r: r['val_loss'])
        bpb = f" ({best['val_bpb']:.3f} bits/byte)" if best.get('val_bpb') is not None else ''
        ax.annotate(f"best val {best['val_loss']:.3f}{bpb}", (best['iter'], best['val_loss']), xytext=(0, -14),
                    textcoords='offset points', ha='center', fontsize=8, color='tab:red')
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss (cross-entropy, nats per token)')
    ax.set_title(os.path.basename(os.path.normpath(out_dir)))
    ax.grid(alpha=0.3)
    if tokens:
        top = ax.secondary_xaxis('top', functions=(lambda i: i * tokens, lambda t: t / tokens))
        top.set_xlabel(f'tokens seen ({tokens:,} per iteration)')
    scale = bpb_scale(evals)
    if scale:  # the val loss read as bits per byte, on the right; the learning rate's axis moves out beside it
        right = ax.secondary_yaxis('right', functions=(lambda loss: loss * scale, lambda bpb: bpb / scale))
        right.set_ylabel('val bits per byte')
    if steps and 'lr' in steps[0]:
        lr_ax = ax.twinx()
        if scale:
            lr_ax.spines['right'].set_position(('outward', 55))
        lr_ax.plot([r['iter'] for r in steps], [r['lr'] for r in steps], color='tab:gray', ls='--', lw=1)
        lr_ax.set_ylabel('learning rate (dashed)', color='tab:gray')
        lr_ax.tick_params(axis='y', colors='tab:gray')
        lr_ax.set_ylim(bottom=0)
    ax.legend(loc='upper right', fontsize=8)
    save(fig, path)
    return fig


def loss_png(out_dir, tokens=None):
    """What train.py calls at each eval: out_dir/loss.png from out_dir/log.jsonl. Never raises: a plot
    must not stop a training run. Without matplotlib it says once how to get it."""
    global _hinted
    try:
        draw_run(out_dir, os.path.join(out_dir, 'loss.png'), tokens)
    except ImportError:
        if not _hinted:
            print("note: pip install matplotlib to get out_dir/loss.png, a plot of the loss curves", flush=True)
            _hinted = True
    except Exception as e:  # noqa: BLE001 (a broken font cache or a full disk: report, keep training)
        if not _hinted:
            print(f"note: could not write {out_dir}/loss.png ({type(e).__name__}: {e}); training goes on", flush=True)
            _hinted = True


def draw_runs(out_dirs, path, x='iter'):
    """Several runs in one PNG: val loss solid with dots, train loss thin, one colour per run. Where every run
    logged bits per byte, the y axis is bits per byte: runs of different tokenizers then compare."""
    fig = figure(figsize=(9, 5), layout='constrained')
    ax = fig.add_subplot()
    logs = [read_log(d) for d in out_dirs]
    in_bpb = all(bpb_scale(evals) and bpb_scale(evals, 'train') for _, evals in logs)
    for n, (out_dir, (steps, evals)) in enumerate(zip(out_dirs, logs)):
        # loss in nats per token, or bits per byte: the same curves, each split scaled by its dataset's ratio
        val_y, train_y = (bpb_scale(evals), bpb_scale(evals, 'train')) if in_bpb else (1, 1)
        scale = 1
        if x == 'tokens':
            scale = tokens_per_iter(out_dir)
            if scale is None:
                raise SystemExit(f"error: {out_dir} has no fixed tokens per iteration (no ckpt.pt, or batches of "
                                 "conversations, each as long as its longest); use --x=iter")
        at = (lambda r: r['time']) if x == 'time' else (lambda r: r['iter'] * scale)
        name, colour = os.path.basename(os.path.normpath(out_dir)), f'C{n % 10}'
        if steps:
            ax.plot([at(r) for r in steps], [r['loss'] * train_y for r in steps], color=colour, alpha=0.3, lw=1)
        if evals:
            best = min(r['val_loss'] for r in evals) * val_y
            ax.plot([at(r) for r in evals], [r['val_loss'] * val_y for r in evals], 'o-', color=colour, ms=3,
                    label=f"{name}: val (best {best:.3f}{' bits/byte' if in_bpb else ''})")
        elif steps:
            ax.plot([], [], color=colour, label=f'{name}: train')
    ax.set_xlabel({'iter': 'iteration', 'tokens': 'tokens seen', 'time': 'seconds of training'}[x])
    ax.set_ylabel(f"{'bits per byte' if in_bpb else 'loss (nats per token)'}; thin: train, dots: val")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)
    return fig

