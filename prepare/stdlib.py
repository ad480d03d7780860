"""
The default corpus, present wherever Python is: the standard library's own source.

    python -m prepare.stdlib                    # char-level -> data/stdlib_char/
    python -m prepare.stdlib --tokenizer=gpt2   # GPT-2 BPE  -> data/stdlib_gpt2/

Every .py file under this interpreter's stdlib directory (about 12 MB), leaving out
site-packages and the test suites. Each file is one document. Nothing is downloaded.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m prepare.stdlib ...")

import os
from dataclasses import dataclass

from seedgpt.config import load_config
from seedgpt.corpus import prepare, run, stdlib_files


@dataclass
class Config:
    tokenizer: str = 'char'  # 'char' or 'gpt2'
    out_dir: str = ''  # output directory; '' is data/stdlib_<tokenizer>


def main(cfg):
    root, files = stdlib_files()
    run(lambda: prepare([root], name=f'stdlib_{cfg.tokenizer}', tokenizer=cfg.tokenizer, out_dir=cfg.out_dir or None,
                        files=files, source=[f'python stdlib ({len(files)} .py files under {os.path.basename(root)})']))


if __name__ == '__main__':
    main(load_config(Config))
