"""A smaller student learns from the stdlib demo's logits (distillation): half the teacher's layers and width.

    python train.py config/stdlib_char.py && python train.py config/distill_stdlib.py
    python train.py config/distill_stdlib.py --teacher_dir= --out_dir=out-stdlib-small   # the same student, no teacher

The teacher is out-stdlib-char, 4 layers of 128 on a CPU without fast bf16 (stdlib_char.py's `slow` sizing).
"""
out_dir = 'out-stdlib-distill'
data_dir = 'data/stdlib_char'  # the teacher's data: the same characters, so the same logits' meaning
teacher_dir = 'out-stdlib-char'
distill_temperature = 2.0  # softer than the teacher's own distribution: the runner-up characters carry signal
distill_alpha = 0.5  # half KL to the teacher, half cross-entropy to the data
max_time = 120  # seconds; the teacher's forward pass is part of each step's cost
max_iters = 100000  # the time budget stops us first
eval_interval = 250
eval_iters = 20
log_interval = 25

# half of the teacher's 4 x 128: a quarter of its block weights
n_layer = 2
n_head = 4
n_embd = 64
block_size = 128  # the teacher's context
batch_size = 16

# the teacher's switches (docs/benchmarks.md)
pos = 'rope'
norm = 'rms'
mlp = 'relu2'
qk_norm = True
muon_lr = 0.02

learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 30
