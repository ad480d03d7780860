"""The guide, docs/learn.md and its Chinese twin docs/learn.zh.md, tested as code: a learner follows it top to
bottom, so every command in it must run as written.

  - both guides give the same commands and programs, in the same order, and the same steps;
  - every `python -m module` / `python script.py` (also under `time` and `torchrun`) names a script that
    exists, and passes only settings its Config has, with values of the right type (config files too);
  - every file, file's function and test the prose names in backticks exists, and every link and picture;
    every line of code it quotes (a ```py block) is still in the code;
  - every ```python program runs, in a temp dir holding a small dataset where step 1 puts its own;
  - every step says how long it takes, what to expect, and where to look in the code.
"""
import ast
import contextlib
import dataclasses
import importlib
import io
import os
import re
import shlex
import tokenize

import pytest

from conftest import ROOT, run_train
from seedgpt import dataset
from seedgpt.config import load_config

GUIDES = {'en': ROOT / 'docs' / 'learn.md', 'zh': ROOT / 'docs' / 'learn.zh.md'}
# what each guide calls the parts of a step
MARKERS = {'en': ('**Time:**', '**Where to look:**'), 'zh': ('**用时：**', '**看代码：**')}
FENCE = re.compile(r'^```(\w*)\n(.*?)^```', re.M | re.S)
# the repo's folders of code and docs: a path under one of them that the guide names must exist
CODE_DIRS = ('seedgpt', 'prepare', 'feedback', 'chat', 'compress', 'serve', 'explain', 'export', 'bench')
REPO_DIRS = {*CODE_DIRS, 'config', 'tests', 'docs'}


def read(lang):
    return GUIDES[lang].read_text(encoding='utf-8')


def blocks(lang, kinds=('bash', 'python', 'py')):
    """[(kind, code)] of the guide's fenced blocks of these kinds, in order."""
    return [(kind, code) for kind, code in FENCE.findall(read(lang)) if kind in kinds]


# ---- reading commands

def without_comment(line):
    """A shell line without its comment: a # at the start or after a blank, outside quotes."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in '\'"':
            quote = c
        elif c == '#' and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_commands(code):
    """The commands of a bash block: continuation lines joined, comments dropped, split at && ; | and &."""
    out = []
    for line in code.replace('\\\n', ' ').splitlines():
        line, quote, start = without_comment(line), None, 0
        for i, c in enumerate(line):  # split outside quotes
            if quote:
                quote = None if c == quote else quote
            elif c in '\'"':
                quote = c
            elif c in '&;|':
                out.append(line[start:i])
                start = i + 1
        out.append(line[start:])
    return [' '.join(c.split()) for c in out if c.strip()]


def code_lines(code):
    """The lines of a Python block without comments and blank lines: what must match between the guides."""
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.start[1]
    lines = code.splitlines()
    kept = [line[:comments[n]] if n in comments else line for n, line in enumerate(lines, 1)]
    return [line.rstrip() for line in kept if line.strip()]


def commands(lang):
    """What a learner runs, in order: each shell command, and each Python program (its code lines)."""
    out = []
    for kind, code in blocks(lang):
        if kind == 'bash':
            out += [('shell', c) for c in shell_commands(code)]
        else:
            out.append((kind, '\n'.join(code_lines(code))))
    return out


def python_invocation(command):
    """(module, argv) of a shell command that runs one of ours with Python, else None."""
    words = shlex.split(command)
    redirect = [i for i, w in enumerate(words) if re.match(r'\d?[<>]', w)]  # > file: the shell's, not the script's
    words = words[:redirect[0]] if redirect else words
    while words and words[0] in ('time', 'nohup'):
        words = words[1:]
    if words and words[0] == 'torchrun':  # torchrun [its options] script.py [the script's settings]
        words = ['python'] + words[next(i for i, w in enumerate(words) if w.endswith('.py')):]
    if len(words) < 2 or words[0] not in ('python', 'python3') or words[1] == '-':
        return None
    if words[1] == '-m':
        return words[2], words[3:]
    return words[1].removesuffix('.py').replace('/', '.'), words[2:]


# ---- (a) the two guides say the same

def test_both_guides_give_the_same_commands_in_the_same_order():
    en, zh = commands('en'), commands('zh')
    assert len(en) > 40
    for n, (a, b) in enumerate(zip(en, zh)):
        assert a == b, f"command {n} differs:\n  learn.md:    {a[1]!r}\n  learn.zh.md: {b[1]!r}"
    assert len(en) == len(zh)


def test_both_guides_have_the_same_steps():
    steps = {lang: re.findall(r'^## (\d+)\. ', read(lang), re.M) for lang in GUIDES}
    assert steps['en'] == steps['zh'] == [str(n) for n in range(len(steps['en']))]


def test_every_step_has_a_time_an_expected_output_and_code_to_read():
    for lang in GUIDES:
        time_marker, code_marker = MARKERS[lang]
        for step in re.split(r'^## ', read(lang), flags=re.M)[1:]:
            title = step.splitlines()[0]
            if not title[0].isdigit() or title.startswith('0.'):  # the install: nothing to see but pip's lines
                continue
            assert time_marker in step, f"{lang} step {title}: no time"
            assert '```text' in step, f"{lang} step {title}: no expected output"
            assert code_marker in step, f"{lang} step {title}: nowhere in the code to look"


# ---- (b) every command names a script and settings that exist

def test_every_command_names_a_script_and_its_settings(monkeypatch):
    monkeypatch.chdir(ROOT)  # config files are named from the repo root, as the guide runs them
    found, bad = set(), []
    for kind, command in commands('en'):
        run = python_invocation(command) if kind == 'shell' else None
        if run is None:
            continue
        module, argv = run
        found.add(module)
        try:
            script = importlib.import_module(module)
        except ImportError as e:
            bad.append(f"{command}: no module {module} ({e})")
            continue
        cls = getattr(script, 'Config', None)
        if cls is None or not dataclasses.is_dataclass(cls):
            bad.append(f"{command}: {module} has no Config")
            continue
        fields = {f.name for f in dataclasses.fields(cls)}
        keys = [a[2:].partition('=')[0].replace('-', '_') for a in argv if a.startswith('--')]
        bad += [f"{command}: --{k} is no setting of {module}" for k in keys if k not in fields]
        try:
            load_config(cls, argv)  # types, values and config files, as the script reads them
        except SystemExit as e:
            bad.append(f"{command}: {e}")
    assert not bad, '\n'.join(bad)
    # the whole life: every stage the guide tells is a command it runs
    assert found >= {'prepare.tasks', 'prepare.stdlib', 'train', 'sample', 'chat.eval', 'prepare.preferences',
                     'feedback.reward', 'feedback.rl', 'compress.shrink', 'serve.server', 'export.hf',
                     'explain.attention'}, found


def test_the_command_reader_reads_what_the_guide_writes():
    """The reader itself: comments, chains, background jobs, time and torchrun."""
    assert shell_commands("python -m a --x=1   # why\nb && python c.py --y='p q' &\n") == [
        'python -m a --x=1', 'b', "python c.py --y='p q'"]
    assert python_invocation("time python sample.py --out_dir=o > f.txt") == ('sample', ['--out_dir=o'])
    assert python_invocation("torchrun --standalone --nproc_per_node=2 train.py c.py --k=1") == (
        'train', ['c.py', '--k=1'])
    assert python_invocation("python -m prepare.corpus README.md --name=r") == ('prepare.corpus',
                                                                               ['README.md', '--name=r'])
    assert python_invocation("python -") is None and python_invocation("curl -s x") is None


# ---- (c) every name the prose quotes exists

def definitions(path):
    """Names a Python file defines: top-level functions, classes and assignments, and Class.member."""
    names = set()
    for node in ast.parse(path.read_text(encoding='utf-8')).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(f'{node.name}.{item.name}')
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(f'{node.name}.{item.target.id}')
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


PATH = re.compile(r'^[\w.-]+(?:/[\w.-]+)*\.(?:py|md|html|toml)$')
# `file`'s `a`, `b` and `c` / `file` 的 `a`、`b` 和 `c`
NAME = r"`(?![\w./-]*\.py`)[\w.]+`"  # a name, not the next file
OWNED = re.compile(r"`([\w./-]+\.py)`(?:'s| ?的) ?((?:" + NAME + r"(?:, | and |、| 和 |和|及)?)+)")


def prose(lang):
    """The guide without its fenced blocks (which hold commands and output, not names)."""
    return FENCE.sub('', read(lang))


def quoted_problems(lang):
    text, bad = prose(lang), []
    for span in re.findall(r'`([^`\n]+)`', text):
        test = re.fullmatch(r'(tests/[\w/]+\.py)::(\w+)', span)
        if test:
            path = ROOT / test.group(1)
            if not path.is_file() or test.group(2) not in definitions(path):
                bad.append(f"`{span}`: no such test")
            continue
        if not PATH.match(span):
            continue
        top = span.split('/')[0]
        # a file of the repo (generated ones, under data/ or out-*, are left to the commands that make them)
        if ('/' in span and top in REPO_DIRS) or ('/' not in span and span.endswith('.py')):
            if not (ROOT / span).is_file():
                bad.append(f"`{span}`: no such file")
    for path, names in OWNED.findall(text):
        if not (ROOT / path).is_file():
            bad.append(f"`{path}`: no such file")
            continue
        defined = definitions(ROOT / path)
        bad += [f"`{path}`'s `{n}`: not defined there" for n in re.findall(r'`([\w.]+)`', names) if n not in defined]
    for target in re.findall(r'\]\(([^)\s]+)\)', text):  # links and pictures, relative to docs/
        if not re.match(r'https?:', target) and not (GUIDES[lang].parent / target.split('#')[0]).exists():
            bad.append(f"link ({target}): no such file")
    return bad


@pytest.mark.parametrize('lang', GUIDES)
def test_every_quoted_file_and_function_exists(lang):
    bad = quoted_problems(lang)
    assert not bad, '\n'.join(bad)


def test_the_name_checker_finds_what_is_gone(tmp_path, monkeypatch):
    monkeypatch.setitem(GUIDES, 'en', tmp_path / 'learn.md')
    (tmp_path / 'learn.md').write_text("Run `explain.py`; see `seedgpt/sampling.py`'s `sample` and `nope`, "
                                       "`model.py`'s `KVCache`, `tests/test_sample.py::test_gone` and "
                                       "![a](img/none.png).\n", encoding='utf-8')
    assert sorted(quoted_problems('en')) == sorted([
        "`explain.py`: no such file", "`seedgpt/sampling.py`'s `nope`: not defined there",
        "`tests/test_sample.py::test_gone`: no such test", "link (img/none.png): no such file"])


def repo_code_lines():
    lines = set()
    for path in [*ROOT.glob('*.py'), *(p for d in CODE_DIRS for p in (ROOT / d).glob('*.py'))]:
        lines.update(line.strip() for line in code_lines(path.read_text(encoding='utf-8')))
    return lines


def test_every_quoted_line_of_code_is_still_in_the_code():
    quoted = [line.strip() for kind, code in blocks('en', ('py',)) for line in code_lines(code)]
    assert quoted
    missing = [line for line in quoted if line not in repo_code_lines()]
    assert not missing, '\n'.join(missing)


# ---- (d) every program runs

PROGRAMS = [code for _, code in blocks('en', ('python',))]


@pytest.fixture(scope='module')
def learner_dir(tmp_path_factory):
    """A directory as the repo root is after step 6, with a data/stdlib_char and an out-stdlib-char of its own: one
    file of the standard library (os.py, which the programs read) rather than all of it, and a tiny model trained
    for two iterations, so that it takes seconds."""
    root = tmp_path_factory.mktemp('learner')
    data = root / 'data' / 'stdlib_char'
    dataset.prepare([os.__file__], tokenizer='char', out_dir=str(data), block_size=64, quiet=True)
    run_train(root / 'out-stdlib-char', data, '--max_iters=2')
    return root


@pytest.mark.parametrize('n', range(len(PROGRAMS)))
def test_every_program_runs(n, learner_dir, monkeypatch):
    monkeypatch.chdir(learner_dir)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(PROGRAMS[n], f'docs/learn.md program {n}', 'exec'), {'__name__': '__main__'})
    assert out.getvalue().strip(), "the program printed nothing"
