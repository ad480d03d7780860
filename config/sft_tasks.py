"""Chat SFT on the offline task suite (addition, subtraction, reversing, sorting, counting), char-level.

    python -m prepare.tasks && python train.py config/sft_tasks.py
    python -m chat.eval --out_dir=out-sft-tasks                      # exact-match accuracy per task
    python -m chat.talk --out_dir=out-sft-tasks --prompt="What is 48+75?"

Each batch row is one whole conversation, padded; the loss falls only on the assistant's answers
(python -m prepare.tasks --show=3 prints which tokens those are).
"""
out_dir = 'out-sft-tasks'
data_dir = 'data/tasks'
max_time = 540  # seconds of training: the whole run, evals and start-up included, stays under 10 minutes
max_iters = 100000  # the time budget stops us first
eval_interval = 500
eval_iters = 20
log_interval = 50

n_layer = 4
n_head = 4
n_embd = 128
block_size = 64  # the longest conversation is 56 tokens
batch_size = 32

pos = 'rope'
norm = 'rms'
mlp = 'relu2'
qk_norm = True
muon_lr = 0.02

learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 50
