"""
Tokenize any text corpus into data/<name>/{train,val}.bin and meta.json.

    python -m prepare.corpus notes/ 'books/*.txt' chats.jsonl --name=mine               # GPT-2 BPE
    python -m prepare.corpus poems.txt --name=poems --tokenizer=char                     # one id per character
    python -m prepare.corpus zh/ --name=zh --tokenizer=bpe --vocab_size=4096             # a BPE learned on it
    python -m prepare.corpus data.jsonl --name=mine --text_field=content

Inputs are files, directories (searched for .txt, .md and .jsonl) or globs; every file must be
UTF-8. A .txt or .md file is one document, a .jsonl line is one document (its text field). JSON may
escape a lone surrogate (\\ud800), which is no character: it becomes U+FFFD, and the run says how
many lines had one and where the first is (meta.json counts them too). In BPE
modes each document ends with <|endoftext|>; in char mode documents are joined by a blank line.
--tokenizer=bpe learns a byte-level BPE of vocab_size tokens from the train split alone (never val) and
saves it beside the tokens as tokenizer.json (docs/tokenizers.md compares the three).

The split is deterministic and falls on document boundaries: a document goes to val when a hash of
its name says so (about val_fraction of them). A corpus of a single document (tiny Shakespeare) is
cut instead: its first 90% of characters are train, the rest val, as nanoGPT does.

Tokens are flat uint16 (uint32 past 65535 ids). The corpus is streamed in pieces of about 1 MB, so
memory stays flat however large it is; BPE uses every core. Output appears only when complete.
The pipeline is seedgpt/dataset.py; this is its command line.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m prepare.corpus ...")

from dataclasses import dataclass

from seedgpt.config import load_config
from seedgpt.dataset import prepare, run


@dataclass
class Config:
    positional = 'inputs'  # bare arguments are the inputs
    inputs: str = ''  # files, directories or globs of .txt/.md/.jsonl (bare arguments, or comma-separated)
    name: str = ''  # the dataset's name: it goes to data/<name>/
    tokenizer: str = 'gpt2'  # 'gpt2' (GPT-2 BPE), 'char' (one id per character) or 'bpe' (learned from this corpus)
    vocab_size: int = 4096  # tokenizer=bpe: tokens in all (the 256 bytes, the merges and <|endoftext|>)
    chars_from: str = ''  # tokenizer=char: this dataset's characters are the vocabulary (to fine-tune on it later)
    out_dir: str = ''  # output directory; '' is data/<name>
    val_fraction: float = 0.1  # share of the documents that go to val
    text_field: str = 'text'  # the field holding the text in .jsonl lines
    block_size: int = 256  # each split must hold more tokens than this


def main(cfg):
    if not cfg.inputs or not cfg.name:
        raise SystemExit("error: give the inputs and a name, e.g. python -m prepare.corpus notes/ --name=notes")
    run(lambda: prepare(cfg.inputs.split(','), name=cfg.name, tokenizer=cfg.tokenizer, out_dir=cfg.out_dir or None,
                        val_fraction=cfg.val_fraction, text_field=cfg.text_field, block_size=cfg.block_size,
                        vocab_size=cfg.vocab_size, chars_from=cfg.chars_from or None))


if __name__ == '__main__':
    main(load_config(Config))
