"""DPO on the task suite's preference pairs, from the SFT model.

    python -m prepare.preferences --from_dir=out-sft-tasks && python -m feedback.dpo config/dpo_tasks.py
    python -m chat.eval --out_dir=out-dpo-tasks
"""
init_from = 'out-sft-tasks'
ref_dir = 'out-sft-tasks'  # stays the reference when the run resumes
data_dir = 'data/preferences'
out_dir = 'out-dpo-tasks'
beta = 0.1
sft_coef = 1.0  # plus the chosen answers' NLL: without it DPO taught this model to skip <|end|> (docs/rl.md)
block_size = 64
batch_size = 16  # pairs per batch: 32 conversations, each through the policy and the reference
max_iters = 300
eval_interval = 100
eval_iters = 16  # all 250 val pairs, about once
log_interval = 20
learning_rate = 1e-4  # small steps: DPO drifts off fast
min_lr = 1e-5
warmup_iters = 20
weight_decay = 0.0
