"""The quick-start demo: a char-level GPT on the Python standard library, about 3 minutes on 2 CPU cores.

    python prepare/stdlib.py && python train.py config/stdlib_char.py && python sample.py --out_dir=out-stdlib-char
"""
out_dir = 'out-stdlib-char'
data_dir = 'data/stdlib_char'  # python prepare/stdlib.py
max_time = 170  # seconds of training; the learning rate decays over this budget
max_iters = 100000  # the time budget stops us first
eval_interval = 250
eval_iters = 20
log_interval = 25

# small enough for 2 cores; bf16 makes width cheap on CPUs that have it
n_layer = 4
n_head = 4
n_embd = 256
block_size = 256  # code needs a longer view than prose
batch_size = 16

# the switches that won on tiny Shakespeare (docs/benchmarks.md)
pos = 'rope'
norm = 'rms'
mlp = 'relu2'
qk_norm = True
muon_lr = 0.02

learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 30
