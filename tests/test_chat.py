"""eval.py and chat.py as scripts on a tiny random chat checkpoint: output formats, replies, errors."""
import json

import pytest
import torch

from chat.talk import fit
from conftest import make_ckpt, one_line_error, run_script, run_scripts
from prepare import tasks
from seedgpt.chat import CHAT_SPECIALS, render_prompt
from seedgpt.checkpoint import load_model
from seedgpt.generate import generate_replies, reply_text, stream_reply
from seedgpt.tasks import TASKS, answer_loss, load_records, question, score
from seedgpt.tokenizer import CharTokenizer

CPU = ['--device=cpu', '--dtype=float32']


@pytest.fixture(scope='module')
def suite(tmp_path_factory):
    """(data_dir, out_dir): a small char task suite and a random chat model for it."""
    root = tmp_path_factory.mktemp('chat')
    meta = tasks.prepare(out_dir=str(root / 'tasks'), n_train=20, n_val=4, n_test=6, quiet=True)
    (root / 'out').mkdir()
    return root / 'tasks', make_ckpt(root / 'out', meta)


def test_eval_json(suite):
    data, out = suite
    p = run_script('-m', 'chat.eval', f'--out_dir={out}', f'--data_dir={data}', '--max_examples=12', '--max_new_tokens=6',
                   '--json', *CPU)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 1
    result = json.loads(p.stdout)
    assert result['n'] == 12 and result['split'] == 'test' and set(result['tasks']) <= set(TASKS)
    assert sum(row['n'] for row in result['tasks'].values()) == 12
    for row in result['tasks'].values():
        assert 0 <= row['correct'] <= row['n'] and row['accuracy'] == row['correct'] / row['n']
    assert result['mean'] == pytest.approx(sum(r['accuracy'] for r in result['tasks'].values()) / len(result['tasks']))
    assert 'eval: 12/12 answered' in p.stderr


def test_eval_table(suite):
    data, out = suite
    p = run_script('-m', 'chat.eval', f'--out_dir={out}', f'--data_dir={data}', '--max_new_tokens=4', *CPU)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ['task', 'n', 'correct', 'accuracy', 'loss', 'bits/byte']
    assert [line.split()[0] for line in lines[1:]] == sorted(TASKS) + ['mean']
    assert all(line.split()[1] == '6' for line in lines[1:-1]) and lines[-1].split()[1] == '30'


def test_answer_loss_is_sfts_loss(suite):
    """eval's loss of the split's answers: per task, the loss train.py's chat batches give (all of a task's answer
    tokens together), whatever the batch; bits per byte from the same sum."""
    import math
    from seedgpt.chat import render_chat
    data, out = suite
    model, tok = load_model(out, 'cpu')
    records = load_records(data, 'test')
    together, alone = answer_loss(model, tok, records, batch_size=64), answer_loss(model, tok, records, batch_size=1)
    for task in TASKS:
        mine = [r for r in records if r['meta']['task'] == task]
        nll, n = 0.0, 0
        for r in mine:  # each conversation alone, as a row of train.py's ChatBatches
            ids, mask = render_chat(tok, r['messages'])
            y = torch.tensor([i if m else -1 for i, m in zip(ids[1:], mask[1:])])
            logits, _ = model(torch.tensor([ids[:-1]]), y[None])
            nll += torch.nn.functional.cross_entropy(logits[0].double(), y, ignore_index=-1, reduction='sum').item()
            n += int((y != -1).sum())
        n_bytes = sum(len(r['meta']['answer'].encode()) for r in mine)
        for result in (together, alone):
            assert result[task]['loss'] == pytest.approx(nll / n, rel=1e-5)
            assert result[task]['bpb'] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-5)


def test_score_perfect_and_wrong_answerers(suite):
    data, _ = suite
    records = load_records(data, 'test')
    perfect = score(records, [r['messages'][-1]['content'] for r in records])
    assert perfect['mean'] == 1.0 and all(row['accuracy'] == 1.0 for row in perfect['tasks'].values())
    wrong = score(records, [r['meta']['answer'] + '?' for r in records])
    assert wrong['mean'] == 0.0
    half = score(records, [r['meta']['answer'] if r['meta']['task'] in ('add', 'sort') else ''
                                    for r in records])
    assert half['mean'] == pytest.approx(2 / 5) and half['tasks']['add']['accuracy'] == 1.0
    assert all(m['role'] == 'user' for r in records for m in question(r))


def test_chat_prompt_prints_the_greedy_reply(suite):
    _, out = suite
    p = run_script('-m', 'chat.talk', f'--out_dir={out}', '--prompt=What is 48+75?', '--max_new_tokens=20', *CPU)
    assert p.returncode == 0, p.stderr
    model, tok = load_model(out, 'cpu')
    expected = ''.join(stream_reply(model, tok, [{'role': 'user', 'content': 'What is 48+75?'}], 20, temperature=0))
    assert p.stdout == expected + '\n' and len(expected) == 20  # this random model never ends a turn


class Scripted(torch.nn.Module):
    """A stand-in model that writes the given ids, whatever the prompt."""

    def __init__(self, ids):
        super().__init__()
        self.ids, self.w = ids, torch.nn.Parameter(torch.zeros(1))

    def stream(self, idx, max_new_tokens, pad=None):
        for i in self.ids[:max_new_tokens]:
            yield torch.tensor([[i]])


def test_reply_stops_at_end_of_turn(stand_ins):
    tok = CharTokenizer([chr(i) for i in range(32, 127)], CHAT_SPECIALS)
    end, user = tok.special_ids['<|end|>'], tok.special_ids['<|user|>']
    q = [{'role': 'user', 'content': 'hi'}]
    assert ''.join(stream_reply(Scripted(tok.encode('42') + [end] + tok.encode('x')), tok, q, 10)) == '42'
    assert ''.join(stream_reply(Scripted(tok.encode('ok') + [user]), tok, q, 10)) == 'ok'
    assert ''.join(stream_reply(Scripted(tok.encode('abcdef')), tok, q, 3)) == 'abc'
    assert ''.join(stream_reply(Scripted(tok.encode('a') + [tok.vocab_size]), tok, q, 5)) == 'a'  # a padded id


def test_chat_interactive(suite):
    _, out = suite
    p, bad = run_scripts(['-m', 'chat.talk', f'--out_dir={out}', '--max_new_tokens=8', *CPU],
                         ['-m', 'chat.talk', f'--out_dir={out}', *CPU],
                         inputs=['What is 1+1?\n\n/reset\nSort abc.\n'.encode(), 'snow ☃\n'.encode()])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split('> ')
    assert len(lines) == 6 and lines[-1] == '\n'  # five prompts (one per line, one more at EOF), then a clean exit
    assert all(len(reply) == 9 for reply in (lines[1], lines[4]))  # 8 characters and a newline
    assert '(a new conversation)' in p.stderr
    assert bad.returncode == 0 and "'☃' is not in this model's vocabulary" in bad.stderr


def test_fit_drops_oldest_turns():
    tok = CharTokenizer([chr(i) for i in range(32, 127)], CHAT_SPECIALS)
    msgs = [{'role': 'system', 'content': 'sys'}]
    for k in range(5):
        msgs += [{'role': 'user', 'content': f'question {k}'}, {'role': 'assistant', 'content': f'answer {k}'}]
    msgs.append({'role': 'user', 'content': 'last'})
    kept = list(msgs)
    assert fit(tok, kept, 60)
    tail = kept[1:]
    assert kept[0] == msgs[0] and tail[0]['role'] == 'user' and msgs[-len(tail):] == tail  # whole turns, newest kept
    assert len(render_prompt(tok, kept)) <= 60 < len(render_prompt(tok, msgs[:1] + msgs[-len(tail) - 2:]))
    kept = list(msgs)
    assert not fit(tok, kept, 1000) and kept == msgs


def test_base_model_is_refused(tmp_path):
    meta = {'tokenizer': 'char', 'chars': list('abc '), 'vocab_size': 4, 'dtype': 'uint16'}
    out = make_ckpt(tmp_path, meta, block_size=16)
    for p in run_scripts(['-m', 'chat.talk', f'--out_dir={out}', '--prompt=abc', *CPU],
                         ['-m', 'chat.eval', f'--out_dir={out}', *CPU]):
        one_line_error(p, 'no chat tokens', 'SFT')


def test_batched_replies_equal_each_alone(suite):
    """generate_replies (eval's left-padded batches) gives every question the greedy reply it gets alone."""
    data, out = suite
    model, tok = load_model(out, 'cpu')
    records = load_records(data, 'test')
    prompts = [render_prompt(tok, question(r)) for r in records]
    assert len({len(p) for p in prompts}) > 1  # the batch really is padded
    batched = generate_replies(model, tok, prompts, 12, temperature=0)
    for prompt, record, ids in zip(prompts, records, batched):
        alone = generate_replies(model, tok, [prompt], 12, temperature=0)[0]
        assert ids == alone
        assert reply_text(tok, ids) == ''.join(stream_reply(model, tok, question(record), 12, temperature=0))


def test_eval_batch_size_changes_nothing(suite):
    data, out = suite
    runs = run_scripts(*[['-m', 'chat.eval', f'--out_dir={out}', f'--data_dir={data}', '--max_new_tokens=6', '--json',
                          f'--batch_size={b}', *CPU] for b in (1, 7)])
    assert all(p.returncode == 0 for p in runs), runs[0].stderr
    one, seven = (json.loads(p.stdout) for p in runs)
    # the answers are the same; the answer losses only to float rounding (other padded shapes, other sums)
    assert one['tasks'].keys() == seven['tasks'].keys() and one['loss'] == pytest.approx(seven['loss'], rel=1e-6)
    for a, b in zip(one['tasks'].values(), seven['tasks'].values()):
        assert a['loss'] == pytest.approx(b['loss'], rel=1e-6) and a['bpb'] == pytest.approx(b['bpb'], rel=1e-6)
    strip = lambda r: {**r, 'loss': 0, 'bpb': 0, 'tasks': {t: {**v, 'loss': 0, 'bpb': 0} for t, v in r['tasks'].items()}}
    assert strip(one) == strip(seven)
