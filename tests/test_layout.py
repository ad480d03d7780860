"""The layout's rules, read from the source: one home for each piece, scripts that never import scripts,
nothing installed but the dependencies, no sys.path edits, short scripts, comments that teach, and no
setting in a --help that its script ignores."""
import ast
import dataclasses
import importlib
import io
import re
import sys
import tokenize

import pytest

from conftest import ROOT

CORE = {'model', 'train', 'sample'}
STAGES = ('prepare', 'chat', 'feedback', 'compress', 'serve', 'explain', 'export', 'bench')
SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for stage in STAGES for p in (ROOT / stage).glob('*.py')
                 if p.name != '__init__.py')
LIBRARY = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'seedgpt').glob('*.py'))
OURS = CORE | set(STAGES) | {'seedgpt'}


def imports(path):
    """Every module that a file imports, at any depth of its code (including strings run as child scripts)."""
    src = (ROOT / path).read_text(encoding='utf-8')
    found = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found |= {node.module} | {f'{node.module}.{a.name}' for a in node.names}
    return {m for m in found if m.split('.')[0] in OURS}


def stage_of(module):
    parts = module.split('.')
    return parts[0] if parts[0] in STAGES and len(parts) > 1 else None


@pytest.mark.parametrize('path', SCRIPTS)
def test_a_stage_script_imports_the_core_and_the_library_only(path):
    """prepare/tasks.py may use seedgpt.dataset, never prepare/corpus.py: a script is a command, not a library."""
    bad = sorted(m for m in imports(path) if stage_of(m) or m in STAGES)
    assert not bad, f"{path} imports the scripts {bad}"


@pytest.mark.parametrize('path', LIBRARY)
def test_the_library_imports_no_script(path):
    bad = sorted(m for m in imports(path) if m.split('.')[0] not in ('seedgpt', 'model'))
    assert not bad, f"{path} imports {bad}: the library may use model.py and itself, nothing that is run"


def test_the_core_imports_no_stage_script():
    for path in ('model.py', 'train.py', 'sample.py'):
        bad = sorted(m for m in imports(path) if m.split('.')[0] in STAGES)
        assert not bad, f"{path} imports {bad}"


def test_model_stands_alone():
    """model.py imports torch and the standard library only: its reader needs no other file. What plugs into
    it (a KV cache) meets it through model.Cache, never by duck typing."""
    for node in ast.walk(ast.parse((ROOT / 'model.py').read_text(encoding='utf-8'))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                top = name.split('.')[0]
                assert top == 'torch' or top in sys.stdlib_module_names, f"model.py imports {name}"
    for p in CODE:
        src = (ROOT / p).read_text(encoding='utf-8')
        assert not re.search(r"hasattr\(\w*cache|getattr\(\w*cache", src), f"{p} duck-types a cache"


def test_no_file_edits_sys_path():
    for p in sorted(ROOT.rglob('*.py')):
        if any(part.startswith('.') or part in ('build', 'data') for part in p.relative_to(ROOT).parts):
            continue
        src = p.read_text(encoding='utf-8')
        assert not re.search(r'sys\.path\s*(\[|\.insert|\.append|=|\+=)', src), f"{p} edits sys.path"


def test_installing_adds_no_module():
    text = (ROOT / 'pyproject.toml').read_text(encoding='utf-8')
    assert re.search(r'^packages = \[\]', text, re.M) and 'py-modules' not in text


@pytest.mark.parametrize('path', ['model.py', 'train.py', 'sample.py'] + SCRIPTS)
def test_scripts_stay_short(path):
    n = len((ROOT / path).read_text(encoding='utf-8').splitlines())
    assert n <= 420, f"{path} has {n} lines; move what it shares into seedgpt/"


CODE = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob('*.py')
              if not any(part.startswith('.') or part in ('build', 'data', 'tests') for part in p.relative_to(ROOT).parts))


@pytest.mark.parametrize('path', CODE)
def test_lines_and_functions_fit_a_screen(path):
    """No line over 120 characters (a comment goes above its code, not after it), and no function over 80
    lines: a loop that grows closures lifts them into functions that take the state they need."""
    src = (ROOT / path).read_text(encoding='utf-8')
    long_lines = [i for i, line in enumerate(src.splitlines(), 1) if len(line) > 120]
    assert not long_lines, f"{path}: lines over 120 characters: {long_lines}"
    long_functions = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(src))
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.end_lineno - node.lineno + 1 > 80]
    assert not long_functions, f"{path}: functions over 80 lines: {long_functions}"


def comment_share(path):
    """The share of a file's lines that are comments or docstrings of functions and classes (the module's
    docstring, mostly commands to run, is not counted)."""
    src = (ROOT / path).read_text(encoding='utf-8')
    lines = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines |= set(range(first.lineno, first.end_lineno + 1))
    lines |= {t.start[0] for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT}
    return len(lines) / len(src.splitlines())


@pytest.mark.parametrize('path', ['model.py', 'train.py', 'feedback/rl.py', 'seedgpt/policy.py', 'seedgpt/objectives.py'])
def test_comments_teach(path):
    assert comment_share(path) >= 0.20, f"{path}: {comment_share(path):.1%} comments and docstrings"


def config_scripts():
    out = []
    for path in ['train.py', 'sample.py'] + SCRIPTS:
        module = path[:-3].replace('/', '.')
        if re.search(r'^class Config\b', (ROOT / path).read_text(encoding='utf-8'), re.M):
            out.append(module)
    return out


@pytest.mark.parametrize('module', config_scripts())
def test_every_setting_in_help_is_read(module):
    """Each field of a script's Config is read somewhere on its path: by the script itself, train.py's loop
    (for the scripts that run it), the model (GPTConfig's fields) or the library it calls."""
    mod = importlib.import_module(module)
    used = (ROOT / (module.replace('.', '/') + '.py')).read_text(encoding='utf-8')
    if issubclass(mod.Config, importlib.import_module('train').LoopConfig):
        used += (ROOT / 'train.py').read_text(encoding='utf-8')
    used += ''.join(p.read_text(encoding='utf-8') for p in (ROOT / 'seedgpt').glob('*.py'))
    used += (ROOT / 'model.py').read_text(encoding='utf-8')
    body = re.sub(r'^class \w*Config\b.*?(?=^\S)', '', used, flags=re.M | re.S)  # the declarations don't count
    unread = [f.name for f in dataclasses.fields(mod.Config)
              if not re.search(rf"\.{f.name}\b|'{f.name}'|\b{f.name}=", body)]
    assert not unread, f"{module} lists settings that nothing reads: {unread}"
