"""serve.py's tool calls with the official openai client: a tiny model that has learnt a few conversations by
heart calls calc and count, the client runs the tool (seedgpt.tools.run_tool) and sends the result back, and the
model answers from it; streamed and not, with n, logprobs, stop and usage; tool_choice 'none' and a request
without tools keep it from calling; bad tools, tool_choice and tool messages get 400s."""
import json

import pytest
from conftest import ADD, CONVERSATIONS, COUNT, calls, client, error_of, http, own_reply, running

from seedgpt.api import openai_tools
from seedgpt.chat import parse_reply, render_prompt
from seedgpt.tools import run_tool

openai = pytest.importorskip('openai')


def ask(url, messages, **kw):
    return client(url).chat.completions.create(model='tiny', messages=messages,
                                               **{'temperature': 0, 'max_tokens': 40, **kw})


def streamed(url, messages, **kw):
    """A streamed reply put together as the openai docs do: content deltas joined, tool call deltas merged by
    index; also (finish_reason, the number of chunks that held content)."""
    content, tool_calls, finish, texts = '', {}, None, 0
    for chunk in ask(url, messages, stream=True, **kw):
        delta = chunk.choices[0].delta
        content += delta.content or ''
        texts += bool(delta.content)
        for d in delta.tool_calls or []:
            call = tool_calls.setdefault(d.index, {'id': '', 'name': '', 'arguments': ''})
            call['id'] += d.id or ''
            call['name'] += d.function.name or ''
            call['arguments'] += d.function.arguments or ''
        finish = chunk.choices[0].finish_reason or finish
    return content, [tool_calls[k] for k in sorted(tool_calls)], finish, texts


def run_calls(message):
    """What the client does with a reply that calls, as OpenAI's docs do: the assistant message as it came (the
    client's own object), and a tool message with each call's result (seedgpt.tools.run_tool is the client's tool)."""
    results = [{'role': 'tool', 'tool_call_id': c.id,
                'content': run_tool(c.function.name, json.loads(c.function.arguments))} for c in message.tool_calls]
    return [message] + results


def test_round_trip_with_the_openai_client(caller):
    model, tok = caller
    tools = openai_tools()
    with running(model, tok) as url:
        for question, content, name, arguments, result, answer in [
                (ADD, None, 'calc', {'expression': '48+75'}, '123', 'It is 123.'),
                (COUNT, 'Counting.', 'count', {'letter': 'r', 'word': 'strawberry'}, '3', 'Three.')]:
            r = ask(url, question, tools=tools)
            message, reply = r.choices[0].message, own_reply(model, tok, question)
            assert r.choices[0].finish_reason == 'tool_calls' and message.content == content
            (call,) = message.tool_calls
            assert call.type == 'function' and call.id.startswith('call_') and call.function.name == name
            assert json.loads(call.function.arguments) == arguments == json.loads(
                parse_reply(tok, reply)['tool_calls'][0]['function']['arguments'])
            assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(render_prompt(tok, question)), len(reply))
            history = question + run_calls(message)
            assert history[-1]['content'] == result
            final = ask(url, history, tools=tools)
            assert (final.choices[0].message.content, final.choices[0].finish_reason) == (answer, 'stop')
            assert final.choices[0].message.tool_calls is None
            assert final.usage.prompt_tokens == len(render_prompt(tok, question + [
                calls(name, call.function.arguments, content), {'role': 'tool', 'content': result}]))

            # streamed: the text before the call as content, the call never as text, then the call whole
            text, tool_calls, finish, _ = streamed(url, question, tools=tools)
            assert (text, finish) == (content or '', 'tool_calls')
            assert [(c['name'], json.loads(c['arguments'])) for c in tool_calls] == [(name, arguments)]
            assert tool_calls[0]['id'].startswith('call_')
            assert streamed(url, history, tools=tools)[:3] == (answer, [], 'stop')

            # and the openai client's own stream helper, which accumulates the chunks into a completion
            with client(url).chat.completions.stream(model='tiny', messages=question, tools=tools, temperature=0,
                                                     max_tokens=40) as stream:
                done = stream.get_final_completion().choices[0]
            assert done.finish_reason == 'tool_calls' and done.message.tool_calls[0].function.name == name
            assert json.loads(done.message.tool_calls[0].function.arguments) == arguments


def test_no_call_without_tools_or_with_tool_choice_none(caller):
    """<|call|> is banned: the reply is what the model writes with that token's logit at -inf, as text."""
    model, tok = caller
    call = tok.special_ids['<|call|>']
    with running(model, tok) as url:
        expected = parse_reply(tok, own_reply(model, tok, ADD, ban=[call]))['content']
        for kw in ({}, {'tools': openai_tools(), 'tool_choice': 'none'}):
            r = ask(url, ADD, **kw)
            assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason in ('stop', 'length')
            assert r.choices[0].message.content == expected
            assert streamed(url, ADD, **kw)[:2] == (expected, [])
        # the model still reads calls and results in the history, and answers from them
        history = CONVERSATIONS[0][:3]
        assert ask(url, history).choices[0].message.content == 'It is 123.'


def test_calls_of_tools_not_offered_or_cut_off_come_back_as_text(caller):
    model, tok = caller
    count_only = [t for t in openai_tools() if t['function']['name'] == 'count']
    with running(model, tok) as url:
        r = ask(url, ADD, tools=count_only)  # the model calls calc, which this client did not offer
        assert (r.choices[0].message.content, r.choices[0].finish_reason) == ('calc(48+75)', 'stop')
        assert r.choices[0].message.tool_calls is None
        assert streamed(url, ADD, tools=count_only)[:3] == ('calc(48+75)', [], 'stop')
        r = ask(url, ADD, tools=openai_tools(), max_tokens=5)  # cut off by max_tokens inside the call
        assert (r.choices[0].message.content, r.choices[0].finish_reason) == ('calc', 'length')
        # the request's schema names the arguments: the model's call is read in that order
        renamed = [{'type': 'function', 'function': {'name': 'calc', 'parameters': {
            'type': 'object', 'properties': {'math': {'type': 'string'}}}}}]
        (c,) = ask(url, ADD, tools=renamed).choices[0].message.tool_calls
        assert json.loads(c.function.arguments) == {'math': '48+75'}


def test_n_logprobs_stop_and_usage_with_tools(caller):
    model, tok = caller
    reply = own_reply(model, tok, COUNT)
    with running(model, tok) as url:
        r = ask(url, COUNT, tools=openai_tools(), n=3, logprobs=True, top_logprobs=2, stop=['r', '+'])
        assert [c.index for c in r.choices] == [0, 1, 2] and len({c.message.tool_calls[0].id for c in r.choices}) == 3
        for c in r.choices:  # stop strings end text, not a call (its 'r's); logprobs are the text's tokens
            assert (c.finish_reason, c.message.content) == ('tool_calls', 'Counting.')
            assert ''.join(e.token for e in c.logprobs.content) == 'Counting.'
            assert json.loads(c.message.tool_calls[0].function.arguments) == {'letter': 'r', 'word': 'strawberry'}
        assert r.usage.completion_tokens == 3 * len(reply)
        chunks = list(ask(url, COUNT, tools=openai_tools(), n=2, stream=True, stream_options={'include_usage': True}))
        assert chunks[-1].usage.completion_tokens == 2 * len(reply)
        finished = {c.choices[0].index: c.choices[0].finish_reason for c in chunks[:-1] if c.choices[0].finish_reason}
        assert finished == {0: 'tool_calls', 1: 'tool_calls'}
        r = ask(url, COUNT, tools=openai_tools(), stop='Count')  # a stop string before the call: no call
        assert (r.choices[0].message.content, r.choices[0].finish_reason) == ('', 'stop')
        assert r.choices[0].message.tool_calls is None


CHAT = '/v1/chat/completions'


def fn(name, **function):
    return {'type': 'function', 'function': {**({'name': name} if name else {}), **function}}


def result(call_id):
    return {'role': 'tool', 'content': '123', 'tool_call_id': call_id}


CALC = openai_tools()[0]
ANSWERED = ADD + [calls('calc', '{"expression": "48+75"}')]
BAD = [  # (body, param[, code]): each gets a 400 with that param and code (default invalid_value)
    ({'tools': CALC}, 'tools', 'invalid_type'),
    ({'tools': [{'type': 'retrieval'}]}, 'tools[0]'),
    ({'tools': [fn(None)]}, 'tools[0]'),
    ({'tools': [fn('a b')]}, 'tools[0]'),
    ({'tools': [fn('f', parameters={'type': 'array'})]}, 'tools[0]'),
    ({'tools': [fn('f', parameters=[])]}, 'tools[0]'),
    ({'tools': [CALC, CALC]}, 'tools[1]'),
    ({'tools': [CALC], 'tool_choice': 'required'}, 'tool_choice', 'unsupported_value'),
    ({'tools': [CALC], 'tool_choice': fn('calc')}, 'tool_choice', 'unsupported_value'),
    ({'tools': [CALC], 'tool_choice': 'sometimes'}, 'tool_choice'),
    ({'tool_choice': 'auto'}, 'tool_choice'),
    ({'messages': ADD + [result('call_0')]}, 'messages[1]'),
    ({'messages': ANSWERED + [{'role': 'tool', 'content': '123'}]}, 'messages[2]'),
    ({'messages': ANSWERED + [result('call_9')]}, 'messages[2]'),
    ({'messages': ANSWERED + [{'role': 'user', 'content': 'and?'}]}, 'messages[2]'),
    ({'messages': ANSWERED}, 'messages'),
    ({'messages': ANSWERED + [result('call_0')] * 2}, 'messages[3]'),
    ({'messages': ADD + [calls('calc', '{"expression": ')]}, 'messages[1]'),
    ({'messages': ADD + [calls('calc', '[1]')]}, 'messages[1]'),
    ({'messages': ADD + [{'role': 'assistant', 'content': None, 'tool_calls': []}]}, 'messages[1]'),
    ({'messages': [{'role': 'user', 'content': 'hi', 'tool_calls': ANSWERED[1]['tool_calls']}]}, 'messages[0]'),
    ({'messages': ADD + [{'role': 'assistant', 'content': None}]}, 'messages[1]'),
]


def test_bad_tools_and_tool_messages_get_400(caller):
    with running(*caller) as url:
        h = http(url)
        for body, param, *code in BAD:
            r = h.post(CHAT, json={'messages': ADD, 'max_tokens': 4, **body})
            error_of(r, 400, param, *(code or ['invalid_value']))
        with pytest.raises(openai.BadRequestError) as e:
            ask(url, ADD, tools=[CALC], tool_choice='required')
        assert "'auto'" in e.value.body['message'] and "'none'" in e.value.body['message']
        # the server's own tools, for clients that have none (the chat page): a bad call is a result, not an error
        assert h.get('/tools').json()['tools'] == openai_tools()
        run = lambda arguments: h.post('/tools/run', json={'name': 'calc', 'arguments': arguments})  # noqa: E731
        assert run('{"expression": "48+75"}').json() == {'content': '123'}
        assert run({'expression': '1/0'}).json()['content'].startswith('error: ')
        error_of(run('[1'), 400, 'arguments', 'invalid_value')
        assert h.get('/health').json()['tools'] is True


def test_drafting_serves_the_same_replies(caller, monkeypatch):
    """The server drafting by prompt lookup (--draft_tokens, seedgpt/engine.py) against the server without: a
    greedy reply's text and logprobs, a stop string, n=2 sampled with a seed, and a tool call are the same, and
    guesses were both made and kept (the answer copies the tool's result; the call, the question's word)."""
    from seedgpt import engine as engine_module
    counts, next_k = {'guessed': 0, 'kept': 0}, engine_module.next_k

    def count(k, K, m, most):
        counts['guessed'], counts['kept'] = counts['guessed'] + K, counts['kept'] + m
        return next_k(k, K, m, most)
    monkeypatch.setattr(engine_module, 'next_k', count)
    answered = CONVERSATIONS[0][:3]
    asks = [dict(messages=answered, logprobs=True, top_logprobs=2), dict(messages=answered, stop='3.'),
            dict(messages=COUNT, n=2, temperature=0.8, seed=5, tools=openai_tools()),
            dict(messages=COUNT, tools=openai_tools(), logprobs=True)]

    def replies(draft_tokens):
        """Each ask's choices as (content, finish, calls, tokens with their alternatives), and their logprobs."""
        with running(*caller, draft_tokens=draft_tokens) as url:
            choices = [c for kw in asks for c in sorted(ask(url, **kw).choices, key=lambda c: c.index)]
        lp = [c.logprobs.content if c.logprobs else [] for c in choices]
        return ([(c.message.content, c.finish_reason, [(t.function.name, t.function.arguments)
                                                       for t in c.message.tool_calls or []],
                  [(e.token, [a.token for a in e.top_logprobs]) for e in es]) for c, es in zip(choices, lp)],
                [e.logprob for es in lp for e in es])
    (plain, plain_lp), (fast, fast_lp) = replies(0), replies(4)
    assert fast == plain and fast_lp == pytest.approx(plain_lp, abs=1e-5)  # a forward of several: other last bits
    assert plain[0][0] == 'It is 123.' and plain[1][:2] == ('It is 12', 'stop') and plain[4][2] and plain[0][3]
    assert 0 < counts['kept'] < counts['guessed'], counts
