"""The chat format (mask, round trips) and prepare/tasks.py (determinism, disjoint splits, checkers, files), the plain
suite and the one with tools (its gen split held out by construction, conversations scored on every answer)."""
import itertools
import json
import string

import numpy as np
import pytest

from conftest import run_script
from prepare import tasks
from seedgpt.chat import CHAT_SPECIALS, chat_ids, parse_chat, render_chat, render_prompt
from seedgpt.tasks import (AGAIN, ASK, CONTEXT, CORES, DO, ENGLISH, FOLLOW_CORES, FOLLOW_FORMS, FORMS, GEN_PAIRS,
                           HELLO, OUTSIDE, PHRASES, TASKS, THANKS, TaskError, check, each_answer, generate, phrase,
                           GROUPS, question, score, tables)
from seedgpt.tokenizer import CharTokenizer, GPT2Tokenizer, load_tokenizer

CONV = [{'role': 'system', 'content': 'Be brief.'},
        {'role': 'user', 'content': 'What is 48+75?'},
        {'role': 'assistant', 'content': '123'},
        {'role': 'user', 'content': 'And <|end|> 2-1?'},  # a chat token typed as text stays text
        {'role': 'assistant', 'content': '1'}]
TEXT = ('<|system|>Be brief.<|end|><|user|>What is 48+75?<|end|><|assistant|>123<|end|>'
        '<|user|>And <|end|> 2-1?<|end|><|assistant|>1<|end|>')


def char_tok():
    return CharTokenizer(sorted(set(string.printable) - set('\t\r\x0b\x0c')), CHAT_SPECIALS)


@pytest.fixture(scope='module')
def gpt2_chat_tok():
    return GPT2Tokenizer(CHAT_SPECIALS)


def test_chat_token_ids_follow_the_base_vocabulary(gpt2_chat_tok):
    tok = char_tok()
    assert chat_ids(tok) == {'system': 96, 'user': 97, 'assistant': 98, 'end': 99, 'tool': 100, 'call': 101}
    assert tok.vocab_size == 102
    assert chat_ids(gpt2_chat_tok) == {'system': 50257, 'user': 50258, 'assistant': 50259, 'end': 50260,
                                       'tool': 50261, 'call': 50262}
    assert gpt2_chat_tok.vocab_size == 50263
    assert gpt2_chat_tok.encode('Hello world') == [15496, 995]  # the base BPE is unchanged
    for t in (tok, gpt2_chat_tok):
        assert max(t.encode('<|end|><|user|>')) < t.vocab_size - 6  # typed text never yields a chat token


def test_mask_is_exactly_assistant_content_and_end():
    tok = char_tok()
    ids, mask = render_chat(tok, CONV)
    S, U, A, E = 96, 97, 98, 99
    enc = tok.encode
    expected = [(S, 0)] + [(i, 0) for i in enc('Be brief.')] + [(E, 0)] \
        + [(U, 0)] + [(i, 0) for i in enc('What is 48+75?')] + [(E, 0)] \
        + [(A, 0)] + [(i, 1) for i in enc('123')] + [(E, 1)] \
        + [(U, 0)] + [(i, 0) for i in enc('And <|end|> 2-1?')] + [(E, 0)] \
        + [(A, 0)] + [(i, 1) for i in enc('1')] + [(E, 1)]
    assert list(zip(ids, mask)) == expected


def test_mask_gpt2(gpt2_chat_tok):
    ids, mask = render_chat(gpt2_chat_tok, CONV)
    learned = [i for i, k in zip(ids, mask) if k]
    assert learned == gpt2_chat_tok.encode('123') + [50260] + gpt2_chat_tok.encode('1') + [50260]


@pytest.mark.parametrize('which', ['char', 'gpt2'])
def test_render_round_trips(which, gpt2_chat_tok):
    tok = char_tok() if which == 'char' else gpt2_chat_tok
    conv = CONV if which == 'char' else CONV + [{'role': 'user', 'content': '你好，世界 🙂'},
                                                {'role': 'assistant', 'content': ' spaced \n lines '}]
    ids, mask = render_chat(tok, conv)
    assert len(ids) == len(mask)
    assert tok.decode(ids).startswith(TEXT)
    assert parse_chat(tok, ids) == conv


def test_prompt_is_the_training_prefix():
    tok = char_tok()
    ids, _ = render_chat(tok, CONV)
    prompt = render_prompt(tok, CONV[:-1])
    assert prompt[-1] == chat_ids(tok)['assistant']
    assert ids[:len(prompt)] == prompt  # what the model sees at inference is what it was trained on
    assert ids[len(prompt):] == tok.encode('1') + [chat_ids(tok)['end']]


def test_parse_rejects_malformed():
    tok = char_tok()
    ids, _ = render_chat(tok, CONV[:2])
    for bad in (ids[:-1], ids[1:], ids[:3] + [97] + ids[3:]):
        with pytest.raises(ValueError):
            parse_chat(tok, bad)
    with pytest.raises(ValueError, match='role'):
        render_chat(tok, [{'role': 'bot', 'content': 'hi'}])


def test_base_tokenizer_has_no_chat_tokens():
    with pytest.raises(SystemExit, match='^error: .*base model.*SFT'):
        render_prompt(CharTokenizer(list('abc')), [{'role': 'user', 'content': 'abc'}])


def test_generator_is_deterministic_with_disjoint_splits():
    a = generate(seed=5, n_train=300, n_val=30, n_test=40)
    assert a == generate(seed=5, n_train=300, n_val=30, n_test=40)
    assert a != generate(seed=6, n_train=300, n_val=30, n_test=40)
    problems, questions = {}, {}
    for split, records in a.items():
        assert len(records) == len(TASKS) * {'train': 300, 'val': 30, 'test': 40}[split]
        problems[split] = {json.dumps(r['meta'], sort_keys=True) for r in records}
        questions[split] = {r['messages'][0]['content'] for r in records}
        assert len(problems[split]) == len(records)  # no problem twice within a split
    for s, t in (('train', 'val'), ('train', 'test'), ('val', 'test')):
        assert not problems[s] & problems[t]
        assert not questions[s] & questions[t]
    used = set()  # every phrasing of every task is used, and each question states its operands
    for r in a['train']:
        operands = {k: v for k, v in r['meta'].items() if k not in ('task', 'answer')}
        forms = [p.format(**operands) for p in PHRASES[r['meta']['task']]]
        used.add((r['meta']['task'], forms.index(r['messages'][0]['content'])))
    assert used == {(t, i) for t in TASKS for i in range(len(PHRASES[t]))}


def test_generator_refuses_more_problems_than_exist():
    with pytest.raises(TaskError, match='too few distinct add'):
        generate(digits=1, n_train=100, n_val=1, n_test=1)


def reference_answer(m):
    """Each task's answer, worked out here independently of prepare/tasks.py."""
    return {'add': lambda: str(m['a'] + m['b']), 'sub': lambda: str(m['a'] - m['b']),
            'reverse': lambda: m['w'][::-1], 'sort': lambda: ''.join(sorted(m['w'])),
            'count': lambda: str(sum(ch == m['c'] for ch in m['w']))}[m['task']]()


def test_answers_are_right_and_checker_judges_them():
    for r in generate(seed=2, digits=3, word_len=7, n_train=200, n_val=1, n_test=1)['train']:
        m = r['meta']
        assert m['answer'] == reference_answer(m) == r['messages'][1]['content']
        assert check(m['task'], m, m['answer'])
        assert check(m['task'], m, f" {m['answer']}\n")
        assert not check(m['task'], m, m['answer'] + 'x')
        assert not check(m['task'], m, '')
    q = {'a': 48, 'b': 75, 'answer': '123'}
    assert check('add', q, '123') and check('add', q, '0123')
    assert not check('add', q, '124') and not check('add', q, '12 3') and not check('add', q, '-123')
    assert check('sub', {'answer': '0'}, '0') and not check('sub', {'answer': '0'}, 'zero')
    assert check('reverse', {'w': 'kvit', 'answer': 'tivk'}, 'tivk')
    assert not check('reverse', {'w': 'kvit', 'answer': 'tivk'}, 'Tivk')
    assert check('sort', {'w': 'kvit', 'answer': 'iktv'}, 'iktv')
    assert not check('sort', {'w': 'kvit', 'answer': 'iktv'}, 'ikvt')
    assert check('count', {'c': 'a', 'w': 'abaca', 'answer': '3'}, '3')
    assert not check('count', {'c': 'a', 'w': 'abaca', 'answer': '3'}, '2')
    with pytest.raises(ValueError, match='unknown task'):
        check('multiply', q, '1')


def read_split(out, split, meta):
    ids = np.fromfile(out / f'{split}.bin', dtype=meta['dtype'])
    mask = np.fromfile(out / f'{split}.mask.bin', dtype=np.uint8)
    starts = np.fromfile(out / f'{split}.idx.bin', dtype=np.int64)
    return ids, mask, starts


@pytest.mark.parametrize('which', ['char', 'gpt2', 'bpe'])
def test_prepare_writes_consistent_files(tmp_path, which):
    out = tmp_path / 'tasks'
    meta = tasks.prepare(out_dir=str(out), tokenizer=which, n_train=40, n_val=8, n_test=10, quiet=True)
    assert meta == json.loads((out / 'meta.json').read_text())
    assert meta['format'] == 'chat' and meta['special_tokens'] == dict(zip(CHAT_SPECIALS, range(
        meta['vocab_size'] - len(CHAT_SPECIALS), meta['vocab_size'])))
    tok = load_tokenizer(meta)
    assert tok.vocab_size == meta['vocab_size']
    longest = 0
    for split, n in (('train', 40), ('val', 8)):
        records = [json.loads(line) for line in (out / f'{split}.jsonl').read_text().splitlines()]
        ids, mask, starts = read_split(out, split, meta)
        assert len(records) == len(starts) == 5 * n and len(ids) == len(mask) == meta[f'{split}_tokens']
        assert starts[0] == 0 and np.all(np.diff(starts) > 0)
        assert int(mask.sum()) == meta[f'{split}_loss_tokens'] and set(np.unique(mask)) == {0, 1}
        assert meta[f'{split}_loss_bytes'] == sum(len(r['meta']['answer'].encode()) for r in records)
        ends = list(starts[1:]) + [len(ids)]
        for r, s, e in zip(records, starts, ends):
            conv = ids[s:e].tolist()
            assert parse_chat(tok, conv) == r['messages']
            assert (conv, mask[s:e].tolist()) == render_chat(tok, r['messages'])
            assert tok.decode([i for i, k in zip(conv, mask[s:e]) if k]) == r['meta']['answer'] + '<|end|>'
            longest = max(longest, e - s)
    assert not (out / 'test.bin').exists() and len((out / 'test.jsonl').read_text().splitlines()) == 50
    assert longest <= meta['max_conversation_tokens']
    # the same seed writes the same bytes
    again = tasks.prepare(out_dir=str(tmp_path / 'again'), tokenizer=which, n_train=40, n_val=8, n_test=10, quiet=True)
    assert again == meta
    for name in ('train.bin', 'train.mask.bin', 'train.idx.bin', 'test.jsonl'):
        assert (out / name).read_bytes() == (tmp_path / 'again' / name).read_bytes()


def test_show_colours_the_loss(tmp_path):
    out = tmp_path / 'tasks'
    p = run_script('-m', 'prepare.tasks', f'--out_dir={out}', '--n_train=5', '--n_val=2', '--n_test=2', '--show=2')
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith('wrote') and len(lines) == 4  # summary, legend, two conversations
    records = [json.loads(line) for line in (out / 'train.jsonl').read_text().splitlines()]
    for line, r in zip(lines[2:], records):
        question, answer = r['messages'][0]['content'], r['meta']['answer']
        assert line == f"\033[90m<|user|>{question}<|end|><|assistant|>\033[0m\033[32m{answer}<|end|>\033[0m"


def test_bad_settings_one_line_error(tmp_path):
    p = run_script('-m', 'prepare.tasks', f'--out_dir={tmp_path / "t"}', '--digits=1', '--n_train=500')
    assert p.returncode != 0 and 'Traceback' not in p.stderr
    assert p.stderr.strip().startswith('error: too few distinct') and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 't').exists()


# ---- the suite with tools: what people type, and a gen split held out of training by construction

def tool_suite(**kw):
    return generate(**{'seed': 5, 'digits': 6, 'n_train': 80, 'n_val': 8, 'n_test': 12, 'tools': True, **kw})


def turn_metas(records):
    return [m for r in records for m in r['meta'].get('turns', [r['meta']])]


def test_tool_suite_is_deterministic_with_disjoint_splits():
    a = tool_suite()
    assert a == tool_suite() and a != tool_suite(seed=6)
    assert set(a) == {'train', 'val', 'test', 'gen'}
    problems = {}
    for split, records in a.items():
        # a problem is its computation; chat messages may recur within a split, never across
        problems[split] = [(m['task'], m.get('a'), m.get('b'), m.get('w'), m.get('c'), m.get('expression'),
                            m.get('n'), m.get('k'), m.get('how')) for m in turn_metas(records) if m['task'] != 'chat']
        assert len(set(problems[split])) == len(problems[split]), split
    chats = {s: {m['content'] for r in recs for m, nxt in zip(r['messages'], r['messages'][1:])
                 if m['role'] == 'user' and nxt['content'] in (HELLO, OUTSIDE, THANKS)} for s, recs in a.items()}
    for s, t in itertools.combinations(a, 2):
        assert not set(problems[s]) & set(problems[t]), (s, t)
        assert not chats[s] & chats[t], (s, t)


def test_gen_differs_from_train_by_construction():
    """Every gen question is in a phrasing training never has, or (arithmetic) of a digit-length pair it never
    has; gen's English words are never train's; follow-ups too come in held-out forms."""
    a = tool_suite()
    train, gen = turn_metas(a['train'] + a['val'] + a['test']), turn_metas(a['gen'])
    seen_forms, seen_pairs = {m['form'] for m in train}, {m['digits'] for m in train if 'digits' in m}
    assert not seen_pairs & {f'{x},{y}' for x, y in GEN_PAIRS}
    for m in gen:
        assert m['form'] not in seen_forms or m.get('digits') in {f'{x},{y}' for x, y in GEN_PAIRS}, m
    assert {m['digits'] for m in gen if 'digits' in m} & {f'{x},{y}' for x, y in GEN_PAIRS}
    assert any(m['task'] == 'followup' for m in gen)
    english = set(ENGLISH)
    assert len(english) == len(ENGLISH)  # a word twice could fall on both sides
    assert not {m['w'] for m in train if m.get('w') in english} & {m['w'] for m in gen if m.get('w') in english}


def test_gen_phrasings_are_new_pairings_of_parts_training_knows():
    """A held-out phrasing pairs a core and a wrapper that training both has, each with others: every core is
    seen in some wrapper, every wrapper around some core, and about a fifth of the pairings are held out."""
    for cores, wrappers, forms in [(CORES.values(), (ASK, DO), [FORMS[t] for t in CORES]),
                                   (FOLLOW_CORES.values(), AGAIN, [FOLLOW_FORMS[h] for h in FOLLOW_CORES])]:
        wrappers_seen, pairings, new = set(), 0, 0
        for core_set, (seen, held_out, _) in zip(cores, forms):
            assert not set(seen) & set(held_out)
            for kind in (0, 1):
                for core in core_set[kind]:
                    made = {w: phrase(w, core) for w in wrappers[kind]}
                    assert any(f in seen for f in made.values()), core
                    wrappers_seen |= {(kind, w) for w, f in made.items() if f in seen}
                    pairings, new = pairings + len(made), new + sum(f in held_out for f in made.values())
        assert wrappers_seen == {(k, w) for k in (0, 1) for w in wrappers[k]}
        assert 0.1 < new / pairings < 0.3, new / pairings


def test_tool_suite_answers_are_right():
    """Each answer, worked out here from the operands, independently of seedgpt/tasks.py and its tools."""
    for r in tool_suite()['train']:
        for m in turn_metas([r]):
            t, ans = m['task'], m['answer']
            if t in ('add', 'sub', 'mul'):
                assert int(ans) == {'add': m['a'] + m['b'], 'sub': m['a'] - m['b'], 'mul': m['a'] * m['b']}[t]
                assert m['digits'] == f"{len(str(m['a']))},{len(str(m['b']))}"
            elif t == 'div':
                assert abs(float(ans) - m['a'] / m['b']) < 1e-9 * max(1, m['a'] / m['b'])
            elif t == 'expr':
                assert abs(float(ans) - eval(m['expression'])) < 1e-6 * max(1, abs(float(ans)))  # our own text
            elif t in ('reverse', 'sort'):
                assert ans == (m['w'][::-1] if t == 'reverse' else ''.join(sorted(m['w'])))
            elif t == 'count':
                assert int(ans) == sum(ch == m['c'] for ch in m['w'])
            assert 2 <= len(m.get('w') or 'ab') <= 15
        # a conversation's turns are its user messages, each answered by the last assistant message before the next
        users = [i for i, msg in enumerate(r['messages']) if msg['role'] == 'user']
        assert len(users) == len(r['meta'].get('turns', [0])) <= 4
        for i, m in zip(users, turn_metas([r])):
            answer = next(msg for msg in r['messages'][i + 1:] if msg['role'] == 'assistant' and msg['content'])
            assert answer['content'] == m['answer']


def test_tool_suite_checker_takes_usual_forms():
    assert check('add', {'answer': '1234'}, '1,234') and check('add', {'answer': '1234'}, ' 1234. ')
    assert check('sub', {'answer': '-42'}, '-42') and not check('sub', {'answer': '-42'}, '42')
    assert check('div', {'answer': '2.5'}, '2.50') and not check('div', {'answer': '2.5'}, '2,5')
    assert not check('mul', {'answer': '1234'}, '12,34') and not check('mul', {'answer': '1234'}, '1234?')
    assert check('reverse', {'answer': 'tenalp'}, 'tenalp.') and not check('reverse', {'answer': 'tenalp'}, 'Tenalp')
    hello = {'answer': HELLO}
    assert check('chat', hello, HELLO.lower().replace(' ', '  ')) and not check('chat', hello, '')
    assert check('followup', {'kind': 'number', 'answer': '108'}, '108')
    assert check('followup', {'kind': 'text', 'answer': 'planet'}, 'planet') and not check(
        'followup', {'kind': 'text', 'answer': 'planet'}, '108')


def test_a_conversation_is_scored_on_every_answer():
    records = [r for r in tool_suite()['test'] if 'turns' in r['meta']]
    items = each_answer(records)
    assert len(items) == sum(len(r['meta']['turns']) for r in records)
    for item in items:
        assert item['messages'][-1]['role'] == 'assistant' and item['messages'][-1]['content'] == item['meta']['answer']
        assert question(item)[-1]['role'] == 'user'
    perfect = score(items, [i['meta']['answer'] for i in items])
    assert perfect['mean'] == 1.0


def test_the_hard_cases_are_scored_as_groups():
    """score's 'groups': one-digit arithmetic, operands of unequal lengths and words of 10 letters or more, each
    over exactly its questions, and shown in the side-by-side table."""
    items = [i for i in each_answer(tool_suite()['test']) if i['meta']['task'] != 'followup']
    member = {name: [i for i in items if GROUPS[name](i['meta'])] for name in GROUPS}
    assert all(member.values())  # the suite asks each kind
    assert all(i['meta']['digits'] == '1,1' for i in member['one digit'])
    assert all(len(set(i['meta']['digits'].split(','))) == 2 for i in member['unequal lengths'])
    assert all(len(i['meta']['w']) >= 10 and i['meta']['task'] in ('count', 'reverse', 'sort')
               for i in member['long words'])
    # right on every long word only: 1.0 there, and the others' share of long-word-free questions is 0
    answers = [i['meta']['answer'] if GROUPS['long words'](i['meta']) else '?' for i in items]
    result = score(items, answers)
    assert result['groups']['long words'] == {'n': len(member['long words']), 'accuracy': 1.0}
    assert result['groups']['one digit']['accuracy'] == 0 and result['groups']['unequal lengths']['accuracy'] == 0
    assert f"test: hard cases: one digit 0.000 (of {len(member['one digit'])})" in tables({'test': result, 'gen': result})


def test_tool_suite_fits_its_context(tmp_path):
    meta = tasks.prepare(out_dir=str(tmp_path / 't'), tools=True, digits=6, n_train=60, n_val=4, n_test=8, quiet=True)
    assert meta['max_conversation_tokens'] <= CONTEXT + 1 and meta['conversations']['gen'] > 0
    assert (tmp_path / 't' / 'gen.jsonl').exists() and not (tmp_path / 't' / 'gen.bin').exists()
    single = tasks.prepare(out_dir=str(tmp_path / 's'), tools=True, digits=6, n_train=60, n_val=4, n_test=8,
                           max_turns=1, quiet=True)
    records = [json.loads(line) for line in (tmp_path / 's' / 'train.jsonl').read_text().splitlines()]
    assert all('turns' not in r['meta'] for r in records) and single['max_conversation_tokens'] < 130
