"""load_config with train.Config: files, overrides, types, errors and --help."""
import dataclasses
import inspect
import re

import pytest

import sample
import train
from conftest import ROOT, write
from seedgpt import runtime
from seedgpt.config import _field_comments, config_help, load_config, read_config_file
from seedgpt.runtime import Runtime


def fails(argv, *words, cls=train.Config):
    """load_config must exit with a one-line 'error: ...' naming each of `words`."""
    with pytest.raises(SystemExit) as e:
        load_config(cls, argv)
    msg = str(e.value.code)
    assert msg.startswith('error:') and '\n' not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_defaults():
    assert load_config(train.Config, []) == train.Config()


def test_overrides_and_types():
    cfg = load_config(train.Config, ['--n_layer=3', '--learning_rate=1', '--compile=True', '--bias=false',
                                     '--out_dir=out-x', '--dropout=0.1', '--grad-clip=0.5'])
    assert cfg.n_layer == 3 and type(cfg.n_layer) is int
    assert cfg.learning_rate == 1.0 and type(cfg.learning_rate) is float  # int accepted where a float is due
    assert cfg.compile is True and cfg.bias is False
    assert cfg.out_dir == 'out-x' and cfg.dropout == 0.1 and cfg.grad_clip == 0.5


def test_unknown_key_suggests_nearest():
    fails(['--learnig_rate=1'], "'learnig_rate'", 'learning_rate')


def test_unknown_key_without_near_match():
    fails(['--zzzzqqq=1'], 'zzzzqqq', '--help')


@pytest.mark.parametrize('arg,key', [('--n_layer=2.5', 'n_layer'), ('--n_layer=abc', 'n_layer'),
                                     ('--compile=2', 'compile'), ('--learning_rate=fast', 'learning_rate')])
def test_wrong_type_rejected(arg, key):
    fails([arg], key)


def test_missing_equals():
    fails(['--n_layer', '3'], 'n_layer', '=')


def test_bare_flag_switches_a_bool_on():
    assert load_config(train.Config, ['--compile']).compile is True
    assert load_config(train.Config, ['--compile', '--compile=False']).compile is False


def test_config_file_with_expressions(tmp_path):
    f = write(tmp_path / 'c.py', '"""a docstring"""\n'
                                 'n_layer = 2  # a comment\n'
                                 'n_embd = n_layer * 16 + 2 ** 4\n'
                                 'learning_rate = 6e-4 / 2\n'
                                 'min_lr = -1e-5 * -3\n'
                                 'out_dir = "out-test"\n')
    cfg = load_config(train.Config, [str(f), '--n_layer=5'])  # the command line wins over the file
    assert cfg.n_layer == 5 and cfg.n_embd == 48 and type(cfg.n_embd) is int
    assert cfg.learning_rate == pytest.approx(3e-4) and cfg.min_lr == pytest.approx(3e-5)
    assert cfg.out_dir == 'out-test'


@pytest.mark.parametrize('expr', ['6 * 10 ** -4', '3 ** 40', '2 ** 62 + 1', '3 ** 40 // 7', '3 ** 40 / 7', '-7 // 2',
                                  '2 ** -1', '10 ** 18 * 3 - 1', '1.5 ** 2', '2 ** 0.5', '-2 ** 2'])
def test_config_file_arithmetic_is_pythons(tmp_path, expr):
    """Exactly what Python computes, type included: ints stay exact, int ** negative int is a float."""
    got = read_config_file(str(write(tmp_path / 'c.py', f'x = {expr}\n')))['x']
    want = eval(expr)
    assert got == want and type(got) is type(want), expr


def test_config_file_learning_rate_as_a_power(tmp_path):
    cfg = load_config(train.Config, [str(write(tmp_path / 'c.py', 'learning_rate = 6 * 10 ** -4\n'))])
    assert cfg.learning_rate == 6 * 10 ** -4 and type(cfg.learning_rate) is float


@pytest.mark.parametrize('expr,word', [('1 / 0', 'zero'), ('1 // 0', 'zero'), ('0 ** -1', 'zero'),
                                       ('10 ** 10 ** 10', 'large'), ('2 ** 100000', 'large'),
                                       ('2 ** 999 * 2 ** 999', 'large'), ('10.0 ** 400', 'large'),
                                       ('(-8) ** 0.5', 'complex'), ('-"a"', 'numbers')])
def test_config_file_bad_arithmetic_rejected(tmp_path, expr, word):
    fails([str(write(tmp_path / 'c.py', f'n_layer = 2\nn_embd = {expr}\n'))], 'c.py:2', word)


@pytest.mark.parametrize('text', ['3.10', '0x10', '1e3', '007', 'True', "'quoted'", '[1, 2]', ''])
def test_str_setting_keeps_command_line_text(text):
    assert load_config(sample.Config, [f'--start={text}']).start == text


def test_number_for_a_str_setting_in_a_file_rejected(tmp_path):
    fails([str(write(tmp_path / 'c.py', 'start = 3.10\n'))], 'start', 'quotes', cls=sample.Config)


def test_config_file_typo_rejected(tmp_path):
    fails([str(write(tmp_path / 'c.py', 'learnig_rate = 1e-3\n'))], 'learning_rate')


@pytest.mark.parametrize('body', ['import os\n', 'from os import path\n', 'n_layer = int("3")\n',
                                  "n_layer = __import__('os').getpid()\n", 'def f():\n    pass\n',
                                  'n_layer = undefined_name * 2\n', 'n_layer, n_head = 1, 2\n',
                                  'n_layer = [1][0]\n'])
def test_config_file_code_rejected(tmp_path, body):
    fails([str(write(tmp_path / 'c.py', body))], 'c.py')


def test_missing_config_file(tmp_path):
    fails([str(tmp_path / 'nope.py')], 'nope.py', 'not found')


@pytest.mark.parametrize('name', sorted(p.name for p in (ROOT / 'config').glob('*.py')))
def test_shipped_configs_load(name):
    """Every shipped config holds only known keys of the right types, and changes something."""
    path = ROOT / 'config' / name
    from feedback import dpo  # the scripts whose Config adds settings to train.py's
    from feedback import reward
    from feedback import rl
    script = {'dpo_': dpo, 'reward_': reward, 'rl_': rl}.get(name.split('_')[0] + '_', train)
    cfg = load_config(script.Config, [str(path)])
    assert cfg != script.Config() and cfg.data_dir.startswith('data/') and cfg.out_dir.startswith('out-')
    assert isinstance(cfg.max_time, float) and isinstance(cfg.learning_rate, float)


def test_help_lists_every_key_with_its_comment(capsys):
    with pytest.raises(SystemExit) as e:
        load_config(train.Config, ['--help'])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    # each field's comment, read straight from the source of every class it inherits from (the model's in model.py)
    src = ''.join(inspect.getsource(c) for c in train.Config.__mro__ if dataclasses.is_dataclass(c))
    for f in dataclasses.fields(train.Config):
        line = next(line for line in out.splitlines() if line.strip().startswith(f'--{f.name}='))
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        assert repr(default) in line
        m = re.search(rf'^\s+{f.name}: \w+ = .*?  # (.*)$', src, re.M)
        if m:
            assert m.group(1).strip() in line, f.name
    assert re.search(r'^\s+learning_rate: \w+ = .*  # ', src, re.M)  # the regex does find comments


@dataclasses.dataclass
class BaseSettings:
    n_layer: int = 2  # layers, from the base class
    width: int = 8  # the base's width, overridden below


@dataclasses.dataclass
class MoreSettings(BaseSettings):
    width: int = 16  # the subclass's own width
    name: str = 'x'  # a field of the subclass only
    plain: int = 0


def test_help_shows_comments_of_inherited_fields():
    assert {k: v for k, v in _field_comments(MoreSettings).items() if not k.startswith('#')} == {
        'n_layer': 'layers, from the base class', 'width': "the subclass's own width",
        'name': 'a field of the subclass only'}
    lines = config_help(MoreSettings).splitlines()
    for flag, comment in [('--n_layer=2', 'layers, from the base class'), ('--width=16', "the subclass's own width"),
                          ("--name='x'", 'a field of the subclass only')]:
        assert any(line.split() == [flag, *comment.split()] for line in lines), (flag, lines)
    assert any(line.split() == ['--plain=0'] for line in lines)


def test_slow_settings_replace_the_others_below_the_peak(monkeypatch, capsys):
    """A config sizes itself: below slow_tflops of measured peak its `slow` settings win, and it says so."""
    rt = Runtime('cpu', 'cpu', 'float32', False, 0, 0, 1)
    cfg = load_config(train.Config, ['--n_embd=256', '--slow_tflops=0.6', "--slow={'n_embd': 128, 'batch_size': 4}"])
    monkeypatch.setattr(runtime, 'measured_matmul_flops', lambda *a, **k: 0.2e12)  # the CPU's measured peak
    slow = train.sized_for_machine(cfg, rt)
    assert slow.n_embd == 128 and slow.batch_size == 4
    assert 'below slow_tflops=0.6' in capsys.readouterr().out
    monkeypatch.setattr(runtime, 'measured_matmul_flops', lambda *a, **k: 0.9e12)  # the CPU's measured peak
    assert train.sized_for_machine(cfg, rt) == cfg
    assert 'settings stay as given' in capsys.readouterr().out
    with pytest.raises(SystemExit, match="^error: slow holds 'n_embed'"):
        train.sized_for_machine(load_config(train.Config, ['--slow_tflops=1', "--slow={'n_embed': 1}"]), rt)
    with pytest.raises(SystemExit, match='^error: batch_size must be a int'):
        train.sized_for_machine(load_config(train.Config, ['--slow_tflops=1', "--slow={'batch_size': 'x'}"]), rt)
