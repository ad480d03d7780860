"""
The OpenAI API's side of serving: a request body checked into what the engine needs, and the engine's
tokens back as text, stop strings, logprobs and OpenAI's response shapes. serve/server.py puts HTTP around it.

    proto = Protocol(tok, block_size=64, max_tokens=256)
    ask = proto.parse(raw_body, chat=True)    # an Ask, or an ApiError (400) naming the bad parameter
    text = TextStream(tok, ask.stop, hidden_ids)
    reply = Reply(tok, ask, chat=True, model='name')   # OpenAI's chunks (reply.event) or whole body (reply.body)

Every check follows OpenAI's documented ranges: temperature in [0, 2], top_p in (0, 1], n >= 1,
top_logprobs in [0, 20] (completions' logprobs in [0, 5]), up to 4 stop strings. A prompt's length is
checked before it is tokenized where its characters already prove it too long, then exactly.

Tool calls follow OpenAI's protocol: the request offers function tools, a reply that calls one comes
back as tool_calls with JSON arguments, and the client runs the tool and sends its result in a
role 'tool' message. The model writes a call in its own short form after <|call|> (seedgpt/tools.py),
parsed here against the tools the request offers; without tools, or with tool_choice 'none', the
<|call|> token is banned, so the model cannot call.
"""
import codecs
import json
import math
import random
import re
import time
import uuid
from dataclasses import dataclass, field

from seedgpt.chat import CHAT_TOKENS, ROLES, render_prompt, stop_ids
from seedgpt.tokenizer import BPETokenizer, GPT2Tokenizer
from seedgpt.tools import TOOLS, ToolError, parse_call, run_tool


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


def unicode_text(text, param):
    """text, or a 400 when it holds a lone surrogate ("x\\ud800y" is valid JSON, but U+D800 alone is no character):
    tokenizers fail on it each their own way (Hugging Face's raises TypeError, tiktoken's reads U+FFFD, a char
    model has no id for it), so it is refused before any of them sees it."""
    try:
        text.encode('utf-8')
    except UnicodeEncodeError as e:
        raise ApiError(400, f"'{param}' is not valid Unicode: a lone surrogate U+{ord(text[e.start]):04X} at "
                       f"character {e.start} (a JSON \\u escape of half a UTF-16 pair)", param=param,
                       code='invalid_value') from None
    return text


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


TOOL_NAME = re.compile(r'[A-Za-z0-9_-]{1,64}')  # OpenAI's rule for a function's name


def openai_tools():
    """seedgpt's own tools (seedgpt/tools.py) as OpenAI function tools: what a client offers so that the
    model may call them (GET /tools serves this list)."""
    return [{'type': 'function', 'function': {
        'name': name, 'description': description,
        'parameters': {'type': 'object', 'properties': {p: {'type': 'string'} for p in params},
                       'required': list(params), 'additionalProperties': False}}}
            for name, (_, params, description) in TOOLS.items()]


def tool_call(name, arguments):
    """OpenAI's tool call of a parsed call: {id, type, function: {name, arguments: JSON text}}."""
    return {'id': f'call_{uuid.uuid4().hex[:24]}', 'type': 'function',
            'function': {'name': name, 'arguments': json.dumps(arguments)}}


def check_tools(body):
    """{name: parameter names} of the tools the reply may call (the names of each schema's properties, in
    order), or None when it may not call: no tools, or tool_choice 'none'. A 400 for anything but OpenAI's
    function tools, and for the tool_choice values this server cannot honour."""
    tools = body.get('tools')
    if tools is not None and not isinstance(tools, list):
        raise ApiError(400, "'tools' must be a list of function tools", param='tools', code='invalid_type')
    offered = {}
    for i, t in enumerate(tools or []):
        fn = t.get('function') if isinstance(t, dict) else None
        schema = fn.get('parameters', {}) if isinstance(fn, dict) else None
        if not (isinstance(fn, dict) and t.get('type') == 'function' and isinstance(fn.get('name'), str)
                and TOOL_NAME.fullmatch(fn['name']) and isinstance(fn.get('description', ''), str)
                and isinstance(schema, dict) and schema.get('type', 'object') == 'object'
                and isinstance(schema.get('properties', {}), dict)):
            raise ApiError(400, f"tools[{i}] must be {{'type': 'function', 'function': {{'name': 1 to 64 letters, "
                           "digits, _ or -, 'description': a string, 'parameters': a JSON schema of type 'object'}}: "
                           "function tools are the only kind served", param=f'tools[{i}]', code='invalid_value')
        if fn['name'] in offered:
            raise ApiError(400, f"tools[{i}]: two tools are named {fn['name']!r}", param=f'tools[{i}]',
                           code='invalid_value')
        offered[fn['name']] = tuple(schema.get('properties', {}))
    choice = body.get('tool_choice', None)
    if choice is None:
        choice = 'auto' if offered else 'none'
    if choice == 'required' or isinstance(choice, dict):
        raise ApiError(400, "tool_choice 'required' and a named function are not supported: use 'auto' (the model "
                       "decides whether to call) or 'none' (it does not call)", param='tool_choice',
                       code='unsupported_value')
    if choice not in ('auto', 'none'):
        raise ApiError(400, "tool_choice must be 'auto' or 'none'", param='tool_choice', code='invalid_value')
    if choice == 'auto' and not offered:
        raise ApiError(400, "tool_choice 'auto' needs 'tools' to choose from", param='tool_choice',
                       code='invalid_value')
    return offered if choice == 'auto' else None


def check_messages(messages):
    """The request's messages in the shape render_chat reads, or a 400 naming the first bad one. Besides
    {role, content}: an assistant message may hold tool_calls (its content then may be null), and each of
    its calls is answered by a role 'tool' message with its tool_call_id, right after it, before any other."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param='messages', code='invalid_type')
    out, waiting = [], None  # ids of the last assistant message's calls not answered yet; None: no calls
    for i, m in enumerate(messages):
        def bad(why):
            return ApiError(400, f"messages[{i}] {why}", param=f'messages[{i}]', code='invalid_value')
        if not isinstance(m, dict) or m.get('role') not in ROLES:
            raise bad(f"must be {{'role': one of {', '.join(ROLES)}, 'content': a string}}")
        role, content, calls = m['role'], m.get('content'), m.get('tool_calls')
        if waiting and role != 'tool':
            raise bad(f"comes before each tool call is answered by a tool message (no answer to {', '.join(waiting)})")
        if calls is not None:
            if role != 'assistant' or not isinstance(calls, list) or not calls:
                raise bad("'tool_calls' must be a non-empty list, on an assistant message")
            out.append({'role': role, 'content': content, 'tool_calls': [check_call(c, bad) for c in calls]})
            waiting = [c['id'] for c in out[-1]['tool_calls']]
            if content is not None and not isinstance(content, str):
                raise bad("'content' must be a string or null")
            unicode_text(content or '', f'messages[{i}]')
            continue
        if not isinstance(content, str):
            raise bad(f"must be {{'role': one of {', '.join(ROLES)}, 'content': a string}}")
        unicode_text(content, f'messages[{i}]')
        if role == 'tool':
            call_id = m.get('tool_call_id')
            if not isinstance(call_id, str):
                raise bad("(role 'tool') needs 'tool_call_id': the id of the call it answers")
            if waiting is None or call_id not in waiting:
                raise bad(f"answers a call {call_id!r} that no assistant message right before it made (or that "
                          "is answered already)")
            waiting.remove(call_id)
        else:
            waiting = None
        out.append({'role': role, 'content': content})
    if waiting:
        raise ApiError(400, f"the last assistant message's tool calls need tool messages answering them "
                       f"({', '.join(waiting)})", param='messages', code='invalid_value')
    return out


def check_call(call, bad):
    """One tool call of an assistant message: {id, type: 'function', function: {name, arguments: JSON of an
    object}}, copied without the fields the client may add (refusal, annotations...)."""
    call = call if isinstance(call, dict) else {}
    fn = call.get('function') if isinstance(call.get('function'), dict) else {}
    try:
        arguments = json.loads(fn['arguments']) if isinstance(fn.get('arguments'), str) else None
    except (ValueError, RecursionError):
        arguments = None
    if not (isinstance(call.get('id'), str) and call.get('type') == 'function' and isinstance(fn.get('name'), str)
            and isinstance(arguments, dict)):
        raise bad("has a tool call not of the shape {'id', 'type': 'function', 'function': {'name', 'arguments': "
                  "a JSON object as text}}")
    return {'id': call['id'], 'type': 'function', 'function': {'name': fn['name'], 'arguments': fn['arguments']}}


def run_tool_request(raw):
    """seedgpt's own route POST /tools/run, for a client without tools of its own (the chat page):
    {"name", "arguments": a tool call's JSON text, or an object} -> {"content": the tool's result}.
    A bad call is a result ('error: ...'), as the model would read it; only a bad body is a 400."""
    body = parse_json(raw)
    name, arguments = get(body, 'name', STR, ''), body.get('arguments')
    try:
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    except (ValueError, RecursionError):
        arguments = None
    if not isinstance(arguments, dict):
        raise ApiError(400, "'arguments' must be a JSON object, or its text", param='arguments', code='invalid_value')
    return {'content': run_tool(name, arguments)}


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
    tools: dict = None  # {name: parameter names} of the tools the reply may call; None: it may not call
    ban: list = field(default_factory=list)  # ids never generated: <|call|> when the reply may not call


class Protocol:
    """What the server knows to check a request: the tokenizer, the context and the caps."""

    def __init__(self, tok, block_size, max_tokens=256, max_prompt_tokens=0, max_n=16):
        self.tok, self.block_size, self.max_tokens, self.max_n = tok, block_size, max_tokens, max_n
        self.prompt_limit = min(max_prompt_tokens or block_size - 1, block_size - 1)
        try:
            self.chat_stop = stop_ids(tok)  # every chat token but <|call|>, which starts a call in the reply
        except SystemExit:
            self.chat_stop = None  # a base model: completions only
        self.call_id = getattr(tok, 'special_ids', {}).get(CHAT_TOKENS['call'])  # None: a model from before tools
        # completions of any model end at a special token: <|endoftext|> or a chat token
        specials = set(tok.special_ids.values())
        self.text_stop = specials | ({tok.eot} if hasattr(tok, 'eot') else set())
        # no token writes more bytes than this, so a text of more characters than limit x this is too long
        # for the context without tokenizing it (tokenizing a huge body would hold a worker for long)
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
            messages = check_messages(body.get('messages'))
            tools = check_tools(body)
            self.early_check(sum(len(m['content'] or '') for m in messages) + sum(
                len(c['function']['arguments']) for m in messages for c in m.get('tool_calls', [])), param)
            encode = lambda: render_prompt(self.tok, messages)  # noqa: E731
        else:
            text = get(body, 'prompt', STR)
            if not text:
                raise ApiError(400, "'prompt' must be a non-empty string", param='prompt', code='invalid_value')
            unicode_text(text, 'prompt')
            self.early_check(len(text), param)
            encode = lambda: self.tok.encode(text)  # noqa: E731
        ask = self.sampling(body, chat)  # cheap checks before the tokenizer runs
        if chat and self.call_id is not None:
            ask.tools = tools
            ask.ban = [self.call_id] if tools is None else []
        try:
            ask.prompt = encode()
        except (ValueError, TypeError) as e:  # whatever a tokenizer raises on text it cannot read is the text's fault
            raise ApiError(400, f"the {param} cannot be tokenized: {str(e)[:200]}", param=param,
                           code='invalid_value') from None
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
        ask.stop = [unicode_text(s, 'stop') for s in stop or []]
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
    one over tokens). `hidden` ids (end tokens) give no text.

    With `tools` ({name: parameter names}, Ask.tools), everything from a <|call|> token on is held back
    as a call, never sent as text; end() then makes it OpenAI's tool_calls. Stop strings apply to the
    text, not to a call."""

    def __init__(self, tok, stop=(), hidden=(), tools=None):
        self.tok, self.stop, self.hidden, self.tools = tok, list(stop), set(hidden), tools
        self.ids, self.held, self.stopped = [], '', False
        self.tokens = []  # the tokens fed since text was last taken, for their logprobs
        self.call_id = tok.special_ids[CHAT_TOKENS['call']] if tools is not None else None
        self.call = None  # the tokens from the first <|call|> on, once one came

    def feed(self, token):
        """The text that is safe to send after this token ('' while it is held back)."""
        if self.call is not None:
            self.call.append(token)
            return ''
        if token.id == self.call_id and not self.stopped:
            self.call = [token]
            return self.flush()  # a stop string cannot go on into a call: the text held back is sent
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

    def end(self, finish):
        """(tool_calls or None, the text left) when the reply ends with `finish` ('stop' or 'length'). A call
        is returned when the reply ended at its end token and each call parses as name(arguments) of an
        offered tool (parse_call); otherwise, a malformed call, a tool not offered, or a call cut off by
        max_tokens is sent as text: what the model wrote is never dropped, and never a 500."""
        call, self.call = self.call, None
        if call is None:
            return None, self.flush()
        parts = [[]]
        for t in call[1:]:
            if t.id == self.call_id:
                parts.append([])
            elif t.id not in self.hidden and t.id < self.tok.vocab_size:
                parts[-1].append(t.id)
        if finish == 'stop':
            try:
                return [tool_call(*parse_call(self.tok.decode(p), self.tools)) for p in parts], ''
            except ToolError:
                pass
        text = ''.join(self.feed(t) for t in call if t.id != self.call_id)
        return None, text + self.flush()

    def take_tokens(self):
        tokens, self.tokens = self.tokens, []
        return tokens


# -- the reply: OpenAI's response shapes, from the engine's tokens (serve/server.py sends them)

def dumps(obj):
    """JSON text for a client. allow_nan=False: a NaN or inf that reaches a reply is a bug to fail on, never
    sent (Python would write -Infinity, which is not JSON: the openai client cannot parse the chunk)."""
    return json.dumps(obj, allow_nan=False)


def sse(obj):
    """One server-sent event holding obj."""
    return f"data: {dumps(obj)}\n\n"


def byte_level_alphabet():
    """{character: byte} of GPT-2's byte-level BPE, which writes each byte as a printable character
    (Hugging Face's ByteLevel uses the same table): printable Latin-1 bytes stand for themselves, the others
    take the characters from U+0100 on, in order."""
    kept = [*range(ord('!'), ord('~') + 1), *range(ord('\u00a1'), ord('\u00ac') + 1), *range(ord('\u00ae'), 256)]
    moved = [b for b in range(256) if b not in kept]
    return {**{chr(b): b for b in kept}, **{chr(256 + n): b for n, b in enumerate(moved)}}


BYTE_OF = byte_level_alphabet()


def token_bytes(tok, i):
    """The bytes token i writes. A byte-level BPE token may hold part of a character (a 3-byte character
    split over two tokens): decoded alone it would read U+FFFD, so its bytes come from the vocabulary."""
    if isinstance(tok, GPT2Tokenizer):
        return tok.enc.decode_single_token_bytes(i)
    if isinstance(tok, BPETokenizer) and i not in tok.tok.get_added_tokens_decoder():
        return bytes(BYTE_OF[c] for c in tok.tok.id_to_token(i))
    return tok.decode([i]).encode('utf-8', 'surrogatepass')  # a char model's characters, and special tokens


def token_text(data):
    """A token's text in logprobs: its characters when its bytes are whole UTF-8, else 'bytes:' and the bytes
    escaped (b'\\xe4\\xb8' -> 'bytes:\\xe4\\xb8', as OpenAI writes part of a character); `bytes` has them all."""
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError:
        return 'bytes:' + data.decode('utf-8', 'backslashreplace')


def finite(logprob):
    """OpenAI's -9999.0 for a log-probability too small to write (JSON has no -inf)."""
    return logprob if math.isfinite(logprob) else -9999.0


class Logprobs:
    """One choice's logprobs, in OpenAI's chat shape (a list of entries with bytes) or completions' (parallel
    lists; top_logprobs as {text: logprob}). Completions' text_offset counts characters of the decoded text,
    where a character split over tokens starts at its first token; it carries on from chunk to chunk."""

    def __init__(self, tok, chat):
        self.tok, self.chat, self.chars = tok, chat, 0
        self.decoder = codecs.getincrementaldecoder('utf-8')('replace')  # as decoding the text replaces bad bytes

    def entry(self, i, logprob):
        data = token_bytes(self.tok, i)
        return {'token': token_text(data), 'logprob': finite(logprob), 'bytes': list(data)}

    def __call__(self, tokens):
        """The logprobs of these Tokens, the next ones of the choice."""
        if self.chat:
            return {'content': [{**self.entry(t.id, t.logprob), 'top_logprobs': [self.entry(i, lp) for i, lp in t.top]}
                                for t in tokens], 'refusal': None}
        out = {'tokens': [], 'token_logprobs': [], 'top_logprobs': [], 'text_offset': []}
        for t in tokens:
            data = token_bytes(self.tok, t.id)
            out['tokens'].append(token_text(data))
            out['token_logprobs'].append(finite(t.logprob))
            top = {}
            for i, lp in t.top:  # likeliest first: of two alternatives with the same text, the likelier stays
                top.setdefault(token_text(token_bytes(self.tok, i)), finite(lp))
            out['top_logprobs'].append(top)
            out['text_offset'].append(self.chars)
            self.chars += len(self.decoder.decode(data))
        return out


class Reply:
    """The OpenAI response to one request, built from the engine's events (server.replies: ('text', piece,
    tokens), ('calls', tool_calls, []), ('end', finish_reason, completion tokens)): SSE chunks as they come
    (opening, chunk, closing), or, not streamed, add() each event and body() at the end."""

    def __init__(self, tok, ask, chat, model):
        self.ask, self.chat, self.n = ask, chat, ask.n
        self.top = {'id': f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", 'created': int(time.time()),
                    'object': 'chat.completion.chunk' if chat else 'text_completion', 'model': model}
        self.logprobs = [Logprobs(tok, chat) for _ in range(ask.n)]
        self.completion_tokens = 0
        self.pieces, self.tokens = [[] for _ in range(ask.n)], [[] for _ in range(ask.n)]
        self.finish, self.calls = [None] * ask.n, [None] * ask.n

    def usage(self):
        n, p = self.completion_tokens, len(self.ask.prompt)
        return {'prompt_tokens': p, 'completion_tokens': n, 'total_tokens': p + n}

    def choice(self, i, text, tokens, finish, message=None):
        """Choice i: completions' text, or chat's delta (streamed) or message (whole)."""
        lp = self.logprobs[i](tokens) if self.ask.logprobs is not None and tokens else None
        if not self.chat:
            return {'index': i, 'text': text, 'logprobs': lp, 'finish_reason': finish}
        said = {'message': message} if message else {'delta': {'content': text} if text is not None else {}}
        return {'index': i, **said, 'logprobs': lp, 'finish_reason': finish}

    def chunk(self, choice):
        return sse({**self.top, 'choices': [choice]})

    def opening(self):
        """The chunks before any token: chat's first delta of each choice names the role."""
        return [self.chunk({'index': i, 'delta': {'role': 'assistant', 'content': ''}, 'logprobs': None,
                            'finish_reason': None}) for i in range(self.n if self.chat else 0)]

    def event(self, i, event):
        """The chunk of one event of choice i, or None when it has nothing to send."""
        what, a, b = event
        if what == 'end':
            self.completion_tokens += b
            return self.chunk(self.choice(i, None if self.chat else '', [], a))
        if what == 'calls':  # each call whole, in the shape the openai client accumulates
            delta = {'tool_calls': [{'index': k, **c} for k, c in enumerate(a)]}
            return self.chunk({'index': i, 'delta': delta, 'logprobs': None, 'finish_reason': None})
        if a or (b and self.ask.logprobs is not None):
            return self.chunk(self.choice(i, a, b, None))
        return None

    def closing(self):
        """The chunks after the last event: the usage, when the request asked for it."""
        return [sse({**self.top, 'choices': [], 'usage': self.usage()})] if self.ask.include_usage else []

    def add(self, i, event):
        """Keep one event of choice i for the whole reply."""
        what, a, b = event
        if what == 'text':
            self.pieces[i].append(a)
            self.tokens[i] += b
        elif what == 'calls':
            self.calls[i] = a
        else:
            self.finish[i] = a
            self.completion_tokens += b

    @property
    def complete(self):
        return None not in self.finish

    def body(self):
        """The whole reply, once every choice has ended."""
        kind = 'chat.completion' if self.chat else 'text_completion'
        return {**self.top, 'object': kind, 'usage': self.usage(), 'choices': [self.whole(i) for i in range(self.n)]}

    def whole(self, i):
        text = ''.join(self.pieces[i])
        message = {'role': 'assistant', 'content': text}
        if self.calls[i]:  # the text before the call, if any; OpenAI's null when there is none
            message = {'role': 'assistant', 'content': text or None, 'tool_calls': self.calls[i]}
        return self.choice(i, text, self.tokens[i], self.finish[i], message)
