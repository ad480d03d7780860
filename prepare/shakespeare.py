"""
Tiny Shakespeare (1,115,394 characters), char-level as nanoGPT's shakespeare_char or GPT-2 BPE.

    python prepare/shakespeare.py                              # download, char-level -> data/shakespeare_char/
    python prepare/shakespeare.py --input=tinyshakespeare.txt  # offline, from a local copy
    python prepare/shakespeare.py --tokenizer=gpt2             # -> data/shakespeare_gpt2/

Char-level output equals nanoGPT's: a 65-character vocab, the first 90% train and the last 10% val.
"""
import argparse
import os
import urllib.request

from corpus import CorpusError, ROOT, prepare, run

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


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', default=None, help='a local tinyshakespeare.txt (else it is downloaded once)')
    p.add_argument('--tokenizer', default='char', choices=['char', 'gpt2'])
    p.add_argument('--out_dir', default=None, help='output directory (default data/shakespeare_<tokenizer>)')
    args = p.parse_args()

    def go():
        path = args.input
        if path is None:
            path = os.path.join(ROOT, 'data', 'tinyshakespeare.txt')
            if not os.path.exists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                download(path)
        return prepare([path], name=f'shakespeare_{args.tokenizer}', tokenizer=args.tokenizer, out_dir=args.out_dir)
    run(go)
