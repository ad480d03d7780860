"""Every command the project tells its reader to run parses: the next step a stage prints ("now: python ..."),
the hints in error messages, the commands in scripts' docstrings, README.md and docs/*.md. Each names a module
or script that exists, and every --key it passes is a setting of that script's Config (and a config file it
names loads through seedgpt.config). A printed next step is also run for real, on a tiny suite and model."""
import dataclasses
import importlib
import json
import re

import pytest

from chat import eval as evaluate
from conftest import ROOT, make_ckpt
from feedback import dpo
from prepare import preferences, tasks
from seedgpt.config import load_config
from seedgpt.tasks import TASKS

# where commands are written: every script's strings (docstrings, printed next steps, error hints), and the docs
SCRIPT_DIRS = ('prepare', 'feedback', 'chat', 'compress', 'export', 'serve', 'bench', 'explain', 'seedgpt', 'config')
DOCS = ['README.md', *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'docs').glob('*.md'))]
EXTERNAL = {'pytest', 'venv', 'pip'}  # python -m of a tool, not of this repo
# commands written for another program, each with why
NOT_OURS = {'config/train_shakespeare_char.py': "nanoGPT's config, run in nanoGPT's checkout (docs/benchmarks.md)"}

# one argument: --key, --key=value (quoted or bare), or a config file
ARG = r'''--?[\w-]+(?:=(?:"[^"]*"|'[^']*'|[^\s,;)`'"\\]*))?|config/[\w.]+\.py'''
COMMAND = re.compile(r'python3? (-m \w+(?:\.\w+)*|[\w./-]+\.py)((?:[ \t]+(?:' + ARG + '))*)')  # not a full stop


def texts():
    """(where, text) of every string in the scripts and every line of the docs."""
    import ast
    files = sorted(p for d in SCRIPT_DIRS for p in (ROOT / d).glob('*.py')) + sorted(ROOT.glob('*.py'))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):  # an f-string's pieces too
                yield f'{path.relative_to(ROOT)}:{node.lineno}', node.value
    for name in DOCS:
        for lineno, line in enumerate((ROOT / name).read_text(encoding='utf-8').splitlines(), 1):
            yield f'{name}:{lineno}', line


def parse(match):
    """(module name, [arguments, unquoted]) of a COMMAND match."""
    target, args = match.groups()
    module = target[3:] if target.startswith('-m ') else target.removesuffix('.py').replace('/', '.')
    return module, [re.sub(r'''=(["'])(.*)\1$''', r'=\2', a) for a in re.findall(ARG, args)]


def commands():
    """[(where, module name, [arguments])] of every `python -m module ...` and `python script.py ...` written."""
    found = [(where, *parse(m)) for where, text in texts() for m in COMMAND.finditer(text)]
    return [(where, module, argv) for where, module, argv in found if module.split('.')[0] not in EXTERNAL]


def problems(module, argv):
    """What is wrong with `python -m module *argv`: [] when it parses."""
    try:
        script = importlib.import_module(module)
    except ImportError as e:
        return [f"no module {module} ({e})"]
    cls = getattr(script, 'Config', None)
    if cls is None or not dataclasses.is_dataclass(cls):
        return [f"{module} has no Config dataclass"]
    fields, found = {f.name for f in dataclasses.fields(cls)}, []
    argv = [a for a in argv if a not in ('-h', '--help') and a not in NOT_OURS]
    for a in argv:
        key = a[2:].partition('=')[0].replace('-', '_') if a.startswith('--') else None
        if key is not None and key not in fields:
            found.append(f"--{key} is no setting of {module}")
        elif key is None and not (ROOT / a).is_file():
            found.append(f"no config file {a}")
    # the values too, where they are written out: not an f-string's `--out_dir=` nor a shell variable's `0.$p`
    complete = [a for a in argv if not a.endswith('=') and '$' not in a]
    if not found:
        try:
            load_config(cls, complete)
        except SystemExit as e:
            found.append(str(e))
    return found


def test_every_written_command_parses(monkeypatch):
    monkeypatch.chdir(ROOT)  # config files are named from the repo root, as the docs run them
    found = commands()
    assert len(found) > 300 and {m for _, m, _ in found} >= {'train', 'sample', 'chat.eval', 'feedback.dpo'}
    bad = [f"{where}: python -m {module} {' '.join(argv)}: {p}" for where, module, argv in found
           for p in problems(module, argv)]
    assert not bad, '\n'.join(bad)


def test_problems_are_found():
    """The checker itself: a module that does not exist, a key that is no setting, a missing config file and
    a value of the wrong type are each reported."""
    assert problems('chat.evaluate', []) and problems('chat.eval', ['--outdir=x'])
    assert problems('train', ['config/nope.py']) and problems('chat.eval', ['--max_examples=many'])
    assert problems('chat.eval', ['--out_dir=', '--json']) == []  # an f-string's key, its value filled in later


# ---- a printed next step, run for real

# each script that prints "now: python ...", and the test below that runs what it prints
RUN_FOR_REAL = {'feedback/dpo.py': 'test_dpo_then_eval_as_printed'}


def test_every_printed_next_step_is_run_here():
    printers = {where.split(':')[0] for where, text in texts() if 'now: python' in text and not where.endswith('.md')}
    assert printers == set(RUN_FOR_REAL), printers
    assert all(name in globals() for name in RUN_FOR_REAL.values())


CPU = ['--device=cpu', '--dtype=float32']
TINY_DPO = CPU + ['--compile=False', '--block_size=64', '--batch_size=4', '--eval_iters=1', '--log_interval=1',
                  '--warmup_iters=0', '--max_iters=2', '--eval_interval=2']


def test_dpo_then_eval_as_printed(tmp_path, capsys):
    """The task suite, an SFT model, preference pairs from it, DPO: then the command DPO prints, as printed
    (with CPU settings), answers the suite the pairs came from, not the pairs."""
    suite = tmp_path / 'tasks'
    meta = tasks.prepare(out_dir=str(suite), n_train=8, n_val=2, n_test=3, quiet=True)
    (tmp_path / 'sft').mkdir()
    sft = make_ckpt(tmp_path / 'sft', meta)
    pairs = tmp_path / 'prefs'
    preferences.prepare(str(sft), data_dir=str(suite), out_dir=str(pairs), n_train=8, n_val=4, samples=1,
                        batch_size=8, device='cpu', quiet=True)
    out = tmp_path / 'dpo'
    dpo.main(load_config(dpo.Config, TINY_DPO + [f'--init_from={sft}', f'--data_dir={pairs}', f'--out_dir={out}']))
    printed = capsys.readouterr().out
    step = re.search(r'now: (python .*)$', printed, re.M)
    assert step, printed
    module, argv = parse(COMMAND.fullmatch(step.group(1)))
    assert module == 'chat.eval' and argv == [f'--out_dir={out}']
    evaluate.main(load_config(evaluate.Config, argv + CPU + ['--json', '--max_new_tokens=4']))
    result = json.loads(capsys.readouterr().out)
    assert result['data_dir'] == str(suite) and set(result['tasks']) == set(TASKS)


def test_eval_of_pairs_that_name_no_suite_is_one_line(tmp_path):
    """Pairs made before they recorded their suite: the evaluator cannot guess it, and says what to pass."""
    meta = tasks.prepare(out_dir=str(tmp_path / 'tasks'), n_train=2, n_val=1, n_test=1, quiet=True)
    (tmp_path / 'old-dpo').mkdir()
    out = make_ckpt(tmp_path / 'old-dpo', {**meta, 'format': 'pairs'})
    with pytest.raises(SystemExit, match=r'^error: .*preference pairs.*--data_dir=data/tasks$'):
        evaluate.suite_dir(str(out))
