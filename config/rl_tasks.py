"""RL on the task suite from the SFT model: PPO by default, --algo=grpo, and --reward=model.

    python -m feedback.rl config/rl_tasks.py
    python -m feedback.rl config/rl_tasks.py --algo=grpo
    python -m feedback.rl config/rl_tasks.py --reward=model --reward_dir=out-reward-tasks
    python -m chat.eval --out_dir=out-rl-tasks

Only feedback/rl.py's own settings (python -m feedback.rl --help); batch sizes, LoRA and the like are train.py's.
"""
init_from = 'out-sft-tasks'
ref_dir = 'out-sft-tasks'  # stays the reference when the run resumes
data_dir = 'data/tasks'
out_dir = 'out-rl-tasks'
max_iters = 100000
max_time = 600  # 10 minutes of RL, val evaluations included; the final test evaluation comes after
eval_interval = 50
eval_examples = 500  # all 500 val questions at each evaluation; the test split's 1,000 are answered once, at the end
log_interval = 5
prompts_per_step = 32
group_size = 8  # 256 answers per step
max_new_tokens = 16  # the longest right answer is 6 tokens with its <|end|>
learning_rate = 1e-4  # AdamW on every weight
min_lr = 1e-5
warmup_iters = 10
weight_decay = 0.0
kl_coef = 0.05
kl_estimator = 'auto'  # k1 in PPO's reward, k3 in GRPO's loss (seedgpt/policy.py says why)
