"""
The default corpus, present wherever Python is: the standard library's own source.

    python prepare/stdlib.py                    # char-level -> data/stdlib_char/
    python prepare/stdlib.py --tokenizer=gpt2   # GPT-2 BPE  -> data/stdlib_gpt2/

Every .py file under this interpreter's stdlib directory (about 12 MB), leaving out
site-packages and the test suites. Each file is one document. Nothing is downloaded.
"""
import argparse
import os
import sysconfig

from corpus import prepare, run

SKIP_DIRS = {'site-packages', 'dist-packages', 'test', 'tests', 'idle_test', '__pycache__'}


def stdlib_files():
    root = sysconfig.get_paths()['stdlib']
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        files += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith('.py')]
    return root, files


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--tokenizer', default='char', choices=['char', 'gpt2'])
    p.add_argument('--out_dir', default=None, help='output directory (default data/stdlib_<tokenizer>)')
    args = p.parse_args()
    root, files = stdlib_files()
    run(lambda: prepare([root], name=f'stdlib_{args.tokenizer}', tokenizer=args.tokenizer, out_dir=args.out_dir,
                        files=files, source=[f'python stdlib ({len(files)} .py files under {os.path.basename(root)})']))
