"""life.py, the tiny preset: every stage runs from the one before, the report card has every stage, and a run
started again keeps what is done."""
import json
import time

import pytest

from conftest import run_script
from seedgpt.checkpoint import load_model

MODELS = ('pretrain', 'sft', 'reward', 'rl', 'dpo', 'int8', 'pruned', 'student')


@pytest.fixture(scope='module')
def life(tmp_path_factory):
    out = tmp_path_factory.mktemp('life') / 'out'
    t0 = time.time()
    p = run_script('life.py', '--preset=tiny', f'--out_dir={out}', '--device=cpu', timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out, p, time.time() - t0


def test_every_stage_runs_and_the_report_has_them(life):
    out, p, _ = life
    state = json.loads((out / 'life.json').read_text())
    assert list(state) == ['prepare', 'pretrain', 'sft', 'pairs', 'reward', 'rl', 'dpo', 'int8', 'pruned',
                           'student', 'export', 'serve']
    report = (out / 'report.md').read_text()
    for stage in state:
        assert f"| {stage} |" in report
    for stage in MODELS:
        model, tok = load_model(out / stage, 'cpu')  # every stage's model loads
        assert state[stage]['params'] == sum(t.numel() for k, t in model.state_dict().items()
                                             if k != 'transformer.wte.weight' and not k.endswith('.scale'))
        if stage not in ('pretrain', 'reward'):  # the chat models are scored on both splits
            assert set(state[stage]['splits']) == {'test', 'gen'}
    # the base by its bits per byte, the reward model by the held-out pairs it ranks right
    assert state['pretrain']['val_bpb'] > 0 and 'splits' not in state['pretrain']
    assert 0 <= state['reward']['pair_accuracy'] <= 1 and 'splits' not in state['reward']
    assert f"ranks {state['reward']['pair_accuracy']:.1%} of held-out pairs right" in report
    assert state['int8']['weights_mb'] < state['rl']['weights_mb'] / 2  # int8 blocks: a quarter of fp32's bytes
    assert state['student']['params'] < state['rl']['params']
    assert (out / 'hf' / 'config.json').is_file() and 'served' in state['serve']
    prompts = report.split('The same prompts')[1]
    assert all(f"| {stage} |" in prompts for stage in MODELS if stage != 'reward')  # a scorer writes no answers
    assert '| reward |' not in prompts


def test_a_run_started_again_keeps_what_is_done(life):
    out, _, first = life
    p = run_script('life.py', '--preset=tiny', f'--out_dir={out}', '--device=cpu', '--redo=export', timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    kept = [line for line in p.stdout.splitlines() if line.endswith(', kept')]
    assert len(kept) == 10 and 'export' not in ''.join(kept)
    assert '$ python -m export.hf' in p.stdout and '$ python train.py' not in p.stdout


def test_bad_settings_are_one_line(tmp_path):
    for arg, words in (('--preset=huge', 'preset'), ('--redo=lunch', 'redo')):
        p = run_script('life.py', arg, f'--out_dir={tmp_path}')
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        assert p.returncode != 0 and len(lines) == 1 and words in lines[0] and lines[0].startswith('error:')


def test_the_verdict_on_pretraining_follows_the_figures():
    from seedgpt.report import pretraining_verdict
    row = lambda test, gen: {'splits': {'test': {'mean': test, 'n': 2000}, 'gen': {'mean': gen, 'n': 2000}}}  # noqa: E731
    assert pretraining_verdict({'sft': row(0.9, 0.8)}) == []  # no --compare run: nothing to say
    said = pretraining_verdict({'sft': row(0.9, 0.8), 'scratch': row(0.85, 0.7)})[-1]
    assert 'pretraining helped SFT (test: 0.900 from the base against 0.850 from scratch, a standard error of 0.010; ' \
           'gen: 0.800' in said
    assert 'did not help' in pretraining_verdict({'sft': row(0.8, 0.7), 'scratch': row(0.85, 0.7)})[-1]
    assert 'mixed' in pretraining_verdict({'sft': row(0.9, 0.6), 'scratch': row(0.85, 0.7)})[-1]
    # the laptop run's figures: 0.004 and 0.003 apart, under two standard errors (about 0.006) on both splits
    assert 'no difference these splits can measure' in pretraining_verdict(
        {'sft': row(0.965, 0.954), 'scratch': row(0.969, 0.957)})[-1]
