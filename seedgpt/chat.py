"""
The chat format: a conversation as token ids and a loss mask, one rendering for prepare, train, eval,
chat, RL and the server.

    <|system|>Be brief.<|end|><|user|>What is 48+75?<|end|><|assistant|>123<|end|>
    mask: 1 on '123<|end|>' (what the model learns to write), 0 elsewhere

The four chat tokens are special tokens of the tokenizer, in this order after its base vocabulary.
"""

ROLES = ('system', 'user', 'assistant')


CHAT_TOKENS = {'system': '<|system|>', 'user': '<|user|>', 'assistant': '<|assistant|>', 'end': '<|end|>'}


CHAT_SPECIALS = list(CHAT_TOKENS.values())  # in this order after the base vocabulary


def chat_ids(tok):
    """{'system', 'user', 'assistant', 'end'} -> token id, or a one-line error for a tokenizer without them."""
    ids = getattr(tok, 'special_ids', {})
    if not all(s in ids for s in CHAT_SPECIALS):
        raise SystemExit("error: this model has no chat tokens (a base model); fine-tune it with SFT on chat data "
                         "first, e.g. python -m prepare.tasks, then train.py with --data_dir=data/tasks")
    return {name: ids[s] for name, s in CHAT_TOKENS.items()}


def render_chat(tok, messages):
    """(ids, mask) of a conversation: each message is <|role|>content<|end|>.

    mask[i] is 1 when token i is one the model should learn to write: the content of each assistant
    message and its <|end|>; the role tokens, system and user messages are 0 (given, not learned).
    """
    special = chat_ids(tok)
    ids, mask = [], []
    for m in messages:
        role, content = m.get('role'), m.get('content')
        if role not in ROLES or not isinstance(content, str):
            raise ValueError(f"a message needs a role in {ROLES} and a string content, got {m!r}")
        body = tok.encode(content) + [special['end']]
        ids += [special[role]] + body
        mask += [0] + [int(role == 'assistant')] * len(body)
    return ids, mask


def render_prompt(tok, messages):
    """The conversation so far, then <|assistant|>: the prompt from which the model writes its reply."""
    return render_chat(tok, messages)[0] + [chat_ids(tok)['assistant']]


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
        elif name == 'end':
            messages.append({'role': role, 'content': tok.decode(body)})
            role = None
        elif name is not None:
            raise ValueError(f"{CHAT_TOKENS[name]} at position {pos}, inside a {role} message")
        else:
            body.append(i)
    if role is not None:
        raise ValueError(f"the last message ({role}) has no {CHAT_TOKENS['end']}")
    return messages

