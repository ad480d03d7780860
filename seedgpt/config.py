"""
Settings: one dataclass of defaults per script, overridden by config files, then by --key=value.

    cfg = load_config(Config)          # sys.argv: config/x.py files and --key=value, in order
    python train.py --help             # every field, its default and the comment written after it

Config files are bare `name = value` lines, parsed without being executed: literals, and + - * / // **
on numbers and earlier names. Unknown keys fail with the nearest valid name; types are checked, an int
where a float is expected is widened, and a str setting keeps its text verbatim ('3.10' stays '3.10').
A script whose Config sets `positional = 'field'` (prepare/corpus.py's inputs) takes bare arguments
as that field's comma-joined value instead of as config files.
"""
import ast
import dataclasses
import difflib
import inspect
import io
import operator
import os
import sys
import tokenize


def _field_comments(cls):
    """Map each field of a dataclass, inherited ones included, to the comment written after it in the source."""
    comments = {}
    for base in reversed(cls.__mro__):  # a subclass's comment wins over its base's
        if not dataclasses.is_dataclass(base):
            continue
        src = inspect.getsource(base)
        lines = src.splitlines()
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                name = lines[tok.start[0] - 1].split(':')[0].strip()
                comments[name] = tok.string.lstrip('#').strip()
    return comments


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}


_MAX_BITS = 1000  # no setting needs an integer past 2**1000, and every one below it converts to a float


def _eval_node(node, env):
    """Evaluate a literal or simple arithmetic on literals and earlier names; nothing else.

    Python's own operators on the real values: int op int stays an exact int, int ** negative int is a float.
    """
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise ValueError(f"'{node.id}' is not defined above")
        return env[node.id]
    numbers = "only + - * / // ** on numbers are allowed"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _eval_node(node.operand, env)
        if not isinstance(value, (int, float)):
            raise ValueError(numbers)
        return -value
    if isinstance(node, ast.BinOp):
        a, b = _eval_node(node.left, env), _eval_node(node.right, env)
        if type(node.op) not in _OPS or not all(isinstance(v, (int, float)) for v in (a, b)):
            raise ValueError(numbers)
        # an exact power is refused before it is computed: 10 ** 10 ** 10 would hang the loader
        if (isinstance(node.op, ast.Pow) and isinstance(a, int) and isinstance(b, int)
                and b * (abs(a).bit_length() - 1) > _MAX_BITS):
            raise ValueError("the result is too large")
        try:
            out = _OPS[type(node.op)](a, b)
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        except OverflowError:
            raise ValueError("the result is too large") from None
        if isinstance(out, complex):
            raise ValueError("the result is a complex number")
        if isinstance(out, int) and out.bit_length() > _MAX_BITS:
            raise ValueError("the result is too large")
        return out
    return ast.literal_eval(node)


def read_config_file(path):
    """Parse a file of bare `name = value` lines into a dict without executing it."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: config file {path} not found (see config/ for the shipped ones)")
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    env = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise SystemExit(f"error: {path}:{stmt.lineno}: config files hold only `name = value` lines")
        try:
            env[stmt.targets[0].id] = _eval_node(stmt.value, env)
        except (ValueError, SyntaxError) as e:
            raise SystemExit(f"error: {path}:{stmt.lineno}: cannot read the value ({e})")
    return env


def _parse_value(text, typ):
    if typ is str:
        return text  # verbatim: '3.10' and '0x10' are names, not numbers
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {'true': True, 'false': False}.get(text.lower(), text)  # a bare string


def check_type(key, value, typ):
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and value in (0, 1) and not isinstance(value, float):
        return bool(value)
    if type(value) is not typ:
        hint = "; write it in quotes" if typ is str else ""  # str(3.10) would be '3.1'
        raise SystemExit(f"error: {key} must be a {typ.__name__}, got {value!r}{hint}")
    return value


def config_help(cls):
    comments = _field_comments(cls)
    rows = [f"  --{f.name}={(f.default_factory() if f.default is dataclasses.MISSING else f.default)!r}"
            for f in dataclasses.fields(cls)]
    width = max(len(r) for r in rows) + 2
    doc = (sys.modules[cls.__module__].__doc__ or '').strip()
    return '\n'.join([doc, '', 'settings (defaults shown):'] +
                     [r.ljust(width) + comments.get(f.name, '') for r, f in zip(rows, dataclasses.fields(cls))])


def load_config(cls, argv=None):
    """Defaults from the dataclass `cls`, then each config file given, then each --key=value."""
    argv = sys.argv[1:] if argv is None else argv
    if '-h' in argv or '--help' in argv:
        print(config_help(cls))
        raise SystemExit(0)
    types = {f.name: f.type if isinstance(f.type, type) else type(f.default) for f in dataclasses.fields(cls)}
    values, bare = {}, []
    positional = getattr(cls, 'positional', None)  # a field that bare arguments fill, instead of config files
    for arg in argv:
        if positional and not arg.startswith('--'):
            bare.append(arg)
            continue
        if arg.startswith('--'):
            key, eq, text = arg[2:].partition('=')
            key = key.replace('-', '_')
            if not eq and types.get(key) is not bool:
                raise SystemExit(f"error: write --{key}=VALUE, with an '='")
            overrides = {key: _parse_value(text, types.get(key)) if eq else True}  # a bare --flag switches a bool on
        else:
            overrides = read_config_file(arg)
        for key, value in overrides.items():
            if key not in types:
                near = difflib.get_close_matches(key, list(types), n=1)
                hint = f"; did you mean '{near[0]}'?" if near else "; see --help for the list"
                raise SystemExit(f"error: unknown setting '{key}'{hint}")
            values[key] = check_type(key, value, types[key])
    if bare:
        values[positional] = ','.join(bare)
    return cls(**values)

