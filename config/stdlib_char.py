"""The quick-start demo: a char-level GPT on the Python standard library, about 3 minutes on 2 CPU cores.

    python -m prepare.stdlib && python train.py config/stdlib_char.py && python sample.py --out_dir=out-stdlib-char
"""
out_dir = 'out-stdlib-char'
data_dir = 'data/stdlib_char'  # python -m prepare.stdlib
max_time = 170  # seconds of training; the learning rate decays over this budget
max_iters = 100000  # the time budget stops us first
eval_interval = 250
eval_iters = 20
log_interval = 25

# small enough for 2 cores; where bf16 matmuls are fast, width is cheap (docs/benchmarks.md)...
n_layer = 4
n_head = 4
n_embd = 256
block_size = 256  # code needs a longer view than prose
batch_size = 16
# ...but where the matmul peak is lower (fp32 only, or a busy host) a narrower model sees more text in the
# same time, and learns more from it (docs/benchmarks.md)
slow_tflops = 0.6
slow = {'n_embd': 128, 'block_size': 128, 'batch_size': 12}

# the switches that won on tiny Shakespeare (docs/benchmarks.md)
pos = 'rope'
norm = 'rms'
mlp = 'swiglu'  # beat relu2 at equal time (docs/tokenizers.md, bench.tokenizers --only=mlp); exports to Llama/Qwen3
qk_norm = True
muon_lr = 0.02

learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 30
