"""
The tools a chat model may call, and how a call is written in its text.

A call is one line in the model's own text, after the <|call|> token, in the shape of a function call:

    calc(4812+7533)          ->  12345
    count(a,abaca)           ->  3
    reverse(planet)          ->  tenalp

The model writes it; generation (seedgpt/agent.py) runs the tool and puts the result in a tool turn. To
an OpenAI client the same call is {"name": "calc", "arguments": "{\"expression\": \"4812+7533\"}"}: the
arguments' values in the order of the tool's parameters. So short a form costs a character-level
model a dozen tokens, not the forty of the JSON.

Four tools, each for what a model of this size cannot do in its head and what the task suite asks:
  calc     exact arithmetic: + - * / (also × ÷), parentheses, decimals; a small model gets long sums
           wrong, but copies digits well;
  count    how many times a letter occurs in a word: a character model sees the letters, but counting
           them is a loop that attention does not learn from a few thousand examples;
  reverse  a word backwards, and
  sort     a word's letters in alphabetical order: a small model does both in its head on short words
           (the plain suite) but drops or doubles a letter of a long one (docs/tools.md#results).
Each is one function here, with its input bounded in size and a time limit. A value never has more than
MAX_DIGITS digits (a decimal keeps fewer places when its whole part is long, rounded), so a result fits
MAX_OUTPUT characters and is never cut; a bad call returns 'error: ...' as its result (that message alone
may be cut), never raises into generation.
"""
import json
import re
import time
from fractions import Fraction

MAX_INPUT = 200  # characters of a call's arguments
MAX_OUTPUT = 64  # characters of a result: what goes back into the context
MAX_DEPTH = 16  # nesting of parentheses and signs in an expression
MAX_DIGITS = 60  # digits of a number: in the input, in every value on the way, in the result
TIMEOUT = 0.1  # seconds a tool may take


class ToolError(Exception):
    """A call that cannot be run: its message becomes the tool's result."""


# -- the calculator: a recursive-descent parser over exact fractions, never eval()

_TOKEN = re.compile(r'\s*(?:(\d+(?:\.\d*)?|\.\d+)|(.))')
_OPS = {'+': '+', '-': '-', '−': '-', '*': '*', '×': '*', '/': '/', '÷': '/', '(': '(', ')': ')'}


def calc(expression):
    """The exact value of an arithmetic expression, as text: '12345', '-0.5', '0.333333333333'.

    Integers and decimals are exact (Fractions: 0.1+0.2 is 0.3); a result with no finite decimal is
    rounded to 12 places, or to fewer where the whole part is long: MAX_DIGITS digits in all. A value of
    more (a sum's as a product's, on the way or at the end) is an error. No names, no powers, no calls:
    the grammar is all there is.
        expr   := term (('+' | '-') term)*
        term   := factor (('*' | '/') factor)*
        factor := ('+' | '-') factor | number | '(' expr ')'
    """
    if len(expression) > MAX_INPUT:
        raise ToolError(f"expression longer than {MAX_INPUT} characters")
    tokens = []
    for number, other in _TOKEN.findall(expression):
        if number:
            if len(number) > MAX_DIGITS:
                raise ToolError(f"a number of more than {MAX_DIGITS} digits")
            tokens.append(Fraction(number))
        elif other.strip():
            if other not in _OPS:
                raise ToolError(f"unexpected {other!r}: only numbers, + - * / and parentheses")
            tokens.append(_OPS[other])
    deadline, pos = time.monotonic() + TIMEOUT, 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        if time.monotonic() > deadline:
            raise ToolError("took too long")
        pos += 1
        return tokens[pos - 1]

    def expr(depth):
        value = term(depth)
        while peek() in ('+', '-'):
            value = _bounded(value + term(depth) if take() == '+' else value - term(depth))
        return value

    def term(depth):
        value = factor(depth)
        while peek() in ('*', '/'):
            op, right = take(), factor(depth)
            if op == '/' and right == 0:
                raise ToolError("division by zero")
            value = _bounded(value * right if op == '*' else value / right)
        return value

    def factor(depth):
        if depth > MAX_DEPTH:
            raise ToolError(f"nested deeper than {MAX_DEPTH}")
        t = take() if peek() is not None else None
        if isinstance(t, Fraction):
            return t
        if t in ('+', '-'):
            value = factor(depth + 1)
            return value if t == '+' else -value
        if t == '(':
            value = expr(depth + 1)
            if peek() != ')':
                raise ToolError("a '(' is not closed")
            take()
            return value
        raise ToolError("incomplete expression" if t is None else f"unexpected {t!r}")

    if not tokens:
        raise ToolError("empty expression")
    value = expr(0)
    if pos != len(tokens):
        raise ToolError("two numbers in a row" if isinstance(tokens[pos], Fraction) else f"unexpected {tokens[pos]!r}")
    # the whole part's digits (a bounded value has at most MAX_DIGITS), then as many places as fit in
    # MAX_DIGITS, 12 at most: at most MAX_DIGITS digits, a sign and a point, within MAX_OUTPUT
    whole_digits = len(str(abs(value.numerator) // value.denominator))
    return _decimal(value, min(12, MAX_DIGITS - whole_digits))


def _bounded(value):
    """value, if its numerator and denominator have at most MAX_DIGITS digits each; else a ToolError."""
    if max(abs(value.numerator), value.denominator) >= 10 ** MAX_DIGITS:
        raise ToolError(f"a value of more than {MAX_DIGITS} digits")
    return value


def _decimal(value, places=12):
    """A fraction as decimal text rounded to `places` places (half to even), without trailing zeros:
    exact when its decimal expansion is that short."""
    scaled = round(abs(value) * 10 ** places)  # an int: a Fraction rounds exactly
    whole, rest = divmod(scaled, 10 ** places)
    digits = str(rest).rjust(places, '0').rstrip('0') if places else ''
    if not (whole or digits):
        return '0'
    return ('-' if value < 0 else '') + str(whole) + ('.' + digits if digits else '')


def count(letter, word):
    """How many times `letter` (one character) occurs in `word`, as text."""
    if len(letter) != 1:
        raise ToolError(f"count's first argument is one letter, got {letter!r}")
    if len(word) > MAX_INPUT:
        raise ToolError(f"a word longer than {MAX_INPUT} characters")
    return str(word.count(letter))


def reverse(word):
    """The word backwards."""
    if len(word) > MAX_OUTPUT:
        raise ToolError(f"a word longer than {MAX_OUTPUT} characters")
    return word[::-1]


def sort(word):
    """The word's letters in alphabetical order."""
    if len(word) > MAX_OUTPUT:
        raise ToolError(f"a word longer than {MAX_OUTPUT} characters")
    return ''.join(sorted(word))


# name -> (function, its parameters in call order, what it is for: the description an API client sees)
TOOLS = {
    'calc': (calc, ('expression',), "Exact arithmetic: + - * / and parentheses on integers and decimals."),
    'count': (count, ('letter', 'word'), "How many times a letter occurs in a word."),
    'reverse': (reverse, ('word',), "The word spelled backwards."),
    'sort': (sort, ('word',), "The word's letters in alphabetical order."),
}


def run_tool(name, arguments):
    """The result text of tool `name` on {parameter: value}, or 'error: ...': a tool never raises."""
    if name not in TOOLS:
        return f"error: no tool {name!r}; the tools are {', '.join(TOOLS)}"
    fn, params, _ = TOOLS[name]
    if set(arguments) != set(params) or not all(isinstance(v, str) for v in arguments.values()):
        return f"error: {name} takes {len(params)} text argument{'s' * (len(params) > 1)}: {', '.join(params)}"
    try:
        out = fn(*(arguments[p] for p in params))
    except ToolError as e:
        return f"error: {e}"[:MAX_OUTPUT]  # a message may be cut; a value never is
    if len(out) > MAX_OUTPUT:  # no tool here gets this far: its values are bounded
        return f"error: a result of more than {MAX_OUTPUT} characters"
    return out


# -- a call as text, and as OpenAI's {"name", "arguments"}

_CALL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\((.*)\)', re.DOTALL)


def call_text(name, arguments):
    """The text of a call: calc(4812+7533). arguments: a dict (in its parameters' order) or its JSON."""
    if isinstance(arguments, str):
        arguments = json.loads(arguments or '{}')
    if not isinstance(arguments, dict):
        raise ValueError(f"a call's arguments are a JSON object, got {arguments!r}")
    params = TOOLS[name][1] if name in TOOLS else tuple(arguments)
    return f"{name}({','.join(str(arguments.get(p, '')) for p in params)})"


def parse_call(text, params=None):
    """(name, {parameter: value}) of a call's text; ToolError when it is not a call of a known tool.

    params: {name: parameter names} of the tools allowed (default: TOOLS). The last parameter takes the
    rest of the text, commas included, so a word or an expression is never split. Values are taken as
    written, spaces included, as call_text writes them: count( ,a b c) counts spaces."""
    params = params if params is not None else {n: p for n, (_, p, _) in TOOLS.items()}
    m = _CALL.fullmatch(text.strip())
    if m is None:
        raise ToolError(f"malformed call {text[:40]!r}: expected name(arguments)")
    name, inner = m.groups()
    if name not in params:
        raise ToolError(f"no tool {name!r}")
    names = list(params[name])
    values = inner.split(',', max(0, len(names) - 1)) if names else []
    if len(values) != len(names) or (names and len(names) == 1 and not inner.strip()):
        raise ToolError(f"{name} takes {len(names)} argument{'s' * (len(names) > 1)} ({', '.join(names)})")
    return name, dict(zip(names, values))
