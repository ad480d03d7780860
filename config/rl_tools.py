"""RL with the tools in the loop, from the tool-using SFT model: the rollouts run the tools
(seedgpt/agent.py) on the suite people type (the last answer of each conversation, the turns before it
given), the checker scores the final answer, and the tools' results stay out of the loss.

    python -m feedback.rl config/rl_tools.py                 # PPO
    python -m feedback.rl config/rl_tools.py --algo=grpo
    python -m chat.eval --out_dir=out-rl-tools

Only feedback/rl.py's own settings (python -m feedback.rl --help).
"""
init_from = 'out-sft-tools'
ref_dir = 'out-sft-tools'  # stays the reference when the run resumes
data_dir = 'data/tasks-tools'
out_dir = 'out-rl-tools'
max_iters = 100000
max_time = 600  # 10 minutes of RL, val evaluations included; the final test evaluation comes after
eval_interval = 50
eval_examples = 200  # val conversations at each evaluation, each answer scored; test's all, once, at the end
log_interval = 5
prompts_per_step = 32
group_size = 8  # 256 rollouts per step
max_new_tokens = 96  # per round: room for the longest reply, a chat line (seedgpt/tasks.py HELLO)
max_calls = 2  # one call answers every question of the suite; a second is a retry, a third a loop
learning_rate = 1e-4  # AdamW on every weight
min_lr = 1e-5
warmup_iters = 10
weight_decay = 0.0
kl_coef = 0.05
kl_estimator = 'auto'  # k1 in PPO's reward, k3 in GRPO's loss (seedgpt/policy.py says why)
