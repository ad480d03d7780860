"""explain.py: its explicit attention equals model.py's SDPA forward, and its terminal, PNG and HTML outputs."""
import json
from html.parser import HTMLParser

import pytest
import torch

from conftest import run_script, run_train, write
from explain import attention as explain
from model import GPT, GPTConfig
from seedgpt import dataset
from seedgpt.checkpoint import load_model
from seedgpt.tokenizer import GPT2Tokenizer


def peaky_model(**switches):
    """A tiny random GPT whose attention is far from uniform: with GPT-2's init (std 0.02) every
    query matches every key about equally, and a comparison of near-uniform maps would prove little."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=24, vocab_size=50, **switches)).eval()
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight.mul_(40)
    return model


SWITCHES = {'gpt2': dict(bias=True), 'modern': dict(pos='rope', norm='rms', qk_norm=True, mlp='relu2')}


@pytest.mark.parametrize('name', SWITCHES)
def test_explicit_attention_equals_sdpa(name):
    model = peaky_model(**SWITCHES[name])
    x = torch.randn(2, 24, 32)
    rope = (model.rope_cos, model.rope_sin) if model.config.pos == 'rope' else None
    with torch.no_grad():
        for block in model.transformer.h:
            y, att = explain.explicit_attention(block.attn, x, rope)
            torch.testing.assert_close(y, block.attn(x, rope), atol=1e-5, rtol=1e-4)  # the module runs SDPA
            assert att.amax(-1).mean() > 0.25  # uniform rows would give 0.16: a wrong scale or mask would show
        # the whole model: trace's logits (explicit attention in every block) equal the plain forward's
        ids = torch.randint(50, (24,)).tolist()
        logits, att = explain.trace(model, ids)
        ref, _ = model(torch.tensor([ids]), torch.tensor([ids]))
    torch.testing.assert_close(logits, ref[0], atol=1e-4, rtol=1e-4)
    assert att.shape == (2, 4, 24, 24)


def test_attention_rows_sum_to_one_and_are_causal():
    for model in (peaky_model(pos='rope'), GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, vocab_size=50)).eval()):
        _, att = explain.trace(model, list(range(20)))
        torch.testing.assert_close(att.sum(-1), torch.ones(2, 4, 20))
        assert (att.triu(diagonal=1) == 0).all()  # no token looks at a later one
    past = torch.ones(20, 20, dtype=torch.bool).tril()
    assert (att[..., past] > 0).all()  # and at GPT-2's init, every token looks a little at each earlier one


def test_candidates_are_softmax_of_the_sampling_logits(trained_out):
    model, tok = load_model(trained_out, 'cpu')
    ids = tok.encode('the cat sat on')
    logits, _ = explain.trace(model, ids)
    probs, top = explain.candidates(logits, 5)
    for t in (3, len(ids) - 1):  # what generation sees after the first t + 1 tokens
        last, _ = model(torch.tensor([ids[:t + 1]]))
        ref = torch.softmax(last[0, -1].float(), dim=-1)
        torch.testing.assert_close(probs[t], ref.sort(descending=True).values[:5], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ref[top[t]], probs[t], atol=1e-5, rtol=1e-4)


class Spans(HTMLParser):
    """The text of each <span class="tok ..."> in order, and every attribute that could fetch something."""

    def __init__(self):
        super().__init__()
        self.tokens, self.fetches, self.data = [], [], ''
        self.inside = self.in_data = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.fetches += [v for k, v in attrs.items() if k in ('src', 'href')]
        self.inside = tag == 'span' and 'tok' in attrs.get('class', '').split()
        self.in_data = attrs.get('id') == 'data'
        if self.inside:
            self.tokens.append('')

    def handle_endtag(self, tag):
        self.inside = self.in_data = False

    def handle_data(self, data):
        if self.inside:
            self.tokens[-1] += data
        if self.in_data:
            self.data += data


def test_script_writes_text_png_and_html(trained_out, tmp_path):
    image = pytest.importorskip('matplotlib.image')
    p = run_script('-m', 'explain.attention', f'--out_dir={trained_out}', '--prompt=the cat', '--tokens=8',
                   '--device=cpu', f'--png={tmp_path / "png"}', f'--html={tmp_path / "page.html"}')
    assert p.returncode == 0, p.stderr
    assert '\x1b' not in p.stdout  # not a terminal: plain text, the weights as numbers
    assert p.stdout.count('\nstep ') == 8 and '  attention: t ' in p.stdout and '  candidates: ' in p.stdout
    for name in ('attention_layer1.png', 'attention_layer2.png', 'probability.png'):  # TINY has 2 layers
        pixels = image.imread(tmp_path / 'png' / name)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 200 and pixels.std() > 0.05, name
    parser = Spans()
    parser.feed((tmp_path / 'page.html').read_text(encoding='utf-8'))
    data = json.loads(parser.data)
    assert ''.join(data['tokens']).startswith('the cat') and len(data['tokens']) == 7 + 8
    assert parser.tokens == [explain.visible(s) for s in data['tokens']]
    assert parser.fetches == []  # self-contained: nothing to load
    assert len(data['att']) == 2 and len(data['att'][0]) == 2 and len(data['att'][1][0][14]) == 15  # [layer][head][row]
    assert sum(data['att'][1][0][14]) == pytest.approx(1, abs=1e-3)


def test_terminal_colours(trained_out):
    p = run_script('-m', 'explain.attention', f'--out_dir={trained_out}', '--prompt=the', '--tokens=3', '--device=cpu',
                   '--color=always', '--layer=0', '--head=1')
    assert p.returncode == 0, p.stderr
    assert p.stdout.count('\x1b[1;38;2;235;50;50m') >= 3  # each generated token in red
    assert '\x1b[38;2;' in p.stdout and 'layer 1 of 2, head 2 of 2' in p.stdout


ZH = '都是勇敢的你破旧的玩偶月亮星星风吹过小河边我们一起唱歌'


@pytest.fixture(scope='module')
def zh_out(tmp_path_factory):
    """A tiny char model trained for 20 iterations on made-up Chinese text."""
    import random
    rnd = random.Random(0)
    root = tmp_path_factory.mktemp('zh')
    text = '\n'.join(''.join(rnd.choice(ZH) for _ in range(rnd.randint(5, 15))) + '。' for _ in range(2000))
    dataset.prepare([str(write(root / 'zh.txt', text))], tokenizer='char', out_dir=str(root / 'data'), block_size=16,
                   quiet=True)
    run_train(root / 'out', root / 'data', '--max_iters=20')
    return root / 'out'


def test_cjk_one_token_per_character(zh_out, tmp_path):
    image = pytest.importorskip('matplotlib.image')
    p = run_script('-m', 'explain.attention', f'--out_dir={zh_out}', '--prompt=都是勇敢的', '--tokens=6', '--device=cpu',
                   f'--png={tmp_path}')
    assert p.returncode == 0, p.stderr
    assert "step 1: " in p.stdout and "  attention: 都 " in p.stdout and ' 的 ' in p.stdout
    font = next(line for line in p.stdout.splitlines() if line.startswith('font: '))
    from matplotlib import font_manager
    if any('Noto Sans CJK' in f.name for f in font_manager.fontManager.ttflist):
        assert 'Noto Sans CJK' in font
    assert image.imread(tmp_path / 'attention_layer1.png').std() > 0.05


def test_bpe_tokens_are_their_own_text(gpt2_enc):
    tok = GPT2Tokenizer()
    ids = tok.encode('Attention is all you need.')
    assert explain.pieces(tok, ids) == [gpt2_enc.decode([i]) for i in ids]
    assert ''.join(explain.pieces(tok, ids)) == 'Attention is all you need.' and len(ids) > 4
