"""RL on the task suite from the SFT model: PPO by default, --algo=grpo, and --reward=model.

    python rl.py config/rl_tasks.py
    python rl.py config/rl_tasks.py --algo=grpo
    python rl.py config/rl_tasks.py --reward=model --reward_dir=out-reward-tasks
    python eval.py --out_dir=out-rl-tasks
"""
init_from = 'out-sft-tasks'
ref_dir = 'out-sft-tasks'  # stays the reference when the run resumes
data_dir = 'data/tasks'
out_dir = 'out-rl-tasks'
max_iters = 100000
max_time = 840  # 14 minutes of RL, evaluations included: under 15 with start-up and the final eval
eval_interval = 25
eval_examples = 500  # 100 test questions per task at each evaluation; eval.py answers all 1,000 at the end
log_interval = 5
prompts_per_step = 16
group_size = 8  # 128 answers per step
max_new_tokens = 16  # the longest right answer is 6 tokens with its <|end|>
learning_rate = 3e-5  # AdamW on every weight: small steps, the SFT model is already close
min_lr = 3e-6
warmup_iters = 10
weight_decay = 0.0
kl_coef = 0.05
