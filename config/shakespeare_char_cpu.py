"""Tiny Shakespeare char-level on a 2-core CPU in 110 seconds: the best model we found for that budget.

    python prepare/shakespeare.py && python train.py config/shakespeare_char_cpu.py

nanoGPT's CPU recipe (4 layers, 128 wide, block 64, fp32) reaches val loss 1.886 in the same time;
docs/benchmarks.md has the side-by-side run and the gain of each switch below.
"""
out_dir = 'out-shakespeare-char-cpu'
data_dir = 'data/shakespeare_char'
max_time = 100  # seconds of training, evals included; start-up and the last eval bring it to ~110 s
max_iters = 100000  # the time budget stops us first, and the learning rate decays over it
eval_interval = 250
eval_iters = 50
log_interval = 25
always_save_checkpoint = False

# wider than nanoGPT's CPU model: bf16 matmuls on this CPU run ~4x the fp32 rate, so width is cheap
n_layer = 4
n_head = 4
n_embd = 256
block_size = 128
batch_size = 16

# each switch is a measured gain at equal steps (docs/benchmarks.md)
pos = 'rope'
norm = 'rms'
mlp = 'relu2'
qk_norm = True
muon_lr = 0.02  # Muon for the hidden matrices; AdamW below for embeddings and gains

learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 30
