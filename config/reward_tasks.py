"""A reward model for the task suite: the SFT model's trunk plus a scalar head, on preference pairs.

    python prepare/preferences.py --from=out-sft-tasks && python reward.py config/reward_tasks.py
"""
init_from = 'out-sft-tasks'
data_dir = 'data/preferences'
out_dir = 'out-reward-tasks'
block_size = 64  # the SFT model's: conversations are at most 56 tokens
batch_size = 32  # pairs per batch: 64 conversations
max_iters = 400  # ~6 epochs of 2,000 pairs
eval_interval = 100
eval_iters = 8  # 8 x 32 = all 250 val pairs, about once
log_interval = 20
learning_rate = 3e-4  # the trunk is trained: gently, it already reads the questions
min_lr = 3e-5
warmup_iters = 20
weight_decay = 0.0
always_save_checkpoint = False  # keep the best val loss
