"""The first five minutes: what a newcomer types to the tool-using chat model, written here by hand (not by the
suite's generator), put to a small model trained in the test. A model this small and this brief is often
wrong, so the test asserts the shape of each reply, never its truth: a call to a known tool with arguments
that parse, then an answer; or an answer alone; never empty, never chat-token text."""
import pytest
import torch

from conftest import run_train
from prepare import tasks as prepare_tasks
from seedgpt.agent import generate_with_tools
from seedgpt.chat import CHAT_SPECIALS, render_prompt
from seedgpt.checkpoint import load_model
from seedgpt.tasks import check, generate
from seedgpt.tools import TOOLS, parse_call

# one question each, as people type them: what the newcomers asked, and more of the same
QUESTIONS = ["What is 2+2?", "what's 7 times 8", "How many times does s appear in mississippi?",
             "Reverse the word planet.", "Hello! Who are you?", "thanks!", "What can you do?",
             "What is the capital of France?", "Tell me a joke", "sort the letters of banana",
             "compute 1,234 - 5678", "What is (3+4)*5?", "12 divided by 5", "hi"]

# conversations whose later question builds on an earlier answer: (the turns before, as a person and the
# tools would have them, then the follow-up)
FOLLOW_UPS = [
    [{'role': 'user', 'content': 'What is 12*3?'}, {'role': 'assistant', 'content': '36'}, 'and times 3?'],
    [{'role': 'user', 'content': 'Reverse the word planet.'}, {'role': 'assistant', 'content': 'tenalp'},
     'now reverse it'],
    [{'role': 'user', 'content': 'What is 9+10?'}, {'role': 'assistant', 'content': '19'}, 'what about 12-5?'],
]


@pytest.fixture(scope='module')
def newcomer_model(tmp_path_factory):
    """(model, tok): a small model trained on a small suite with tools (up to 3 digits, words of up to 11
    letters, conversations of up to 2 turns): long enough to write its calls and lines whole, if not right."""
    root = tmp_path_factory.mktemp('newcomer')
    data = root / 'tasks'
    meta = prepare_tasks.prepare(out_dir=str(data), tools=True, digits=3, word_len=11, max_turns=2, n_train=400,
                                 n_val=4, n_test=4, quiet=True)
    run_train(root / 'out', data, '--max_iters=900', f"--block_size={meta['max_conversation_tokens']}",
              '--batch_size=16', '--n_embd=64', '--n_head=4', '--learning_rate=1e-2', '--muon_lr=0.04',
              '--warmup_iters=20')
    return load_model(root / 'out', 'cpu', torch.float32)


def assert_well_formed(trace, asked):
    """A reply is calls of known tools with arguments that parse (each run, its result given back), then an
    answer that is text: not empty, no chat token written out as characters."""
    for text, result in trace.calls:
        name, arguments = parse_call(text)  # raises on a call that is not name(arguments) of a known tool
        assert name in TOOLS and set(arguments) == set(TOOLS[name][1]), (asked, text)
        assert not result.startswith(f"error: {name} takes"), (asked, text, result)
    assert trace.malformed == 0 and trace.finish == 'stop', (asked, trace)
    assert trace.answer.strip(), (asked, trace)
    assert not any(s in trace.answer for s in CHAT_SPECIALS), (asked, trace.answer)


def test_each_newcomer_question_gets_a_well_formed_reply(newcomer_model):
    model, tok = newcomer_model
    prompts = [render_prompt(tok, [{'role': 'user', 'content': q}]) for q in QUESTIONS]
    traces = generate_with_tools(model, tok, prompts, 48, temperature=0)
    for asked, trace in zip(QUESTIONS, traces):
        assert_well_formed(trace, asked)


def test_a_follow_up_gets_a_well_formed_reply(newcomer_model):
    model, tok = newcomer_model
    for *before, asked in FOLLOW_UPS:
        messages = before + [{'role': 'user', 'content': asked}]
        (trace,) = generate_with_tools(model, tok, [render_prompt(tok, messages)], 48, temperature=0)
        assert_well_formed(trace, asked)
        # and a second turn after the model's own first: the conversation as chat.talk keeps it
        (first,) = generate_with_tools(model, tok, [render_prompt(tok, before[:1])], 48, temperature=0)
        messages = before[:1] + first.messages + [{'role': 'user', 'content': asked}]
        (again,) = generate_with_tools(model, tok, [render_prompt(tok, messages)], 48, temperature=0)
        assert_well_formed(again, asked)


def test_the_suite_asks_what_newcomers_ask():
    """The generator covers the newcomer's kinds of question: one-digit sums, operands of unequal lengths,
    negative results, words in them, thousands separators, English words, chat without a call, follow-ups;
    and the checker takes an answer's usual forms."""
    splits = generate(seed=3, digits=6, n_train=60, n_val=4, n_test=4, tools=True)
    train = splits['train']
    metas = [m for r in train for m in r['meta'].get('turns', [r['meta']])]
    pairs = {m['digits'] for m in metas if 'digits' in m}
    assert '1,1' in pairs and '6,1' in pairs and '1,6' in pairs
    assert any(m['task'] == 'sub' and m['answer'].startswith('-') for m in metas)
    questions = [m['content'] for r in train for m in r['messages'] if m['role'] == 'user']
    assert any(' times ' in q for q in questions) and any(',' in q and q[q.index(',') - 1].isdigit() for q in questions)
    assert any(q[:1].islower() for q in questions) and any(q.startswith("What's") for q in questions)
    assert any(m['task'] == 'chat' and 'tool' not in m for m in metas)
    assert any(m['task'] == 'followup' for m in metas)
    assert check('add', {'answer': '1234'}, '1,234') and check('add', {'answer': '1234'}, '1234.')
    assert check('reverse', {'answer': 'tenalp'}, 'tenalp.') and not check('add', {'answer': '1234'}, '12,34')
    hello = next(m for m in metas if m['task'] == 'chat')
    assert check('chat', hello, hello['answer'].upper()) and not check('chat', hello, 'calc')
