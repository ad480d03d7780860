"""train.py after pretraining: chat SFT batches with loss masking, fine-tuning from a seedgpt checkpoint,
and from GPT-2 weights in a local Hugging Face directory."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from conftest import ROOT, read_log, run_train
from model import GPT, GPTConfig
from prepare import tasks
from seedgpt.charts import tokens_per_iter
from seedgpt.config import load_config
from seedgpt.data import ChatBatches, data_batches, load_meta, load_tokens


@pytest.fixture(scope='module')
def task_data(tmp_path_factory):
    out = tmp_path_factory.mktemp('tasks') / 'data'
    tasks.prepare(out_dir=str(out), n_train=300, n_val=20, n_test=20)
    return out


def test_chat_batches_are_whole_masked_conversations(task_data):
    meta = load_meta(task_data)
    cfg = load_config(train.Config, [f'--data_dir={task_data}', '--block_size=64', '--batch_size=8'])
    x, y = ChatBatches(cfg, meta, 'cpu').get('train', 3, 0)
    ids = load_tokens(task_data, 'train', meta)
    mask = np.fromfile(task_data / 'train.mask.bin', dtype=np.uint8)
    starts = set(np.fromfile(task_data / 'train.idx.bin', dtype=np.int64).tolist())
    for row in range(8):
        n = int((y[row] != -1).nonzero().max()) + 1  # up to the last trained position
        # each row is one conversation from its first token: find it in the token file
        first = next(s for s in sorted(starts) if np.array_equal(ids[s:s + n], x[row, :n].numpy()))
        for t in range(n):
            assert x[row, t] == ids[first + t]
            assert y[row, t] == (ids[first + t + 1] if mask[first + t + 1] else -1)
        assert (y[row, n:] == -1).all()
        end = int(ids[first + n])  # the last target is the assistant's end-of-turn token
        assert end == meta['special_tokens']['<|end|>']


def test_sft_loss_falls(tmp_path, task_data):
    """From about ln(vocab_size) to below ln(K), the loss of guessing uniformly among the K tokens answers use:
    the model has learnt more than which tokens make answers."""
    losses = run_train(tmp_path / 'sft', task_data, '--block_size=64', '--batch_size=8', '--max_iters=40',
                       '--n_embd=64', '--n_head=4', '--learning_rate=3e-3')
    meta = load_meta(task_data)
    mask = np.fromfile(task_data / 'train.mask.bin', dtype=np.uint8).astype(bool)
    answer_tokens = len(np.unique(load_tokens(task_data, 'train', meta)[mask]))
    assert losses[40] < math.log(answer_tokens) < losses[1], (losses[1], losses[40], answer_tokens)


def test_tok_s_counts_the_padded_batch_not_block_size(tmp_path, task_data, capsys):
    """A batch of conversations is as long as its longest: tok/s counts those tokens, the start-up line says
    block_size's count is a bound, and loss.png has no axis of tokens seen."""
    run_train(tmp_path / 'sft', task_data, '--block_size=64', '--batch_size=8', '--max_iters=3', '--log_interval=1')
    assert 'up to 512 tokens per iteration' in capsys.readouterr().out
    cfg = load_config(train.Config, [f'--data_dir={task_data}', '--block_size=64', '--batch_size=8'])
    batches = ChatBatches(cfg, load_meta(task_data), 'cpu')
    steps = [row for row in read_log(tmp_path / 'sft') if 'tok_s' in row]
    assert [row['iter'] for row in steps] == [1, 2, 3]
    for row in steps:
        tokens = batches.get('train', row['iter'] - 1, 0)[0].numel()  # iteration i trains on step i - 1's batch
        assert tokens < 8 * 64
        assert row['tok_s'] * row['ms'] / 1000 == pytest.approx(tokens, rel=0.02)
    assert tokens_per_iter(tmp_path / 'sft') is None


def test_fine_tune_from_a_checkpoint(tmp_path, char_data, trained_out):
    """Weights from out_dir, a fresh optimizer and step count: the first eval equals the base model's last."""
    run_train(tmp_path / 'ft', char_data, f'--init_from={trained_out}', '--max_iters=5', '--dropout=0.1')
    base = torch.load(trained_out / 'ckpt.pt', weights_only=True)
    rows = read_log(tmp_path / 'ft')
    assert rows[0]['iter'] == 0 and rows[0]['val_loss'] == pytest.approx(base['val_loss'], abs=1e-5)
    ft = torch.load(tmp_path / 'ft' / 'ckpt.pt', weights_only=True)
    assert ft['iter_num'] == 5 and ft['model_args']['dropout'] == 0.1


def test_fine_tune_tells_the_shape_it_got(tmp_path, char_data, trained_out, capsys):
    """A config's model shape does not apply to a model that comes from a checkpoint: the run says so, and
    prints and saves the shape it built, not the one configured."""
    base = torch.load(trained_out / 'ckpt.pt', weights_only=True)['model_args']
    run_train(tmp_path / 'ft', char_data, f'--init_from={trained_out}', '--max_iters=1', f"--n_layer={base['n_layer'] + 1}")
    out = capsys.readouterr().out
    assert f"n_layer {base['n_layer']} (not {base['n_layer'] + 1})" in out and out.count('note: the model comes') == 1
    config = json.loads(next(line for line in out.splitlines() if line.startswith('config: '))[len('config: '):])
    ft = torch.load(tmp_path / 'ft' / 'ckpt.pt', weights_only=True)
    assert config['n_layer'] == ft['config']['n_layer'] == ft['model_args']['n_layer'] == base['n_layer']


def test_fine_tune_with_a_shorter_block(tmp_path, char_data, trained_out):
    run_train(tmp_path / 'ft', char_data, f'--init_from={trained_out}', '--max_iters=2', '--block_size=8')
    ft = torch.load(tmp_path / 'ft' / 'ckpt.pt', weights_only=True)
    assert ft['model_args']['block_size'] == 8 and ft['model']['transformer.wpe.weight'].shape[0] == 8


def test_bad_init_from(tmp_path, char_data):
    with pytest.raises(SystemExit, match="^error: init_from='nowhere'"):
        run_train(tmp_path / 'x', char_data, '--init_from=nowhere')
    with pytest.raises(SystemExit, match='^error: init_from=gpt2 needs a GPT-2 BPE dataset'):
        run_train(tmp_path / 'x', char_data, '--init_from=gpt2')


@pytest.fixture(scope='module')
def tiny_gpt2(tmp_path_factory):
    """(hf_dir, data_dir): a random 2-layer GPT2LMHeadModel saved as a local HF directory, and GPT-2 BPE data."""
    transformers = pytest.importorskip('transformers')
    from conftest import make_text, write
    from seedgpt import dataset
    root = tmp_path_factory.mktemp('gpt2')
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64))
    hf.save_pretrained(root / 'hf')
    dataset.prepare([str(write(root / 'c.txt', make_text(4000)))], tokenizer='gpt2', out_dir=str(root / 'data'),
                   block_size=16, quiet=True)
    return root / 'hf', root / 'data', hf


def test_fine_tune_from_hf_gpt2(tmp_path, tiny_gpt2):
    """A random GPT2LMHeadModel in a local directory: train.py starts from exactly its weights."""
    hf_dir, data, _ = tiny_gpt2
    run_train(tmp_path / 'ft', data, '--init_from=gpt2', f'--hf_dir={hf_dir}', '--max_iters=1',
              '--block_size=16', '--eval_interval=1')
    ours = GPT(GPTConfig(**torch.load(tmp_path / 'ft' / 'ckpt.pt', weights_only=True)['model_args']))
    assert ours.config.n_layer == 2 and ours.config.vocab_size == 50257 and ours.config.block_size == 16


@pytest.mark.parametrize('config', ['finetune_shakespeare', 'finetune_lora_shakespeare'])
def test_gpt2_finetune_configs_run(tmp_path, tiny_gpt2, config):
    """The GPT-2 fine-tuning configs as shipped, on a tiny random GPT-2 in a local HF directory (the real
    weights are not on the test machine) and tiny BPE data: only sizes and paths are overridden."""
    hf_dir, data, hf = tiny_gpt2
    cfg = load_config(train.Config, [str(ROOT / 'config' / f'{config}.py'), f'--hf_dir={hf_dir}',
                                            f'--data_dir={data}', f'--out_dir={tmp_path / "out"}', '--block_size=16',
                                            '--grad_accum=2', '--max_iters=3', '--eval_iters=2', '--device=cpu',
                                            '--dtype=float32'])
    assert cfg.init_from == 'gpt2'
    losses = train.main(cfg)
    # the first evaluation, before any step, is the HF model's own loss on the same fixed val batches...
    batches = data_batches(cfg, load_meta(data), 'cpu')
    with torch.no_grad():
        ref = []
        for j in range(cfg.eval_iters):
            x, y = batches.get('val', j, 0, tag='eval')
            logits = hf.eval()(x).logits  # (B, T, V)
            ref.append(F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-1).item())
    start = read_log(tmp_path / 'out')[0]
    assert start['iter'] == 0 and start['val_loss'] == pytest.approx(sum(ref) / len(ref), abs=1e-4)
    # ...and three steps lower it, by far more than rounding: ~3e-3 at the full fine-tune's small learning rate,
    # ~1e-3 for LoRA, still in its warmup and with B starting at zero
    assert losses['val'] < start['val_loss'] - 2e-4, (losses['val'], start['val_loss'])
    ckpt = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)
    assert ckpt['model_args']['n_layer'] == 2 and ckpt['model_args']['block_size'] == 16
    assert ('lora' in ckpt) == (config == 'finetune_lora_shakespeare')
