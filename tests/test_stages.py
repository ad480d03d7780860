"""explain/stages.py: one prompt to several checkpoints (base, int8, pruned, chat, a model that runs tools), each
answer equal to seedgpt.generate's greedy one, the reference's log-probability equal to a direct computation, the
candidates sorted, the page self-contained; and the snapshots train.py and feedback/rl.py keep (keep_every)."""
import dataclasses
import glob
import io
from html.parser import HTMLParser

import pytest
import torch
import torch.nn.functional as F

import train
from compress import shrink
from conftest import TINY, make_ckpt, one_line_error, run_script, run_train
from explain import stages
from model import GPT, GPTConfig
from seedgpt.agent import generate_with_tools
from seedgpt.chat import CHAT_SPECIALS, render_prompt
from seedgpt.checkpoint import load_checkpoint, load_model, save_checkpoint, start_run
from seedgpt.config import load_config
from seedgpt.data import load_meta
from seedgpt.generate import generate, generate_replies
from seedgpt.inspect import candidates, colour_on
from seedgpt.runtime import setup_runtime

ASCII = [chr(i) for i in range(32, 127)]


def char_meta(chars, specials):
    return {'tokenizer': 'char', 'chars': chars, 'vocab_size': len(chars) + len(specials),
            'special_tokens': {s: len(chars) + i for i, s in enumerate(specials)}}


@pytest.fixture(scope='module')
def dirs(tmp_path_factory, trained_out, caller, gpt2_enc):
    """{name: checkpoint}: a trained base model, its int8 and pruned copies (compress/shrink.py), a random GPT-2 BPE
    model, a random chat model from before tools (four chat tokens) and conftest's caller, which has learnt to call
    calc. Four tokenizers: the base model's characters, GPT-2's BPE, and ASCII with four or with six chat tokens."""
    root = tmp_path_factory.mktemp('stages')
    out = {'base': trained_out, 'gpt2': root / 'gpt2'}
    torch.manual_seed(0)
    args = dict(n_layer=1, n_head=2, n_embd=32, block_size=64, vocab_size=50257)
    save_checkpoint(out['gpt2'] / 'ckpt.pt', {'model': GPT(GPTConfig(**args)).state_dict(), 'model_args': args,
                                              'meta': {'tokenizer': 'gpt2', 'vocab_size': 50257}, 'config': {}})
    for name, how in (('int8', dict(int8=True)), ('pruned', dict(prune=0.5))):
        out[name] = root / name
        save_checkpoint(out[name] / 'ckpt.pt', shrink.compress(shrink.Config(out_dir=str(trained_out), **how)))
    (root / 'chat').mkdir()
    out['chat'] = make_ckpt(root / 'chat', char_meta(ASCII, CHAT_SPECIALS[:4]))
    model, tok = caller
    out['tools'] = root / 'tools'
    save_checkpoint(out['tools'] / 'ckpt.pt', {'model': model.state_dict(), 'meta': char_meta(ASCII, CHAT_SPECIALS),
                                               'model_args': dataclasses.asdict(model.config), 'config': {}})
    return out


def view_all(dirs, *args):
    cfg = load_config(stages.Config, ['--device=cpu', f"--out_dirs={','.join(map(str, dirs))}", *args])
    return stages.main(cfg)


@pytest.fixture(scope='module')
def side_by_side(dirs):
    names = ['base', 'int8', 'pruned', 'gpt2', 'chat', 'tools']
    views = view_all([dirs[n] for n in names], '--prompt=the cat', '--reference= sat', '--max_new_tokens=6')
    return dict(zip(names, views))


def test_answers_are_greedy_generation(dirs, side_by_side):
    """Each answer is seedgpt.generate's greedy one: generate for a base model, generate_replies for a chat model,
    with its closing chat token; the prompt is a user turn for a chat model."""
    for name, v in side_by_side.items():
        model, tok = load_model(dirs[name], 'cpu')
        if name in ('chat', 'tools'):
            prompt = render_prompt(tok, [{'role': 'user', 'content': 'the cat'}])
            answer = generate_replies(model, tok, [prompt], 6, temperature=0)[0]
        else:
            prompt = tok.encode('the cat')
            answer = generate(model, torch.tensor([prompt]), 6, temperature=0)[0, len(prompt):].tolist()
        assert v.ids == prompt + answer and v.n_prompt == len(prompt), name
        assert len(v.logits) == len(answer) and not any(v.given)
    kinds = {name: v.kind for name, v in side_by_side.items()}
    assert kinds['base'].startswith('base') and 'iter 30' in kinds['base']
    assert 'int8 weights' in kinds['int8'] and 'pruned' in kinds['pruned'] and 'gpt2 tokens' in kinds['gpt2']
    assert kinds['chat'].startswith('chat,') and kinds['tools'].startswith('chat with tools')


def test_a_model_with_tools_runs_them(dirs):
    """The caller asks calc, the tool's result is given (not written), and it answers from it: the agent's trace."""
    v, = view_all([dirs['tools']], '--prompt=What is 48+75?', '--reference=It is 123.')
    model, tok = load_model(dirs['tools'], 'cpu')
    t = generate_with_tools(model, tok, [render_prompt(tok, [{'role': 'user', 'content': 'What is 48+75?'}])], 40,
                            temperature=0)[0]
    assert v.ids[v.n_prompt:] == t.ids and v.answer == t.answer == 'It is 123.'
    given = ''.join(s for s, g in zip(v.text[v.n_prompt:], v.given) if g)
    assert given == '<|tool|>123<|end|><|assistant|>'
    assert v.total() < -5  # scored straight after the question: this model calls first, it never answers so


def test_reference_logprob_is_log_softmax_at_its_tokens(dirs, side_by_side):
    """The reference after the prompt, scored directly: log_softmax of the plain forward's logits, gathered at
    the reference's ids (and a chat model's closing <|end|>)."""
    for name, v in side_by_side.items():
        model, tok = load_model(dirs[name], 'cpu')
        ref = tok.encode(' sat') + ([tok.special_ids['<|end|>']] if name in ('chat', 'tools') else [])
        ids = v.ids[:v.n_prompt] + ref
        with torch.no_grad():
            logits, _ = model(torch.tensor([ids]), torch.tensor([ids]))
        logp = F.log_softmax(logits[0].float(), dim=-1)[v.n_prompt - 1:-1].gather(1, torch.tensor(ref)[:, None])[:, 0]
        assert [s for s, _ in v.reference] == [tok.decode([i]) for i in ref]
        torch.testing.assert_close(torch.tensor([lp for _, lp in v.reference]), logp, atol=1e-5, rtol=1e-5)
        assert v.total() == pytest.approx(logp.sum().item(), abs=1e-4)


def test_candidates_are_sorted_and_sum_to_at_most_one(side_by_side):
    for v in side_by_side.values():
        probs, top = candidates(v.logits, 5)
        assert probs.shape == (len(v.ids) - v.n_prompt, 5)
        assert (probs[:, :-1] >= probs[:, 1:]).all() and (probs.sum(-1) <= 1 + 1e-6).all()
        assert (top[:, 0] == v.logits.argmax(-1)).all()  # greedy: the likeliest came


class Page(HTMLParser):
    """The text of each <pre class="answer">, and every attribute that could fetch something."""

    def __init__(self):
        super().__init__()
        self.answers, self.fetches, self.inside = [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.fetches += [v for k, v in attrs.items() if k in ('src', 'href')]
        self.inside = tag == 'pre' and attrs.get('class') == 'answer'
        if self.inside:
            self.answers.append('')

    def handle_endtag(self, tag):
        self.inside = False

    def handle_data(self, data):
        if self.inside:
            self.answers[-1] += data


def test_page_and_terminal(dirs, tmp_path, capsys, monkeypatch):
    """One page holds each answer and fetches nothing; the terminal is plain unless colour is asked for or
    it is a terminal without NO_COLOR."""
    names = ['base', 'int8', 'chat', 'tools']
    views = view_all([dirs[n] for n in names], '--prompt=the cat', '--max_new_tokens=4', f'--html={tmp_path / "p.html"}',
                     '--layer=0', '--head=1', '--color=never')
    plain = capsys.readouterr().out
    page = Page()
    page.feed((tmp_path / 'p.html').read_text(encoding='utf-8'))
    assert page.answers == [v.answer for v in views] and page.fetches == []
    assert '\x1b' not in plain and plain.count('layer 1 of 2, head 2 of 2') == 3  # the chat model has 1 layer
    assert plain.count('layer 1 of 1, head 2 of 2') == 1
    assert all(str(dirs[n]) in plain for n in names)
    view_all([dirs['base']], '--prompt=the cat', '--max_new_tokens=4', '--color=always')
    assert '\x1b[38;2;' in capsys.readouterr().out

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.delenv('NO_COLOR', raising=False)
    assert colour_on('auto', Tty()) and not colour_on('auto', io.StringIO()) and not colour_on('never', Tty())
    monkeypatch.setenv('NO_COLOR', '1')
    assert not colour_on('auto', Tty()) and colour_on('always', Tty())


def test_bad_input_is_one_line(dirs, tmp_path):
    p = run_script('-m', 'explain.stages', f"--out_dirs={dirs['base']},{tmp_path / 'nothing'}", '--prompt=the',
                   '--device=cpu')
    one_line_error(p, 'no checkpoint at', 'nothing')
    for args, words in ((['--prompt='], 'the prompt is empty'), (['--prompt=the', '--out_dirs='], '--out_dirs='),
                        (['--prompt=the', f"--out_dirs={tmp_path / 'x'}/*"], 'no checkpoint matches'),
                        (['--prompt=the', '--layer=5'], 'has 2 layers'), (['--prompt=the ☃'], "'☃'")):
        with pytest.raises(SystemExit) as e:
            stages.main(load_config(stages.Config, ['--device=cpu', f"--out_dirs={dirs['base']}", *args]))
        message = str(e.value)
        assert message.startswith('error:') and '\n' not in message and words in message, message


def test_keep_every_keeps_the_weights_of_those_iterations(tmp_path, char_data, capsys):
    """--keep_every=2 over 5 iterations keeps 0, 2, 4 and the end (5): each loads, without optimizer state,
    and holds the weights the run had then: the start's, those of a run stopped at 4 (the same schedule) and
    the final checkpoint's. explain.stages reads them through a glob, in iteration order."""
    schedule = ['--lr_decay_iters=5', '--eval_interval=1000']
    run_train(tmp_path / 'run', char_data, '--max_iters=5', '--keep_every=2', *schedule)
    run_train(tmp_path / 'four', char_data, '--max_iters=4', *schedule)
    snaps = sorted(glob.glob(str(tmp_path / 'run' / 'snapshots' / '*')))
    assert [s[-11:] for s in snaps] == ['iter_000000', 'iter_000002', 'iter_000004', 'iter_000005']
    run_cfg = load_config(train.Config, TINY + [f'--data_dir={char_data}', '--out_dir=unused'])
    _, _, start, _ = start_run(run_cfg, load_meta(char_data), setup_runtime('cpu', 'float32', run_cfg.seed))
    expected = {0: start.state_dict(), 4: load_checkpoint(tmp_path / 'four')['model'],
                5: load_checkpoint(tmp_path / 'run')['model']}
    for path in snaps:
        ckpt = load_checkpoint(path)
        assert 'optimizers' not in ckpt and load_model(path, 'cpu')[0] is not None
        for name, w in expected.get(ckpt['iter_num'], {}).items():
            torch.testing.assert_close(ckpt['model'][name], w, rtol=0, atol=0, msg=f"{path} {name}")
    capsys.readouterr()
    views = view_all([f"{tmp_path / 'run' / 'snapshots'}/*"], '--prompt=the', '--max_new_tokens=2')
    assert [v.name[-11:] for v in views] == ['iter_000000', 'iter_000002', 'iter_000004', 'iter_000005']
    assert sorted(['s/iter_1000', 's/iter_999'], key=stages.in_order) == ['s/iter_999', 's/iter_1000']


def test_rl_keeps_snapshots_too(tmp_path):
    """feedback/rl.py honours keep_every as train.py does: the policy at step 0 (the SFT weights and PPO's value
    head, from zero), then every step; the last equals the checkpoint saved at the end."""
    from feedback import rl
    from prepare import tasks
    meta = tasks.prepare(out_dir=str(tmp_path / 'tasks'), n_train=8, n_val=2, n_test=2, quiet=True)
    (tmp_path / 'sft').mkdir()
    sft = make_ckpt(tmp_path / 'sft', meta)
    rl.main(load_config(rl.Config, [
        '--device=cpu', '--dtype=float32', f'--init_from={sft}', f"--data_dir={tmp_path / 'tasks'}",
        f"--out_dir={tmp_path / 'rl'}", '--max_iters=2', '--keep_every=1', '--prompts_per_step=2', '--group_size=2',
        '--max_new_tokens=4', '--minibatch_size=4', '--eval_examples=2', '--warmup_iters=0']))
    snaps = sorted(glob.glob(str(tmp_path / 'rl' / 'snapshots' / '*')))
    assert [s[-11:] for s in snaps] == ['iter_000000', 'iter_000001', 'iter_000002']
    first, last = load_checkpoint(snaps[0])['model'], load_checkpoint(snaps[-1])['model']
    for name, w in load_checkpoint(sft)['model'].items():
        torch.testing.assert_close(first[name], w, rtol=0, atol=0)
    assert not first['value_head.weight'].any() and load_model(snaps[-1], 'cpu')[0].value_head is not None
    for name, w in load_checkpoint(tmp_path / 'rl')['model'].items():
        torch.testing.assert_close(last[name], w, rtol=0, atol=0)


def test_an_early_stop_keeps_its_end(tmp_path, char_data):
    """A run that stops early (patience) keeps the weights it stopped with, as it would at max_iters."""
    run_train(tmp_path / 'es', char_data, '--max_iters=40', '--eval_interval=1', '--patience=1', '--keep_every=100',
              '--learning_rate=3.0', '--warmup_iters=0')
    end = load_checkpoint(tmp_path / 'es')
    assert end['iter_num'] < 40
    snaps = sorted(glob.glob(str(tmp_path / 'es' / 'snapshots' / '*')))
    assert [s[-11:] for s in snaps] == ['iter_000000', f"iter_{end['iter_num']:06d}"]
    for name, w in end['model'].items():
        torch.testing.assert_close(load_checkpoint(snaps[-1])['model'][name], w, rtol=0, atol=0)
