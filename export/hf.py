"""
Export a checkpoint with GPT-2's architecture as a Hugging Face GPT2LMHeadModel directory.

    python -m export.hf --out_dir=out-gpt2-arch --hf_dir=hf-out
    python -m export.hf --out_dir=out-gpt2-arch --hf_dir=hf-out --force   # replace an existing hf-out

Writes config.json and model.safetensors (plus vocab.json, merges.txt and tokenizer_config.json when the
model uses the GPT-2 tokenizer), then, with transformers installed:

    GPT2LMHeadModel.from_pretrained('hf-out')

Needs the safetensors package (pip install safetensors). Models with rope, rms norm, qk_norm, relu2 or
bias=False are not GPT-2 and are refused. An int8 checkpoint (compress.shrink --int8) is written as the float
weights it stands for; a reward or PPO model's value head is left out, with a note.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m export.hf ...")

from dataclasses import dataclass

from seedgpt.checkpoint import load_checkpoint
from seedgpt.config import load_config
from seedgpt.hf import gpt2_tokenizer_files, save_hf_dir, to_hf
from seedgpt.int8 import dequantize_int8


@dataclass
class Config:
    out_dir: str = 'out'  # the training run's directory, holding ckpt.pt
    hf_dir: str = 'hf-out'  # the Hugging Face directory to write
    force: bool = False  # replace hf_dir if it exists and is not empty


def main(cfg):
    ckpt = load_checkpoint(cfg.out_dir)
    meta = ckpt.get('meta') or {}
    args, state = ckpt['model_args'], ckpt['model']
    if ckpt.get('quant') not in (None, 'int8'):
        raise SystemExit(f"error: {cfg.out_dir} holds {ckpt['quant']} weights, which export cannot read; export "
                         "the float checkpoint it was compressed from")
    if ckpt.get('quant') == 'int8':  # GPT2LMHeadModel has no int8 layer: it would read the int8 numbers as weights
        state = dequantize_int8(state)
        print("note: the int8 block weights are written as the floats they stand for (int8 times each row's scale): "
              "the same model, at float size")
    if args.get('value_head'):  # a reward or PPO model: its language-model part is a plain GPT-2
        args, state = {**args, 'value_head': False}, {k: v for k, v in state.items() if not k.startswith('value_head.')}
        print("note: the value head (a reward or PPO model's score) is left out: GPT2LMHeadModel has no place for it, "
              "so the export is the language model alone")
    config, tensors = to_hf(args, state, meta)
    extra = {}
    if meta.get('tokenizer') == 'gpt2':
        extra = gpt2_tokenizer_files(config['n_positions'])
    elif meta.get('tokenizer'):
        print(f"note: the model uses a {meta['tokenizer']} tokenizer; Hugging Face tokenizer files are written "
              f"only for GPT-2's, so encode text yourself (its vocabulary is in {cfg.out_dir}/ckpt.pt's meta)")
    save_hf_dir(cfg.hf_dir, config, tensors, extra, cfg.force)
    n_params = sum(t.numel() for t in tensors.values())
    print(f"wrote {cfg.hf_dir}: GPT-2 with {config['n_layer']} layers, {config['n_embd']} wide, "
          f"{n_params / 1e6:.2f}M parameters, vocab {config['vocab_size']:,} "
          f"({', '.join(['config.json', 'model.safetensors', *extra])})")


if __name__ == '__main__':
    main(load_config(Config))
