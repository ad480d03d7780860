"""
Tiny Shakespeare (1,115,394 characters), char-level as nanoGPT's shakespeare_char or GPT-2 BPE.

    python -m prepare.shakespeare                              # download, char-level -> data/shakespeare_char/
    python -m prepare.shakespeare --input=tinyshakespeare.txt  # offline, from a local copy
    python -m prepare.shakespeare --tokenizer=gpt2             # -> data/shakespeare_gpt2/
    python -m prepare.shakespeare --tokenizer=bpe --vocab_size=1024   # a BPE learned on it -> data/shakespeare_bpe1024/

Char-level output equals nanoGPT's: a 65-character vocab, the first 90% train and the last 10% val.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m prepare.shakespeare ...")

import os
import urllib.request
from dataclasses import dataclass

from seedgpt.config import load_config
from seedgpt.dataset import DATA_ROOT, CorpusError, prepare, run

URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'


def download(path):
    print(f"downloading tiny Shakespeare to {path}")
    try:
        with urllib.request.urlopen(URL, timeout=30) as r:
            data = r.read()
    except OSError as e:
        raise CorpusError(f"download failed ({e}); fetch {URL} yourself and pass --input=PATH")
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)


@dataclass
class Config:
    input: str = ''  # a local tinyshakespeare.txt; '' downloads it once to data/
    tokenizer: str = 'char'  # 'char', 'gpt2' or 'bpe' (learned from the train split: the first 90%)
    vocab_size: int = 1024  # tokenizer=bpe: tokens in all (the 256 bytes, the merges and <|endoftext|>)
    out_dir: str = ''  # output directory; '' is data/shakespeare_<tokenizer>, data/shakespeare_bpe<vocab_size> for bpe


def main(cfg):
    def go():
        path = cfg.input
        if not path:
            path = os.path.join(DATA_ROOT, 'tinyshakespeare.txt')
            if not os.path.exists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                download(path)
        name = f'shakespeare_{cfg.tokenizer}' + (str(cfg.vocab_size) if cfg.tokenizer == 'bpe' else '')
        return prepare([path], name=name, tokenizer=cfg.tokenizer, out_dir=cfg.out_dir or None,
                       vocab_size=cfg.vocab_size)
    run(go)


if __name__ == '__main__':
    main(load_config(Config))
