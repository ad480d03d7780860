"""
The OpenAI API's side of serving: a request body checked into what the engine needs, and the engine's
tokens back as text, stop strings and logprobs. serve/server.py puts HTTP around it.

    proto = Protocol(tok, block_size=64, max_tokens=256)
    ask = proto.parse(raw_body, chat=True)    # an Ask, or an ApiError (400) naming the bad parameter
    text = TextStream(tok, ask.stop, hidden_ids)

Every check follows OpenAI's documented ranges: temperature in [0, 2], top_p in (0, 1], n >= 1,
top_logprobs in [0, 20] (completions' logprobs in [0, 5]), up to 4 stop strings. A prompt's length is
checked before it is tokenized where its characters already prove it too long, then exactly.
"""
import json
import math
import random
from dataclasses import dataclass, field

from seedgpt.chat import ROLES, chat_ids, render_prompt


class ApiError(Exception):
    """An error the client gets as an OpenAI-style body."""

    def __init__(self, status, message, param=None, code=None, type='invalid_request_error'):
        super().__init__(message)
        self.status, self.body = status, {'error': {'message': message, 'type': type, 'param': param, 'code': code}}


NUMBER, INT, BOOL, STR = (int, float), (int,), (bool,), (str,)
STOP_CHARS = 256  # each stop string is looked for after every token: a long one would cost every token


def get(body, key, types, default=None):
    """body[key] if it has one of `types` (null counts as absent), else a 400 naming the parameter."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) != (types == BOOL) or not isinstance(value, types):
        want = {NUMBER: 'a number', INT: 'an integer', BOOL: 'a boolean', STR: 'a string'}[types]
        # a list or an object may nest too deep to print
        got = f"a {type(value).__name__}" if isinstance(value, (list, dict)) else json.dumps(value)[:80]
        raise ApiError(400, f"'{key}' must be {want}, got {got}", param=key, code='invalid_type')
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f"'{key}' must be a finite number", param=key, code='invalid_value')
    return value


def in_range(body, key, types, default, lo, hi, lo_open=False):
    """get(), and a 400 unless lo <= value <= hi (lo < value with lo_open)."""
    value = get(body, key, types, default)
    if value is not None and not ((lo < value <= hi) if lo_open else (lo <= value <= hi)):
        raise ApiError(400, f"'{key}' must be in {'(' if lo_open else '['}{lo}, {hi}], got {value}", param=key,
                       code='invalid_value')
    return value


def parse_json(raw):
    """A JSON object from the body's bytes; anything else (nested too deep for the parser included) is a 400."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        reason = 'nested too deep' if isinstance(e, RecursionError) else str(e)[:200]
        raise ApiError(400, f"the body is not valid JSON ({reason})", code='invalid_json') from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code='invalid_json')
    return body


@dataclass
class Ask:
    """One checked request: its prompt's ids and everything about how to answer it."""
    prompt: list
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seeds: list = field(default_factory=list)  # one per sample
    stop: list = field(default_factory=list)  # stop strings
    logprobs: int = None  # None, or how many top alternatives to give with each token's logprob
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage


class Protocol:
    """What the server knows to check a request: the tokenizer, the context and the caps."""

    def __init__(self, tok, block_size, max_tokens=256, max_prompt_tokens=0, max_n=16):
        self.tok, self.block_size, self.max_tokens, self.max_n = tok, block_size, max_tokens, max_n
        self.prompt_limit = min(max_prompt_tokens or block_size - 1, block_size - 1)
        try:
            self.chat_stop = set(chat_ids(tok).values())
        except SystemExit:
            self.chat_stop = None  # a base model: completions only
        # completions of any model end at a special token: <|endoftext|> or a chat token
        self.text_stop = set(getattr(tok, 'special_ids', {}).values()) | ({tok.eot} if hasattr(tok, 'eot') else set())
        # no token writes more bytes than this, so a text of more characters than limit x this is too long
        # for the context without tokenizing it (tokenizing 20 MB takes seconds)
        specials = set(getattr(tok, 'special_ids', {}).values())
        self.bytes_per_token = max(len(tok.decode([i]).encode('utf-8', 'surrogatepass'))
                                   for i in range(tok.vocab_size) if i not in specials)

    def too_long(self, n, param, what='tokens'):
        return ApiError(400, f"the prompt is {'more than ' if what != 'tokens' else ''}{n} tokens; this server takes "
                        f"at most {self.prompt_limit}", param=param, code='context_length_exceeded')

    def early_check(self, chars, param):
        if chars > self.prompt_limit * self.bytes_per_token:
            raise self.too_long(self.prompt_limit, param, 'chars')

    def parse(self, raw, chat):
        """The Ask of a request body (bytes), or an ApiError. Runs in a worker thread: it parses and tokenizes."""
        body = parse_json(raw)
        param = 'messages' if chat else 'prompt'
        if chat:
            if self.chat_stop is None:
                raise ApiError(400, "this is a base model without chat tokens; use /v1/completions",
                               code='not_a_chat_model')
            messages = body.get('messages')
            if not isinstance(messages, list) or not messages:
                raise ApiError(400, "'messages' must be a non-empty list", param='messages', code='invalid_type')
            for i, m in enumerate(messages):
                if not isinstance(m, dict) or m.get('role') not in ROLES or not isinstance(m.get('content'), str):
                    raise ApiError(400, f"messages[{i}] must be {{'role': one of {', '.join(ROLES)}, 'content': a "
                                   f"string}}", param=f'messages[{i}]', code='invalid_value')
            self.early_check(sum(len(m['content']) for m in messages), param)
            messages = [{'role': m['role'], 'content': m['content']} for m in messages]
            encode = lambda: render_prompt(self.tok, messages)  # noqa: E731
        else:
            text = get(body, 'prompt', STR)
            if not text:
                raise ApiError(400, "'prompt' must be a non-empty string", param='prompt', code='invalid_value')
            self.early_check(len(text), param)
            encode = lambda: self.tok.encode(text)  # noqa: E731
        ask = self.sampling(body, chat)  # cheap checks before the tokenizer runs
        try:
            ask.prompt = encode()
        except ValueError as e:
            raise ApiError(400, str(e), param=param, code='invalid_value') from None
        if len(ask.prompt) > self.prompt_limit:
            raise self.too_long(len(ask.prompt), param)
        key = 'max_completion_tokens' if body.get('max_completion_tokens') is not None else 'max_tokens'
        room = self.block_size - len(ask.prompt)
        if ask.max_tokens is None:
            ask.max_tokens = min(self.max_tokens, room)
        elif ask.max_tokens > room:
            raise ApiError(400, f"the model's context is {self.block_size} tokens: {len(ask.prompt)} in the prompt "
                           f"leave room for {room}, not {ask.max_tokens}; ask for fewer", param=key,
                           code='context_length_exceeded')
        return ask

    def sampling(self, body, chat):
        """The Ask's settings, each checked against OpenAI's documented range (the prompt comes later)."""
        key = 'max_completion_tokens' if body.get('max_completion_tokens') is not None else 'max_tokens'
        ask = Ask(prompt=[], max_tokens=in_range(body, key, INT, None, 1, self.max_tokens))
        ask.temperature = float(in_range(body, 'temperature', NUMBER, 1.0, 0, 2))
        ask.top_p = float(in_range(body, 'top_p', NUMBER, 1.0, 0, 1, lo_open=True))
        ask.n = in_range(body, 'n', INT, 1, 1, self.max_n)
        seed = get(body, 'seed', INT)
        seed = random.getrandbits(63) if seed is None else seed % 2 ** 63
        ask.seeds = [seed + i for i in range(ask.n)]  # n independent samples, each reproducible alone
        stop = body.get('stop')
        stop = [stop] if isinstance(stop, str) else stop
        if stop is not None and not (isinstance(stop, list) and len(stop) <= 4
                                     and all(isinstance(s, str) and 0 < len(s) <= STOP_CHARS for s in stop)):
            raise ApiError(400, f"'stop' must be a string or a list of up to 4, each of 1 to {STOP_CHARS} characters",
                           param='stop', code='invalid_value')
        ask.stop = stop or []
        if chat:  # chat: logprobs is a switch, top_logprobs how many alternatives
            top = in_range(body, 'top_logprobs', INT, None, 0, 20)
            if get(body, 'logprobs', BOOL, False):
                ask.logprobs = top or 0
            elif top is not None:
                raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param='top_logprobs', code='invalid_value')
        else:  # completions: logprobs is how many alternatives (0 gives the chosen token's only)
            ask.logprobs = in_range(body, 'logprobs', INT, None, 0, 5)
        ask.stream = get(body, 'stream', BOOL, False)
        options = body.get('stream_options')
        if options is not None and not isinstance(options, dict):
            raise ApiError(400, "'stream_options' must be an object", param='stream_options', code='invalid_type')
        ask.include_usage = bool(get(options or {}, 'include_usage', BOOL, False))
        return ask


class TextStream:
    """Generated tokens in, text out. Holds back what might still be the start of a stop string (stop
    strings are matched across token boundaries, and are not sent) or half a character (BPE may split
    one over tokens). `hidden` ids (end tokens) give no text."""

    def __init__(self, tok, stop=(), hidden=()):
        self.tok, self.stop, self.hidden = tok, list(stop), set(hidden)
        self.ids, self.held, self.stopped = [], '', False
        self.tokens = []  # the tokens fed since text was last taken, for their logprobs

    def feed(self, token):
        """The text that is safe to send after this token ('' while it is held back)."""
        if self.stopped or token.id in self.hidden or token.id >= self.tok.vocab_size:
            return ''
        self.tokens.append(token)
        self.ids.append(token.id)
        text = self.tok.decode(self.ids)
        if text.endswith('\ufffd'):
            return ''
        self.ids, self.held = [], self.held + text
        hits = [i for i in (self.held.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            out, self.held = self.held[:min(hits)], ''
            return out
        # hold back the longest tail that a stop string starts with
        keep = max([next((k for k in range(min(len(s) - 1, len(self.held)), 0, -1) if self.held.endswith(s[:k])), 0)
                    for s in self.stop], default=0)
        out, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
        return out

    def flush(self):
        """What is left at the end (no stop string came)."""
        out = '' if self.stopped else self.held + (self.tok.decode(self.ids) if self.ids else '')
        self.held, self.ids = '', []
        return out

    def take_tokens(self):
        tokens, self.tokens = self.tokens, []
        return tokens


def chat_logprobs(tok, tokens):
    """OpenAI's chat `logprobs` for a list of Tokens."""
    def entry(i, lp):
        text = tok.decode([i])
        return {'token': text, 'logprob': lp, 'bytes': list(text.encode('utf-8', 'surrogatepass'))}
    return {'content': [{**entry(t.id, t.logprob), 'top_logprobs': [entry(i, lp) for i, lp in t.top or []]}
                        for t in tokens], 'refusal': None}


def completion_logprobs(tok, tokens, offset=0):
    """OpenAI's completions `logprobs` for a list of Tokens, their text starting at character `offset`."""
    out = {'tokens': [], 'token_logprobs': [], 'top_logprobs': [], 'text_offset': []}
    for t in tokens:
        text = tok.decode([t.id])
        out['tokens'].append(text)
        out['token_logprobs'].append(t.logprob)
        out['top_logprobs'].append({tok.decode([i]): lp for i, lp in t.top or []})
        out['text_offset'].append(offset)
        offset += len(text)
    return out
