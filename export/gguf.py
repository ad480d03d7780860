"""
Export a checkpoint as one GGUF file for llama.cpp, ollama or LM Studio, with its tokenizer, and an ollama
Modelfile beside it.

    pip install -e '.[gguf]'
    python -m export.gguf --out_dir=out-stdlib-bpe --gguf=model.gguf              # f32: the same numbers
    python -m export.gguf --out_dir=out-stdlib-bpe --gguf=model-q8.gguf --type=q8_0
    llama-cli -m model.gguf -p "def "                                            # or ollama, below
    ollama create mymodel -f Modelfile && ollama run mymodel

The model goes to llama.cpp's architecture that holds it exactly: gpt2, llama or qwen3, the same choice as
export.hf (seedgpt/hf_convert.py), and a model that maps to none is refused with the settings in the way.
--type=f16 halves the file; q8_0 quarters it (matrices whose rows split in blocks of 32; the rest f16).
The tokenizer and what llama.cpp makes of it are described in seedgpt/gguf_convert.py and docs/gguf.md:
llama.cpp's tokens for a text are seedgpt's, and tests/test_gguf.py checks it with llama.cpp itself.
A chat model carries its chat template and ends its turn at <|end|>.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m export.gguf ...")

import os
from dataclasses import dataclass

from seedgpt.checkpoint import load_checkpoint
from seedgpt.config import load_config
from seedgpt.gguf_convert import TYPES, modelfile, need_gguf, write_gguf
from seedgpt.hf_convert import hf_architecture
from seedgpt.int8 import dequantize_int8


@dataclass
class Config:
    out_dir: str = 'out'  # the training run's directory, holding ckpt.pt
    gguf: str = 'model.gguf'  # the GGUF file to write; the ollama Modelfile goes beside it
    type: str = 'f32'  # weights as 'f32' (exact), 'f16' or 'q8_0' (8-bit blocks, llama.cpp's own format)
    force: bool = False  # replace the GGUF file and Modelfile if they exist


def main(cfg):
    if cfg.type not in TYPES:
        raise SystemExit(f"error: --type must be one of {', '.join(TYPES)}, got {cfg.type!r}")
    target = os.path.abspath(cfg.gguf)
    mf = os.path.join(os.path.dirname(target), 'Modelfile')
    if not cfg.force and (os.path.exists(target) or os.path.exists(mf)):
        raise SystemExit(f"error: {cfg.gguf} or its Modelfile exists; pass --force=True to replace them")
    need_gguf()
    ckpt = load_checkpoint(cfg.out_dir)
    meta = ckpt.get('meta') or {}
    args, state = ckpt['model_args'], ckpt['model']
    hf_architecture(args)  # a model with no llama.cpp counterpart stops here, before any conversion
    if ckpt.get('quant') not in (None, 'int8'):
        raise SystemExit(f"error: {cfg.out_dir} holds {ckpt['quant']} weights, which export cannot read; export "
                         "the float checkpoint it was compressed from")
    if ckpt.get('quant') == 'int8':  # llama.cpp's q8_0 is its own layout: write the floats, then --type=q8_0
        state = dequantize_int8(state)
        print("note: the int8 block weights are written as the floats they stand for; --type=q8_0 gives llama.cpp's "
              "own 8-bit layout")
    if args.get('value_head'):
        args = {**args, 'value_head': False}
        print("note: the value head (a reward or PPO model's score) is left out: llama.cpp has no place for it")
    if '<|call|>' in meta.get('special_tokens', {}):
        print("note: llama.cpp ends generation at any token named <|call|> (its harmony format's), so a tool call "
              "stops at its first token there; plain chat turns run as in seedgpt")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = target + f'.tmp{os.getpid()}'
    try:
        arch = write_gguf(tmp, args, state, meta, cfg.type, name=os.path.basename(os.path.abspath(cfg.out_dir)))
        os.replace(tmp, target)  # whole or not at all
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    with open(mf, 'w', encoding='utf-8') as f:
        f.write(modelfile(os.path.basename(target), meta))
    size = os.path.getsize(target) / 2 ** 20
    print(f"wrote {cfg.gguf}: llama.cpp {arch} ({cfg.type}, {size:.1f} MiB), {args['n_layer']} layers, "
          f"{args['n_embd']} wide, vocab {args['vocab_size']:,}, {meta.get('tokenizer')} tokenizer; and {mf}")


if __name__ == '__main__':
    main(load_config(Config))
