"""A reward model for the task suite: the SFT model's trunk plus a scalar head, on preference pairs.

    python -m prepare.preferences --from_dir=out-sft-tasks && python -m feedback.reward config/reward_tasks.py
"""
init_from = 'out-sft-tasks'
data_dir = 'data/preferences'
out_dir = 'out-reward-tasks'
block_size = 64  # the SFT model's: conversations are at most 56 tokens
batch_size = 32  # pairs per batch: 64 conversations
max_iters = 800  # ~3 epochs of 8,000 pairs
eval_interval = 50
eval_iters = 16  # 16 x 32 draws from the 250 val pairs
patience = 4  # it overfits: stop after 4 evaluations without a better val loss
log_interval = 20
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 20
weight_decay = 0.0
always_save_checkpoint = False  # keep the best val loss
