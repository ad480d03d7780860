"""
Export a checkpoint as a Hugging Face model directory, with its tokenizer.

    python -m export.hf --out_dir=out-stdlib-bpe --hf_dir=hf-out
    python -m export.hf --out_dir=out-stdlib-bpe --hf_dir=hf-out --force   # replace an existing hf-out

The model goes to the standard architecture that holds it exactly (seedgpt/hf_convert.py): GPT2LMHeadModel for
GPT-2's settings, LlamaForCausalLM for pos='rope', norm='rms', mlp='swiglu' and bias=False, Qwen3ForCausalLM
for those with qk_norm=True. A model that maps to none (mlp='relu2', learned positions with RMSNorm...) is
refused with the settings that stand in the way. Writes config.json and model.safetensors, and the
tokenizer: GPT-2's vocab.json and merges.txt, or tokenizer.json (the trained BPE; char-level as a BPE
without merges, which refuses a character outside the vocabulary as seedgpt does), with
tokenizer_config.json. A chat model also gets the chat template (seedgpt.chat's rendering, tool calls
included: pass their arguments as dicts) and <|end|> as its eos, in generation_config.json too, so
generate stops at the end of a turn. Then, with transformers installed:

    tok = AutoTokenizer.from_pretrained('hf-out')
    model = AutoModelForCausalLM.from_pretrained('hf-out')

Needs the safetensors package (pip install safetensors). An int8 checkpoint (compress.shrink --int8) is
written as the float weights it stands for; a reward or PPO model's value head is left out, with a note.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m export.hf ...")

from dataclasses import dataclass

from seedgpt.checkpoint import load_checkpoint
from seedgpt.config import load_config
from seedgpt.hf_convert import generation_files, hf_architecture, save_hf_dir, to_hf, tokenizer_files
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
    arch = hf_architecture(args)  # a model with no standard counterpart stops here, before any conversion
    if ckpt.get('quant') not in (None, 'int8'):
        raise SystemExit(f"error: {cfg.out_dir} holds {ckpt['quant']} weights, which export cannot read; export "
                         "the float checkpoint it was compressed from")
    if ckpt.get('quant') == 'int8':  # transformers has no int8 layer here: it would read the int8 numbers as weights
        state = dequantize_int8(state)
        print("note: the int8 block weights are written as the floats they stand for (int8 times each row's scale): "
              "the same model, at float size")
    if args.get('value_head'):  # a reward or PPO model: its language-model part is a plain model
        args, state = {**args, 'value_head': False}, {k: v for k, v in state.items() if not k.startswith('value_head.')}
        print(f"note: the value head (a reward or PPO model's score) is left out: {arch} has no place for it, "
              "so the export is the language model alone")
    config, tensors = to_hf(args, state, meta)
    extra = tokenizer_files(meta, args['block_size'])
    if not extra:
        print(f"note: {cfg.out_dir}/ckpt.pt names no tokenizer, so none is written; encode text yourself")
    extra.update(generation_files(config, meta))  # a chat model: generate stops at <|end|>
    save_hf_dir(cfg.hf_dir, config, tensors, extra, cfg.force)
    n_params = sum(t.numel() for t in tensors.values())
    print(f"wrote {cfg.hf_dir}: {config['architectures'][0]} with {args['n_layer']} layers, {args['n_embd']} wide, "
          f"{n_params / 1e6:.2f}M parameters, vocab {config['vocab_size']:,}, {meta.get('tokenizer', 'no')} tokenizer "
          f"({', '.join(['config.json', 'model.safetensors', *extra])})")


if __name__ == '__main__':
    main(load_config(Config))
