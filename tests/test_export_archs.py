"""Every architecture seedgpt trains, out to Hugging Face and back, against transformers' own models: GPT-2
(with and without biases), Llama-style and Qwen3-style give logits within 1e-4 in fp32 and the same greedy tokens;
with the tokenizer written beside them, AutoTokenizer + AutoModelForCausalLM give sample.py's greedy text; a
model with no standard counterpart is refused in one line, and so is every shipped config's model that has none;
Llama and Qwen3 directories built by transformers load into seedgpt and fine-tune."""
import json
import os
from pathlib import Path

os.environ['HF_HUB_OFFLINE'] = '1'  # before transformers is imported: nothing may reach the network

import pytest  # noqa: E402
import torch  # noqa: E402

transformers = pytest.importorskip('transformers')
pytest.importorskip('safetensors')
pytest.importorskip('tokenizers')

from conftest import make_text, run_script, run_train, write  # noqa: E402
from model import GPT, GPTConfig, mlp_width  # noqa: E402
from seedgpt import dataset  # noqa: E402
from seedgpt.chat import CHAT_SPECIALS  # noqa: E402
from seedgpt.config import load_config  # noqa: E402
from seedgpt.data import load_meta  # noqa: E402
from seedgpt.generate import generate  # noqa: E402
from seedgpt.hf_convert import GPT2_NAMES, hf_architecture, load_hf, save_hf_dir, to_hf, tokenizer_files  # noqa: E402
from seedgpt.tokenizer import BPETokenizer, train_bpe  # noqa: E402

ARCHS = {  # seedgpt's settings -> the Hugging Face class that holds them
    'gpt2': (dict(pos='learned', norm='layer', mlp='gelu', qk_norm=False, bias=True), 'GPT2LMHeadModel'),
    'gpt2_nobias': (dict(pos='learned', norm='layer', mlp='gelu', qk_norm=False, bias=False), 'GPT2LMHeadModel'),
    'llama': (dict(pos='rope', norm='rms', mlp='swiglu', qk_norm=False, bias=False), 'LlamaForCausalLM'),
    'qwen3': (dict(pos='rope', norm='rms', mlp='swiglu', qk_norm=True, bias=False), 'Qwen3ForCausalLM'),
}


def seed_model(vocab_size=300, seed=0, **settings):
    """A random seedgpt model, every weight (norm gains too) moved off its initial value."""
    torch.manual_seed(seed)
    args = dict(n_layer=2, n_head=4, n_embd=64, block_size=128, vocab_size=vocab_size, dropout=0.0, **settings)
    model = GPT(GPTConfig(**args)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model, args


def export_load(tmp_path, model, args, meta=None):
    config, tensors = to_hf(args, model.state_dict(), meta)
    save_hf_dir(tmp_path / 'hf', config, tensors, tokenizer_files(meta or {}, args['block_size']))
    return transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf', local_files_only=True,
                                                             dtype=torch.float32).eval()


def max_logit_diff(ours, theirs, V, T=100):
    idx = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, _ = ours(idx, targets=idx)  # with targets: logits at every position
        b = theirs(idx).logits
    return (a[..., :V] - b).abs().max().item()


def greedy(ours, theirs, prompt, n=20):
    """seedgpt's and transformers' greedy continuations of the prompt ids."""
    x = torch.tensor([prompt])
    theirs.generation_config.eos_token_id = None  # seedgpt's generate does not stop at <|endoftext|> either
    with torch.no_grad():
        a = generate(ours, x, n, temperature=0.0)[0, len(prompt):].tolist()
        b = theirs.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                            pad_token_id=0)[0, len(prompt):].tolist()
    return a, b


@pytest.mark.parametrize('arch', ARCHS)
def test_logits_and_greedy_tokens(tmp_path, arch):
    settings, cls = ARCHS[arch]
    ours, args = seed_model(**settings)
    theirs = export_load(tmp_path, ours, args)
    assert type(theirs).__name__ == cls
    assert max_logit_diff(ours, theirs, 300) < 1e-4
    a, b = greedy(ours, theirs, [5, 17, 42, 7])
    assert a == b and len(set(a)) > 1
    # and back in: the same weights (only the real rows of the padded tables go out and come back)
    back_args, sd = load_hf(tmp_path / 'hf')
    assert hf_architecture(back_args) == hf_architecture(args)
    for k, v in ours.state_dict().items():
        rows = 300 if k in ('transformer.wte.weight', 'lm_head.weight') else None
        assert torch.equal(sd[k][:rows], v[:rows]) or not settings['bias'] and k.endswith('bias'), k


def char_meta(text, specials=()):
    chars = sorted(set(text))
    return {'tokenizer': 'char', 'chars': chars, 'vocab_size': len(chars) + len(specials),
            'special_tokens': {s: len(chars) + i for i, s in enumerate(specials)}}


def bpe_meta(text, specials=()):
    tok = BPETokenizer(train_bpe([text], 400, specials))
    return {'tokenizer': 'bpe', 'tokenizer_json': tok.tok.to_str(), 'vocab_size': tok.vocab_size,
            'eot_token': tok.eot, 'special_tokens': tok.special_ids}


CORPUS = make_text(3000) + "中文也可以：你好，世界。\n" * 20


@pytest.mark.parametrize('arch,which', [('gpt2', 'char'), ('gpt2_nobias', 'gpt2'), ('llama', 'bpe'),
                                        ('qwen3', 'bpe_chat'), ('llama', 'char_chat')])
def test_auto_classes_give_the_same_greedy_text(tmp_path, arch, which, capsys):
    """export.hf on a checkpoint: AutoTokenizer + AutoModelForCausalLM from the directory alone give the ids and
    the greedy text that seedgpt gives (sample.py at temperature 0), Chinese included; chat models get the template."""
    from export import hf as export_hf
    from seedgpt.checkpoint import load_model
    specials = CHAT_SPECIALS if which.endswith('_chat') else ()
    meta = {'char': char_meta, 'char_chat': char_meta, 'bpe': bpe_meta, 'bpe_chat': bpe_meta}.get(
        which, lambda *_: {'tokenizer': 'gpt2', 'vocab_size': 50257})(CORPUS, specials)
    model, args = seed_model(vocab_size=meta['vocab_size'], seed=2, **ARCHS[arch][0])
    (tmp_path / 'out').mkdir()
    torch.save({'model': model.state_dict(), 'model_args': args, 'meta': meta, 'config': {}},
               tmp_path / 'out' / 'ckpt.pt')
    export_hf.main(load_config(export_hf.Config, [f'--out_dir={tmp_path / "out"}', f'--hf_dir={tmp_path / "hf"}']))
    assert f"wrote {tmp_path / 'hf'}: {ARCHS[arch][1]}" in capsys.readouterr().out
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf', local_files_only=True)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf', local_files_only=True,
                                                               dtype=torch.float32).eval()
    ours, tok = load_model(tmp_path / 'out', 'cpu')
    for prompt in ("the cat sat", "你好，世界"):
        ids = hf_tok(prompt)['input_ids']
        assert ids == tok.encode(prompt)
        a, b = greedy(ours, theirs, ids, n=24)
        assert a == b and tok.decode(a) == hf_tok.decode(b)
    if specials:  # the chat template renders what seedgpt.chat renders
        from seedgpt.chat import render_prompt
        messages = [{'role': 'user', 'content': 'why is the cat quiet'}]
        assert hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False) \
            == render_prompt(tok, messages)


# ---- the tokenizer and the chat format, as transformers reads them

ASCII = ''.join(map(chr, range(32, 127)))


def hf_tokenizer(d, meta):
    """AutoTokenizer from tokenizer_files(meta) alone, written into d."""
    for name, text in tokenizer_files(meta, 128).items():
        write(d / name, text)
    return transformers.AutoTokenizer.from_pretrained(d, local_files_only=True)


@pytest.mark.parametrize('specials', [(), tuple(CHAT_SPECIALS)])
def test_char_tokenizer_never_drops_an_unknown_character(tmp_path, specials):
    """seedgpt's char tokenizer refuses a character outside its vocabulary (ValueError); the exported one
    refuses it too, where it used to drop it ('a€b' became 'ab'), and round-trips every known one."""
    from seedgpt.tokenizer import load_tokenizer
    meta = char_meta(ASCII + '\n中文', specials)
    ours, theirs = load_tokenizer(meta), hf_tokenizer(tmp_path, meta)
    with pytest.raises(ValueError, match='not in this model'):
        ours.encode('a€b')
    with pytest.raises(Exception, match='not found in the vocabulary'):
        theirs('a€b')
    text = 'the cat, 中文\n' + ASCII
    assert theirs(text)['input_ids'] == ours.encode(text) and theirs.decode(ours.encode(text)) == text


def tool_conversation(arguments):
    """A conversation through both tools, each call's arguments given by arguments(dict), content None where a
    message only calls: as OpenAI sends it (arguments as JSON text) or as transformers' templates take it (dicts)."""
    def call(name, args):
        return {'role': 'assistant', 'content': None,
                'tool_calls': [{'type': 'function', 'function': {'name': name, 'arguments': arguments(args)}}]}
    return [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'What is 4812+7533?'},
            call('calc', {'expression': '4812+7533'}), {'role': 'tool', 'content': '12345'},
            {'role': 'assistant', 'content': '12345'}, {'role': 'user', 'content': 'How many a in a b a?'},
            call('count', {'word': 'a b a', 'letter': ' '}),  # not in the parameters' order; a space counted
            {'role': 'tool', 'content': '2'}]


@pytest.mark.parametrize('which', ['char', 'bpe', 'gpt2'])
def test_chat_template_renders_tool_calls_as_render_chat(tmp_path, which):
    """apply_chat_template gives render_chat's ids for a conversation with tool calls, tool results and content
    None; arguments as JSON text, which a template cannot parse, are refused rather than rendered wrong."""
    from seedgpt.chat import render_chat, render_prompt
    from seedgpt.tokenizer import load_tokenizer
    meta = {'char': lambda: char_meta(ASCII, CHAT_SPECIALS), 'bpe': lambda: bpe_meta(CORPUS + ASCII, CHAT_SPECIALS),
            'gpt2': lambda: {'tokenizer': 'gpt2', 'vocab_size': 50257 + len(CHAT_SPECIALS),
                             'special_tokens': {s: 50257 + i for i, s in enumerate(CHAT_SPECIALS)}}}[which]()
    ours, theirs = load_tokenizer(meta), hf_tokenizer(tmp_path, meta)
    openai, hf_style = tool_conversation(json.dumps), tool_conversation(dict)
    for prompt in (False, True):
        want = (render_prompt if prompt else lambda *a: render_chat(*a)[0])(ours, openai)
        got = theirs.apply_chat_template(hf_style, add_generation_prompt=prompt, tokenize=True, return_dict=False)
        assert got == want, (theirs.decode(got), ours.decode(want))
    with pytest.raises(Exception, match='arguments as a dict'):
        theirs.apply_chat_template(openai, tokenize=False)
    with pytest.raises(Exception, match='string content'):
        theirs.apply_chat_template([{'role': 'user', 'content': None}], tokenize=False)
    if which == 'char':  # a chat model from before tools refuses them, as render_chat does
        old = hf_tokenizer(tmp_path / 'old', char_meta(ASCII, CHAT_SPECIALS[:4]))
        with pytest.raises(Exception, match='without tool tokens'):
            old.apply_chat_template(hf_style, tokenize=False)


@pytest.mark.parametrize('which', ['char_chat', 'bpe_chat'])
def test_generation_stops_at_the_end_of_a_turn(tmp_path, which, capsys):
    """A chat model's <|end|> is its eos (config.json, generation_config.json, the tokenizer): transformers'
    generate, with the directory's own settings, stops where seedgpt's reply does. The model here is made to
    end every turn at once: its final norm always gives <|end|>'s embedding."""
    from export import hf as export_hf
    meta = (char_meta if which == 'char_chat' else bpe_meta)(CORPUS, CHAT_SPECIALS)
    end = meta['special_tokens']['<|end|>']
    model, args = seed_model(vocab_size=meta['vocab_size'], seed=4, **ARCHS['gpt2'][0])
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(model.transformer.wte.weight[end] * 10)
    (tmp_path / 'out').mkdir()
    torch.save({'model': model.state_dict(), 'model_args': args, 'meta': meta, 'config': {}},
               tmp_path / 'out' / 'ckpt.pt')
    export_hf.main(load_config(export_hf.Config, [f'--out_dir={tmp_path / "out"}', f'--hf_dir={tmp_path / "hf"}']))
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf', local_files_only=True)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf', local_files_only=True).eval()
    assert hf_tok.eos_token == '<|end|>' and hf_tok.eos_token_id == end and theirs.config.eos_token_id == end
    assert theirs.generation_config.eos_token_id[0] == end
    x = torch.tensor([hf_tok.apply_chat_template([{'role': 'user', 'content': 'the cat'}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=False)])
    out = theirs.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=10)
    assert out[0, x.size(1):].tolist() == [end]  # stopped at its first <|end|>, not after 10 tokens


@pytest.mark.parametrize('settings,words', [
    (dict(pos='rope', norm='rms', mlp='relu2', qk_norm=True, bias=False), ["mlp='swiglu'", "mlp='relu2'", 'ReLU²']),
    (dict(pos='learned', norm='rms', mlp='gelu', qk_norm=False, bias=True), ["norm='layer'", "norm='rms'"]),
    (dict(pos='rope', norm='layer', mlp='gelu', qk_norm=False, bias=True), ["pos='learned'", "pos='rope'"]),
    (dict(pos='rope', norm='rms', mlp='swiglu', qk_norm=False, bias=True), ['bias=False', 'bias=True']),
    (dict(pos='learned', norm='layer', mlp='gelu', qk_norm=True, bias=True), ['qk_norm=False', 'qk_norm=True']),
])
def test_no_standard_architecture_is_one_line(settings, words):
    model, args = seed_model(**settings)
    with pytest.raises(SystemExit) as e:
        to_hf(args, model.state_dict())
    msg = str(e.value)
    assert msg.startswith('error:') and '\n' not in msg and all(w in msg for w in words), msg


def test_export_script_refuses_relu2_before_writing(tmp_path):
    model, args = seed_model(vocab_size=95, pos='rope', norm='rms', mlp='relu2', qk_norm=True, bias=False)
    (tmp_path / 'out').mkdir()
    torch.save({'model': model.state_dict(), 'model_args': args, 'meta': char_meta(''.join(map(chr, range(32, 127)))),
                'config': {}}, tmp_path / 'out' / 'ckpt.pt')
    p = run_script('-m', 'export.hf', f'--out_dir={tmp_path / "out"}', f'--hf_dir={tmp_path / "hf"}')
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(lines) == 1 and 'ReLU²' in lines[0], p.stderr
    assert not (tmp_path / 'hf').exists()



# ---- the shipped configs: every model they train goes out, or is refused with its reason

ROOT = Path(__file__).resolve().parent.parent
GPT2_SETTINGS = dict(pos='learned', norm='layer', mlp='gelu', qk_norm=False, bias=True)  # OpenAI's GPT-2 weights


def shipped_architectures():
    """{config name: the architecture settings of the model it trains}, each config read with load_config through
    its script's Config. A fine-tune (init_from) trains the model it starts from: GPT-2's, or the one that the
    shipped config writing that out_dir trains."""
    import train
    from feedback import dpo, reward, rl
    cfgs = {}
    for path in sorted((ROOT / 'config').glob('*.py')):
        script = {'dpo_': dpo, 'reward_': reward, 'rl_': rl}.get(path.name.split('_')[0] + '_', train)
        cfgs[path.name] = load_config(script.Config, [str(path)])

    def settings(name):
        start = getattr(cfgs[name], 'init_from', 'scratch')
        if start in GPT2_NAMES:
            return GPT2_SETTINGS
        if start != 'scratch':
            base = [n for n, c in cfgs.items() if c.out_dir == start and n != name]
            assert len(base) == 1, f"{name}: init_from={start!r} is no shipped config's out_dir"
            return settings(base[0])
        return {k: getattr(cfgs[name], k) for k in GPT2_SETTINGS}
    return {name: settings(name) for name in cfgs}


def test_every_shipped_config_exports_or_is_refused_with_its_reason(tmp_path):
    """Each architecture the shipped configs train (tiny here) exports with transformers' logits within 1e-4 and
    the same greedy tokens, or is refused in one line; ReLU² is the one reason, and the line names the way out."""
    outcome = {}
    for name, settings in shipped_architectures().items():
        ours, args = seed_model(**settings)
        try:
            theirs = export_load(tmp_path / name, ours, args)
        except SystemExit as e:
            msg = str(e)
            assert msg.startswith('error:') and '\n' not in msg, (name, msg)
            assert settings['mlp'] == 'relu2' and "mlp='swiglu'" in msg and 'ReLU²' in msg, (name, msg)
            outcome[name] = 'refused'
            continue
        assert max_logit_diff(ours, theirs, 300) < 1e-4, name
        a, b = greedy(ours, theirs, [5, 17, 42, 7])
        assert a == b, name
        outcome[name] = type(theirs).__name__
    assert len(outcome) >= 13 and outcome['finetune_shakespeare.py'] == 'GPT2LMHeadModel'
    # the quick start and the tool model use SwiGLU (it beat ReLU² at equal time; docs/tokenizers.md): Qwen3, as
    # their RL stage; the configs whose figures were measured with ReLU² keep it, and are refused
    assert outcome['stdlib_char.py'] == outcome['sft_tools.py'] == outcome['rl_tools.py'] == 'Qwen3ForCausalLM'
    assert outcome['sft_tasks.py'] == outcome['rl_tasks.py'] == 'refused'


# ---- in: Llama and Qwen3 directories that transformers builds

def hf_model(kind, vocab_size=300, kv_heads=4, perturb_qk=False, **overrides):
    """A random LlamaForCausalLM or Qwen3ForCausalLM of seedgpt's shapes, every weight moved off its init (but
    Qwen3's q_norm and k_norm gains, unless perturb_qk)."""
    torch.manual_seed(3)
    args = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=kv_heads, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-5,
                intermediate_size=mlp_width(GPTConfig(n_embd=64, mlp='swiglu')), tie_word_embeddings=True,
                bos_token_id=None, eos_token_id=None, pad_token_id=None) | overrides
    config = (transformers.LlamaConfig if kind == 'llama' else transformers.Qwen3Config)(**args)
    model = (transformers.LlamaForCausalLM if kind == 'llama' else transformers.Qwen3ForCausalLM)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if perturb_qk or not name.endswith(('q_norm.weight', 'k_norm.weight')):
                p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize('kind,kv_heads', [('llama', 4), ('llama', 2), ('qwen3', 4), ('qwen3', 1)])
def test_llama_and_qwen3_directories_load(tmp_path, kind, kv_heads):
    """Grouped key-value heads are read as plain multi-head attention, each repeated for its group."""
    theirs = hf_model(kind, kv_heads=kv_heads)
    theirs.save_pretrained(tmp_path)
    args, sd = load_hf(tmp_path)
    assert args['pos'] == 'rope' and args['mlp'] == 'swiglu' and args['qk_norm'] == (kind == 'qwen3')
    ours = GPT(GPTConfig(**args)).eval()
    ours.load_state_dict(sd)  # strict
    assert max_logit_diff(ours, theirs, 300) < 1e-4
    a, b = greedy(ours, theirs, [3, 1, 4, 1, 5])
    assert a == b


@pytest.mark.parametrize('kind,overrides,words', [
    ('llama', dict(rope_parameters={'rope_type': 'default', 'rope_theta': 500000.0}), ['rope_theta=500000.0']),
    ('llama', dict(intermediate_size=200), ['intermediate_size=200', '192']),
    ('llama', dict(hidden_act='gelu'), ["hidden_act='gelu'"]),
    ('qwen3', dict(head_dim=32), ['head_dim=32']),
    ('qwen3', dict(rms_norm_eps=1e-6), ['rms_norm_eps=1e-06']),
    ('qwen3', dict(perturb_qk=True), ['q_norm', 'learned gains']),
])
def test_what_seedgpt_cannot_run_is_refused_in_one_line(tmp_path, kind, overrides, words):
    hf_model(kind, **overrides).save_pretrained(tmp_path)
    with pytest.raises(SystemExit) as e:
        load_hf(tmp_path)
    msg = str(e.value)
    assert msg.startswith('error:') and '\n' not in msg and all(w in msg for w in words), msg


def test_fine_tune_from_a_llama_directory(tmp_path):
    """train.py --init_from=DIR: a Llama directory with the dataset's tokenizer starts a run from its weights (its
    val loss is the one transformers computes on the same batches), and trains; another tokenizer's is refused."""
    import train
    from conftest import TINY
    from seedgpt.data import Batches
    write(tmp_path / 'dataset.txt', CORPUS * 3)
    data = tmp_path / 'data'
    dataset.prepare([str(tmp_path / 'dataset.txt')], tokenizer='bpe', vocab_size=400, out_dir=str(data), block_size=16,
                   quiet=True)
    meta = load_meta(data)
    theirs = hf_model('llama', vocab_size=meta['vocab_size'], kv_heads=2)
    theirs.save_pretrained(tmp_path / 'hf')
    for name, text in tokenizer_files(meta, 128).items():
        write(tmp_path / 'hf' / name, text)
    cfg = load_config(train.Config, TINY + [f'--out_dir={tmp_path / "out"}', f'--data_dir={data}',
                                            f'--init_from={tmp_path / "hf"}', '--eval_only=True'])
    val = train.main(cfg)['val']
    batches = Batches(cfg, meta, 'cpu')
    with torch.no_grad():
        ref = [torch.nn.functional.cross_entropy(theirs(x).logits.flatten(0, 1), y.flatten()).item()
               for x, y in (batches.get('val', j, 0, tag='eval') for j in range(cfg.eval_iters))]
    assert val == pytest.approx(sum(ref) / len(ref), abs=1e-4)
    losses = run_train(tmp_path / 'out', data, f'--init_from={tmp_path / "hf"}', '--max_iters=4',
                       '--learning_rate=1e-3')
    ckpt = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)
    assert ckpt['model_args']['pos'] == 'rope' and ckpt['model_args']['block_size'] == 16 and len(losses) == 4
    other = tmp_path / 'other'
    (tmp_path / 'hf' / 'tokenizer.json').write_text(bpe_meta(make_text(500, seed=7))['tokenizer_json'])
    with pytest.raises(SystemExit, match='tokenizer files are not those'):
        run_train(other, data, f'--init_from={tmp_path / "hf"}', '--max_iters=1')


def test_tokenizer_files_are_matched_to_the_dataset(tmp_path):
    """--init_from=DIR checks DIR's tokenizer files against the dataset's tokenizer: the same vocabulary (chat
    tokens after it change no id), else False; None where DIR has none."""
    from seedgpt.hf_convert import tokenizer_matches
    for meta in (char_meta(CORPUS), bpe_meta(CORPUS), {'tokenizer': 'gpt2', 'vocab_size': 50257}):
        d = tmp_path / meta['tokenizer']
        d.mkdir()
        assert tokenizer_matches(d, meta) is None
        for name, text in tokenizer_files(meta, 64).items():
            write(d / name, text)
        assert tokenizer_matches(d, meta) is True
        assert tokenizer_matches(d, {**meta, 'special_tokens': {s: 60000 + i for i, s in enumerate(CHAT_SPECIALS)}})
    assert tokenizer_matches(tmp_path / 'char', char_meta(CORPUS + 'Z')) is False
    old = json.loads(tokenizer_files(char_meta(CORPUS), 64)['tokenizer.json'])  # exported before the unk token
    old['model']['unk_token'] = None
    write(tmp_path / 'char' / 'tokenizer.json', json.dumps(old))
    assert tokenizer_matches(tmp_path / 'char', char_meta(CORPUS)) is True
    assert tokenizer_matches(tmp_path / 'bpe', bpe_meta(make_text(500, seed=7))) is False
