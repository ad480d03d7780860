"""
The chat format: a conversation as token ids and a loss mask, one rendering for prepare, train, eval,
chat, RL and the server.

    <|system|>Be brief.<|end|><|user|>What is 48+75?<|end|><|assistant|>123<|end|>
    mask: 1 on '123<|end|>' (what the model learns to write), 0 elsewhere

With a tool (seedgpt/tools.py), the assistant's turn is a call, a tool turn holds its result, and the
assistant answers from it:

    <|user|>What is 4812+7533?<|end|><|assistant|><|call|>calc(4812+7533)<|end|>
        <|tool|>12345<|end|><|assistant|>12345<|end|>                 (one line, broken here to fit)
    mask: 1 on '<|call|>calc(4812+7533)<|end|>' and on '12345<|end|>' of the last turn; never on the tool's
    result, which the model reads but does not write

Messages are OpenAI's: an assistant message may carry tool_calls ([{"function": {"name", "arguments"}}]),
a tool message carries the result as its content. The six chat tokens are special tokens of the
tokenizer, in this order after its base vocabulary; a model made before tools has the first four.
"""
import json

from seedgpt.tools import ToolError, call_text, parse_call

ROLES = ('system', 'user', 'assistant', 'tool')


CHAT_TOKENS = {'system': '<|system|>', 'user': '<|user|>', 'assistant': '<|assistant|>', 'end': '<|end|>',
               'tool': '<|tool|>', 'call': '<|call|>'}


CHAT_SPECIALS = list(CHAT_TOKENS.values())  # in this order after the base vocabulary


def is_chat(tok):
    """Whether a tokenizer has the chat tokens: a chat model's, not a base model's."""
    return all(s in tok.special_ids for s in CHAT_SPECIALS[:4])


def chat_ids(tok):
    """{'system', 'user', 'assistant', 'end'} and, for a model that knows tools, 'tool' and 'call' -> token id;
    a one-line error for a tokenizer without the first four."""
    ids = tok.special_ids
    if not is_chat(tok):
        raise SystemExit("error: this model has no chat tokens (a base model); fine-tune it with SFT on chat data "
                         "first, e.g. python -m prepare.tasks, then train.py with --data_dir=data/tasks")
    return {name: ids[s] for name, s in CHAT_TOKENS.items() if s in ids}


def stop_ids(tok):
    """The ids that end an assistant's turn as it is generated: every chat token but <|call|>, which
    starts the call that the turn then holds (the call ends at <|end|>)."""
    return {i for name, i in chat_ids(tok).items() if name != 'call'}


def knows_tools(tok):
    return 'call' in chat_ids(tok)


def render_chat(tok, messages):
    """(ids, mask) of a conversation: each message is <|role|>content<|end|>.

    mask[i] is 1 when token i is one the model should learn to write: the content of each assistant
    message and its <|end|>; the role tokens, system and user messages are 0 (given, not learned).
    """
    special = chat_ids(tok)
    ids, mask = [], []
    for m in messages:
        role, content, calls = m.get('role'), m.get('content'), m.get('tool_calls') or []
        if content is None and calls:  # OpenAI's assistant message that only calls
            content = ''
        if role not in ROLES or not isinstance(content, str):
            raise ValueError(f"a message needs a role in {ROLES} and a string content, got {m!r}")
        if (role == 'tool' or calls) and 'call' not in special:
            raise ValueError("this model was trained without tool tokens: it cannot read tool calls or results")
        if calls and role != 'assistant':
            raise ValueError(f"only an assistant message can hold tool_calls, not a {role} message")
        body = tok.encode(content)
        for call in calls:
            fn = call.get('function') if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get('name'), str):
                raise ValueError(f"a tool call is {{'function': {{'name', 'arguments'}}}}, got {call!r}")
            body += [special['call']] + tok.encode(call_text(fn['name'], fn.get('arguments') or '{}'))
        body.append(special['end'])
        ids += [special[role]] + body
        mask += [0] + [int(role == 'assistant')] * len(body)
    return ids, mask


def loss_text(tok, ids, mask):
    """The text that the tokens in the loss stand for (chat tokens stand for none): bits per byte's bytes."""
    special = set(chat_ids(tok).values())
    return tok.decode([i for i, m in zip(ids, mask) if m and i not in special and i < tok.vocab_size])


def render_prompt(tok, messages):
    """The conversation so far, then <|assistant|>: the prompt from which the model writes its reply."""
    return render_chat(tok, messages)[0] + [chat_ids(tok)['assistant']]


def parse_reply(tok, ids):
    """{'role': 'assistant', 'content', 'tool_calls'?} of an assistant turn's ids (its <|end|> optional):
    text before the first <|call|>, then each call. A call that is not name(arguments) of a known
    tool raises ToolError; generation answers it with an error result (seedgpt/agent.py)."""
    special = chat_ids(tok)
    stop = set(special.values())
    call_id = special.get('call')
    parts, part = [], []
    for i in ids:
        if i == call_id:
            parts.append(part)
            part = []
        elif i not in stop and i < tok.vocab_size:
            part.append(i)
    parts.append(part)
    message = {'role': 'assistant', 'content': tok.decode(parts[0])}
    if len(parts) > 1:
        message['tool_calls'] = []
        for part in parts[1:]:
            name, arguments = parse_call(tok.decode(part))
            function = {'name': name, 'arguments': json.dumps(arguments)}
            message['tool_calls'].append({'type': 'function', 'function': function})
    return message


def parse_chat(tok, ids):
    """The messages back from ids made by render_chat; a ValueError if they are not well formed."""
    names = {i: name for name, i in chat_ids(tok).items()}
    messages, role, body = [], None, []
    for pos, i in enumerate(ids):
        name = names.get(i)
        if role is None:
            if name not in ROLES:
                raise ValueError(f"expected a role token at position {pos}, got id {i}")
            role, body = name, []
        elif name == 'call' and role == 'assistant':
            body.append(i)
        elif name == 'end':
            if role == 'assistant':
                try:
                    messages.append(parse_reply(tok, body))
                except ToolError as e:
                    raise ValueError(str(e)) from None
            else:
                messages.append({'role': role, 'content': tok.decode(body)})
            role = None
        elif name is not None:
            raise ValueError(f"{CHAT_TOKENS[name]} at position {pos}, inside a {role} message")
        else:
            body.append(i)
    if role is not None:
        raise ValueError(f"the last message ({role}) has no {CHAT_TOKENS['end']}")
    return messages

