"""Tiny Shakespeare char-level on a 2-core CPU in about 95 seconds: the best model we found for that budget.

    python -m prepare.shakespeare && python train.py config/shakespeare_char_cpu.py

nanoGPT's CPU recipe (4 layers, 128 wide, block 64, fp32) reaches val loss 1.886 in the same time;
docs/benchmarks.md has the side-by-side runs, on CPUs with and without bf16, and the gain of each switch.
"""
out_dir = 'out-shakespeare-char-cpu'
data_dir = 'data/shakespeare_char'
max_time = 88  # seconds of training, evals included; start-up and the last eval bring it to ~95 s
max_iters = 100000  # the time budget stops us first, and the learning rate decays over it
eval_interval = 250
eval_iters = 50
log_interval = 25
always_save_checkpoint = False

# wider than nanoGPT's CPU model where bf16 matmuls are fast (docs/benchmarks.md)...
n_layer = 4
n_head = 4
n_embd = 256
block_size = 128
batch_size = 16
# ...and nanoGPT's own size where only fp32 is fast: a 256-wide model there gets too few iterations in the
# budget to learn (docs/benchmarks.md has the counts)
slow_tflops = 0.6
slow = {'n_embd': 128, 'block_size': 64, 'batch_size': 12}

# each switch is a measured gain at equal steps (docs/benchmarks.md)
pos = 'rope'
norm = 'rms'
mlp = 'relu2'
qk_norm = True
muon_lr = 0.02  # Muon for the hidden matrices; AdamW below for embeddings and gains

learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 30
