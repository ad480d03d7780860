"""The quick-start demo: a char-level GPT on the Python standard library, about 4 minutes on 2 CPU cores."""
out_dir = 'out-stdlib-char'
data_dir = 'data/stdlib_char'  # python prepare/stdlib.py
max_time = 180  # wall-clock budget in seconds; the learning rate decays over it
max_iters = 100000  # the time budget stops us first
eval_interval = 250
eval_iters = 20
log_interval = 25

# small and wide enough for 2 cores in bf16
n_layer = 4
n_head = 4
n_embd = 256
block_size = 256
batch_size = 16

learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 50
