"""Tool use: the tools, calls and results in the chat format, and generation that runs the tools."""
import builtins
import json
import random
from fractions import Fraction

import pytest
import torch

from conftest import run_script, run_train
from prepare import tasks as prepare_tasks
from seedgpt import tools
from seedgpt.agent import Trace, generate_with_tools
from seedgpt.chat import CHAT_SPECIALS, chat_ids, parse_chat, render_chat, render_prompt
from seedgpt.checkpoint import load_model
from seedgpt.tasks import TOOL_TASKS, each_answer, generate, load_records, question, score
from seedgpt.tokenizer import CharTokenizer
from seedgpt.tools import MAX_DIGITS, MAX_OUTPUT, ToolError, calc, call_text, parse_call, run_tool


def char_tok():
    return CharTokenizer([chr(i) for i in range(32, 127)], CHAT_SPECIALS)


def test_calc_is_exact():
    cases = {'4812+7533': '12345', '123456*654321': str(123456 * 654321), '999999-1000000': '-1',
             '(2+3)*4': '20', '7/2': '3.5', '0.1+0.2': '0.3', '1/3': '0.333333333333', '2/3': '0.666666666667',
             '-(-(3))': '3', '3 × 4 ÷ 6': '2', '1.50*2': '3', '.5+.25': '0.75', '-7/2': '-3.5', '0/5': '0',
             '1/8': '0.125', '-1/3': '-0.333333333333', '10-0.0000000000001': '10'}
    for expression, value in cases.items():
        assert calc(expression) == value, expression
    rng = random.Random(0)
    for _ in range(300):  # against Python's own integers
        a, b, op = rng.randint(0, 10 ** 6), rng.randint(0, 10 ** 6), rng.choice('+-*')
        assert calc(f'{a}{op}{b}') == str({'+': a + b, '-': a - b, '*': a * b}[op])


def test_calc_refuses_hostile_input(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError('the calculator must not call eval or exec')
    monkeypatch.setattr(builtins, 'eval', forbidden)
    monkeypatch.setattr(builtins, 'exec', forbidden)
    hostile = ['9**9**9', '2^1000', '1e99999', '(' * 40 + '1' + ')' * 40, '-' * 50 + '1', '1+' * 150 + '1',
               '9' * 61, '*'.join(['9' * 30] * 3), '__import__("os").system("true")', 'x', '', '1/0', '(1', '1)',
               '1 2', '2*', '()', '1.2.3']
    for expression in hostile:
        with pytest.raises(ToolError):
            calc(expression)
        result = run_tool('calc', {'expression': expression})
        assert result.startswith('error: ') and len(result) <= MAX_OUTPUT, (expression, result)


def test_count_and_the_call_text():
    assert run_tool('count', {'letter': 'a', 'word': 'abaca'}) == '3'
    assert run_tool('count', {'letter': 'z', 'word': 'abaca'}) == '0'
    assert run_tool('count', {'letter': 'ab', 'word': 'abab'}).startswith('error: ')
    assert run_tool('count', {'letter': 'a'}).startswith('error: count takes 2')
    assert run_tool('nope', {}).startswith("error: no tool 'nope'")
    assert run_tool('reverse', {'word': 'planet'}) == 'tenalp' and run_tool('sort', {'word': 'banana'}) == 'aaabnn'
    assert parse_call('reverse(a, b)') == ('reverse', {'word': 'a, b'})  # one parameter takes the whole text
    assert run_tool('sort', {'word': 'x' * (MAX_OUTPUT + 1)}).startswith('error: ')  # a result is never cut
    assert call_text('calc', {'expression': '1+2'}) == 'calc(1+2)' == call_text('calc', '{"expression": "1+2"}')
    assert call_text('count', {'word': 'abaca', 'letter': 'a'}) == 'count(a,abaca)'  # the parameters' order
    assert parse_call('count(a,abaca)') == ('count', {'letter': 'a', 'word': 'abaca'})
    assert parse_call(' calc(1+2) ') == ('calc', {'expression': '1+2'})
    for bad in ('calc', 'calc(1+2', 'nope(1)', 'count(a)', 'calc()', '(1)'):
        with pytest.raises(ToolError):
            parse_call(bad)


def test_a_call_text_parses_back_to_its_arguments():
    """call_text writes each value verbatim, so parse_call must read it verbatim: a space is a letter one may
    count, and a word may start or end with one."""
    for letter, word in ((' ', 'a b c'), ('a', ' a b '), ('b', 'b, a b,')):
        arguments = {'letter': letter, 'word': word}
        text = call_text('count', arguments)
        assert parse_call(text) == ('count', arguments), text
        assert run_tool(*parse_call(text)) == str(word.count(letter))
    assert parse_call('calc( 1 + 2 )') == ('calc', {'expression': ' 1 + 2 '}) and calc(' 1 + 2 ') == '3'


def test_a_long_result_is_rounded_to_fit_never_cut():
    """A decimal whose whole part is long keeps fewer places, rounded: at most MAX_DIGITS digits in all, so
    the result fits MAX_OUTPUT and is the exact value rounded at its last place (cut, 2/3 read 0.6666)."""
    big = '1' * 59
    cases = {f'{big}+2/3': int(big) + Fraction(2, 3), f'-{big}-2/3': -int(big) - Fraction(2, 3),
             f'{"1" * 50}+2/3': int('1' * 50) + Fraction(2, 3), f'{"9" * 59}/7': Fraction(int('9' * 59), 7),
             f'{"9" * 60}/10': Fraction(int('9' * 60), 10), '2/3': Fraction(2, 3)}
    for expression, exact in cases.items():
        out = run_tool('calc', {'expression': expression})
        places = len(out.partition('.')[2])
        assert len(out) <= MAX_OUTPUT and sum(c.isdigit() for c in out) <= MAX_DIGITS, (expression, out)
        assert abs(Fraction(out) - exact) <= Fraction(1, 2 * 10 ** places), (expression, out)
        assert places == min(12, MAX_DIGITS - len(str(abs(exact.numerator) // exact.denominator))), (expression, out)


def test_every_value_keeps_the_digit_limit():
    """The limit holds for sums and differences as for products: no result, and no value on the way to one,
    has more than MAX_DIGITS digits."""
    nines = '9' * MAX_DIGITS
    for expression in (f'{nines}+1', f'-{nines}-1', f'({nines}+{nines})/10', f'{nines}+0.5',
                       f'1-{nines}-{nines}+{nines}'):
        with pytest.raises(ToolError, match=f'more than {MAX_DIGITS} digits'):
            calc(expression)
    assert calc(f'{nines}-1+1') == nines


def tool_record(task='add'):
    splits = generate(digits=4, n_train=30, n_val=2, n_test=2, tools=True)
    return next(r for r in splits['test'] if r['meta']['task'] == task and 'turns' not in r['meta'])


def test_mask_covers_calls_never_results():
    tok = char_tok()
    special = chat_ids(tok)
    for task in ('add', 'mul', 'div', 'expr', 'count', 'reverse', 'sort'):
        record = tool_record(task)
        ids, mask = render_chat(tok, record['messages'])
        learned = [i for i, m in zip(ids, mask) if m]
        call = record['messages'][1]['tool_calls'][0]['function']
        assert learned == ([special['call']] + tok.encode(call_text(call['name'], call['arguments'])) + [special['end']]
                           + tok.encode(record['meta']['answer']) + [special['end']])
        start = ids.index(special['tool'])  # the tool's turn: its result is read, never learned
        end = ids.index(special['end'], start)
        assert tok.decode(ids[start + 1:end]) == record['meta']['answer'] and not any(mask[start:end + 1])
        # and back: the same messages, the call in OpenAI's shape
        assert parse_chat(tok, ids) == [{**m, 'content': m['content']} for m in record['messages']]
    plain = tool_record('chat')  # a message that is no task has no call
    assert [m['role'] for m in plain['messages']] == ['user', 'assistant'] and 'tool' not in plain['meta']


def test_a_model_without_tool_tokens_refuses_tool_messages():
    old = CharTokenizer([chr(i) for i in range(32, 127)], CHAT_SPECIALS[:4])  # a chat model from before tools
    assert 'call' not in chat_ids(old)
    with pytest.raises(ValueError, match='without tool tokens'):
        render_chat(old, tool_record()['messages'])


class Scripted(torch.nn.Module):
    """A stand-in model whose reply is script(the row's context ids): each row of a batch on its own."""

    def __init__(self, script, block_size=256):
        super().__init__()
        self.script, self.w = script, torch.nn.Parameter(torch.zeros(1))
        self.config = type('C', (), {'block_size': block_size})()

    def stream(self, idx, max_new_tokens, pad=None):
        pad = pad.tolist() if pad is not None else [0] * idx.size(0)
        replies = [self.script(row[p:]) for row, p in zip(idx.tolist(), pad)]
        for t in range(max_new_tokens):
            yield torch.tensor([[r[t] if t < len(r) else r[-1]] for r in replies])


def caller(tok, call):
    """A script that calls `call` first, then answers with the last tool result it was given."""
    special = chat_ids(tok)

    def script(context):
        if special['tool'] not in context:
            return [special['call']] + tok.encode(call) + [special['end']]
        start = len(context) - 1 - context[::-1].index(special['tool'])
        return context[start + 1:context.index(special['end'], start)] + [special['end']]
    return script


def test_generation_runs_the_tool_and_goes_on(monkeypatch, stand_ins):
    tok = char_tok()
    special = chat_ids(tok)
    monkeypatch.setitem(tools.TOOLS, 'calc', (lambda e: f'<{e}>', ('expression',), 'a stub'))
    prompt = render_prompt(tok, [{'role': 'user', 'content': 'What is 2+3?'}])
    (trace,) = generate_with_tools(Scripted(caller(tok, 'calc(2+3)')), tok, [prompt], 16)
    assert trace.calls == [('calc(2+3)', '<2+3>')] and trace.answer == '<2+3>' and trace.finish == 'stop'
    turn = [special['tool']] + tok.encode('<2+3>') + [special['end'], special['assistant']]
    reply = [special['call']] + tok.encode('calc(2+3)') + [special['end']]
    assert trace.ids == reply + turn + tok.encode('<2+3>') + [special['end']]
    assert trace.mask == [1] * len(reply) + [0] * len(turn) + [1] * 6
    assert [m['role'] for m in trace.messages] == ['assistant', 'tool', 'assistant']
    assert render_chat(tok, [{'role': 'user', 'content': 'What is 2+3?'}] + trace.messages)[0] == prompt + trace.ids


def test_a_malformed_call_gets_an_error_and_the_answer_goes_on(stand_ins):
    tok = char_tok()
    prompt = render_prompt(tok, [{'role': 'user', 'content': 'hi'}])
    for call, why in (('calc(2+', 'malformed call'), ('nope(1)', "no tool 'nope'"), ('calc(1/0)', 'division by zero')):
        (trace,) = generate_with_tools(Scripted(caller(tok, call)), tok, [prompt], 64)
        assert trace.calls[0][1].startswith('error: ') and why in trace.calls[0][1]
        assert trace.answer == trace.calls[0][1] and trace.finish == 'stop'  # the script answered from the error
        assert trace.malformed == (why != 'division by zero')  # a call that parses is not malformed, even if it fails


def test_a_malformed_call_leaves_no_chat_token_text_in_its_message(stand_ins):
    """The message of a call that does not parse is the text the model wrote: '<|call|>' and '<|end|>' are
    tokens, and as text a later rendering would read them as characters the model never wrote."""
    tok = char_tok()
    prompt = render_prompt(tok, [{'role': 'user', 'content': 'hi'}])
    (trace,) = generate_with_tools(Scripted(caller(tok, 'calc(2+')), tok, [prompt], 64)
    assert trace.malformed == 1 and trace.messages[0] == {'role': 'assistant', 'content': 'calc(2+'}
    assert not any(s in m['content'] for m in trace.messages for s in CHAT_SPECIALS), trace.messages


def test_a_call_cut_before_its_end_does_not_run(monkeypatch, stand_ins):
    """A reply that runs out of max_new_tokens inside a call ends the row ('length'): the call may be cut
    anywhere (calc(4812+75 for calc(4812+7533)), so it is never run, even when what came reads as a call."""
    tok = char_tok()
    ran = []
    monkeypatch.setitem(tools.TOOLS, 'calc', (lambda e: ran.append(e) or '5', ('expression',), 'a stub'))
    prompt = render_prompt(tok, [{'role': 'user', 'content': 'What is 2+3?'}])
    for n in (len('calc(2+3)') + 1, 5):  # the whole call but its <|end|>; a call cut in its name
        (trace,) = generate_with_tools(Scripted(caller(tok, 'calc(2+3)')), tok, [prompt], n)
        assert ran == [] and trace.calls == [] and trace.finish == 'length', trace
        assert trace.ids == [chat_ids(tok)['call']] + tok.encode('calc(2+3)'[:n - 1]) and trace.mask == [1] * n
        assert trace.messages == [{'role': 'assistant', 'content': 'calc(2+3)'[:n - 1]}]


def test_calls_are_capped(stand_ins):
    tok = char_tok()
    special = chat_ids(tok)
    always = Scripted(lambda context: [special['call']] + tok.encode('calc(1+1)') + [special['end']])
    prompt = render_prompt(tok, [{'role': 'user', 'content': 'hi'}])
    (trace,) = generate_with_tools(always, tok, [prompt], 16, max_calls=2)
    assert trace.finish == 'calls' and len(trace.calls) == 2 and trace.answer == ''
    (short,) = generate_with_tools(Scripted(always.script, block_size=40), tok,
                                   [render_prompt(tok, [{'role': 'user', 'content': 'hi'}])], 16, max_calls=9)
    assert short.finish == 'length' and len(render_prompt(tok, [{'role': 'user', 'content': 'hi'}]) + short.ids) <= 40


def test_score_reports_tool_use():
    records = [{'meta': {'task': 'add', 'answer': '5', 'tool': 'calc', 'digits': 1}},
               {'meta': {'task': 'add', 'answer': '50', 'tool': 'calc', 'digits': 2}},
               {'meta': {'task': 'reverse', 'answer': 'cba'}}, {'meta': {'task': 'sort', 'answer': 'abc'}}]
    traces = [Trace(calls=[('calc(2+3)', '5')], answer='5'), Trace(answer='49'),
              Trace(calls=[('x', 'error: ...')], malformed=1, answer='cba'), Trace(answer='abc')]
    result = score(records, [t.answer for t in traces], traces)
    assert result['tools'] == {'called_when_needed': 0.5, 'needed': 2, 'called_when_not': 0.5, 'not_needed': 2,
                               'calls': 2, 'malformed': 0.5}
    assert result['digits'] == {'add': {1: 1.0, 2: 0.0}} and result['mean'] == pytest.approx((0.5 + 1 + 1) / 3)


@pytest.fixture(scope='module')
def tool_model(tmp_path_factory):
    """(data_dir, out_dir): the suite with tools at up to 3 digits, words of up to 8 letters and conversations of
    up to 2 turns, and a small model trained on it briefly: enough to call tools on some questions and not on
    others."""
    root = tmp_path_factory.mktemp('tools')
    data = root / 'tasks'
    meta = prepare_tasks.prepare(out_dir=str(data), tools=True, digits=3, word_len=8, max_turns=2, n_train=100,
                                 n_val=4, n_test=4, quiet=True)
    run_train(root / 'out', data, '--max_iters=150', f"--block_size={meta['max_conversation_tokens']}",
              '--batch_size=16', '--n_embd=64', '--n_head=4', '--learning_rate=3e-3', '--warmup_iters=10')
    return data, root / 'out'


def test_batched_tool_generation_equals_each_alone(tool_model):
    data, out = tool_model
    model, tok = load_model(out, 'cpu')
    records = load_records(data, 'test')
    prompts = [render_prompt(tok, question(r)) for r in records]
    assert len({len(p) for p in prompts}) > 1  # the batch really is padded
    batched = generate_with_tools(model, tok, prompts, 24, temperature=0)
    assert any(t.called for t in batched)  # the rounds are exercised
    for prompt, trace in zip(prompts, batched):
        (alone,) = generate_with_tools(model, tok, [prompt], 24, temperature=0)
        assert (trace.ids, trace.mask, trace.calls, trace.answer) == (alone.ids, alone.mask, alone.calls, alone.answer)


def test_eval_reports_tools_and_digits(tool_model):
    """A tool suite's default: test and gen side by side, each scored on every answer of a conversation."""
    data, out = tool_model
    p = run_script('-m', 'chat.eval', f'--out_dir={out}', '--json', '--device=cpu', '--dtype=float32')
    assert p.returncode == 0, p.stderr
    both = json.loads(p.stdout)
    assert both['data_dir'] == str(data) and set(both['splits']) == {'test', 'gen'}  # the model's suite, by default
    for split, result in both['splits'].items():
        asked = each_answer(load_records(data, split))
        assert result['n'] == len(asked) > len(load_records(data, split))  # a conversation's every answer
        assert set(result['tasks']) == set(TOOL_TASKS) and 0 <= result['mean'] <= 1
        assert set(result['tools']) == {'called_when_needed', 'needed', 'called_when_not', 'not_needed', 'calls',
                                        'malformed'}
        assert result['tools']['needed'] == sum('tool' in r['meta'] for r in asked)
        assert result['tools']['not_needed'] == sum('tool' not in r['meta'] for r in asked)
        assert set(result['digits']) == {'add', 'sub', 'mul', 'div'}
    # gen asks the digit pairs test never does
    assert set(both['splits']['gen']['digits']['add']) - set(both['splits']['test']['digits']['add'])
    one = run_script('-m', 'chat.eval', f'--out_dir={out}', '--json', '--split=test', '--device=cpu',
                     '--dtype=float32')
    assert json.loads(one.stdout)['split'] == 'test' and json.loads(one.stdout)['n'] == both['splits']['test']['n']
    table = run_script('-m', 'chat.eval', f'--out_dir={out}', '--device=cpu', '--dtype=float32')
    lines = table.stdout.splitlines()
    assert lines[0].split() == ['task', 'test', 'n', 'gen', 'n'], table.stdout
    assert 'test: tool called where needed' in table.stdout and 'gen: tool called' in table.stdout
    assert 'add by digits, first operand down, second across: test | gen' in lines, table.stdout


@pytest.mark.parametrize('algo', ['ppo', 'grpo'])
def test_rl_rollouts_run_tools_and_keep_results_out_of_the_loss(tool_model, tmp_path, monkeypatch, algo):
    from feedback import rl
    from seedgpt.config import load_config
    from seedgpt.policy import as_batch
    data, out = tool_model
    model, tok = load_model(out, 'cpu')
    records = load_records(data, 'train', 16)
    prompts = [render_prompt(tok, question(r)) for r in records]
    traces = generate_with_tools(model, tok, prompts, 24, temperature=1.0)
    assert any(t.called for t in traces)
    x, y = as_batch(prompts, [t.ids for t in traces], 'cpu', [t.mask for t in traces])
    for row, (p, t) in enumerate(zip(prompts, traces)):
        # y at position i is the target for token i + 1: exactly the tokens the model wrote, none it was given
        assert y[row, len(p) - 1:len(p) - 1 + len(t.ids)].tolist() == [i if m else -1 for i, m in zip(t.ids, t.mask)]
    seen = []
    real = rl.generate_with_tools
    monkeypatch.setattr(rl, 'generate_with_tools', lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    cfg = load_config(rl.Config, ['--device=cpu', '--dtype=float32', f'--init_from={out}', f'--ref_dir={out}',
                                  f'--data_dir={data}', f'--out_dir={tmp_path / "rl"}', '--max_iters=1',
                                  '--prompts_per_step=4', '--group_size=2', '--max_new_tokens=24', '--minibatch_size=8',
                                  '--eval_examples=4', '--log_interval=1', '--max_calls=2', f'--algo={algo}'])
    result = rl.main(cfg)
    assert 0 <= result['test_accuracy'] <= 1 and (tmp_path / 'rl' / 'ckpt.pt').exists()
    assert any(t.called for traces in seen for t in traces)  # the rollouts (and evals) ran the tools


def test_a_model_from_before_tools_gets_one_round_with_its_answer_as_a_message(stand_ins):
    old = CharTokenizer([chr(i) for i in range(32, 127)], CHAT_SPECIALS[:4])
    end = chat_ids(old)['end']
    (trace,) = generate_with_tools(Scripted(lambda context: old.encode('42') + [end]), old,
                                   [render_prompt(old, [{'role': 'user', 'content': 'hi'}])], 8)
    # the reward model (feedback.rl --reward=model) reads the question and these messages
    assert trace.answer == '42' and trace.messages == [{'role': 'assistant', 'content': '42'}] and not trace.called
