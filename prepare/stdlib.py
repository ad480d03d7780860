"""
The default corpus, present wherever Python is: the standard library's own source.

    python -m prepare.stdlib                    # char-level -> data/stdlib_char/
    python -m prepare.stdlib --tokenizer=gpt2   # GPT-2 BPE  -> data/stdlib_gpt2/
    python -m prepare.stdlib --tokenizer=bpe --vocab_size=4096   # a BPE learned on it -> data/stdlib_bpe4096/

Every .py file under this interpreter's stdlib directory (about 12 MB), leaving out
site-packages and the test suites. Each file is one document. Nothing is downloaded.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m prepare.stdlib ...")

import os
from dataclasses import dataclass

from seedgpt.config import load_config
from seedgpt.dataset import prepare, run, stdlib_files


@dataclass
class Config:
    tokenizer: str = 'char'  # 'char', 'gpt2' or 'bpe' (learned from the train split)
    vocab_size: int = 4096  # tokenizer=bpe: tokens in all (the 256 bytes, the merges and <|endoftext|>)
    chars_from: str = ''  # tokenizer=char: this dataset's characters are the vocabulary (to fine-tune on it later)
    out_dir: str = ''  # output directory; '' is data/stdlib_<tokenizer>, data/stdlib_bpe<vocab_size> for bpe


def main(cfg):
    root, files = stdlib_files()
    name = f'stdlib_{cfg.tokenizer}' + (str(cfg.vocab_size) if cfg.tokenizer == 'bpe' else '')
    run(lambda: prepare([root], name=name, tokenizer=cfg.tokenizer, out_dir=cfg.out_dir or None, files=files,
                        vocab_size=cfg.vocab_size, chars_from=cfg.chars_from or None,
                        source=[f'python stdlib ({len(files)} .py files under {os.path.basename(root)})']))


if __name__ == '__main__':
    main(load_config(Config))
