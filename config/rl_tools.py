"""RL with the tools in the loop, from the tool-using SFT model: the rollouts run calc and count
(seedgpt/agent.py), the checker scores the final answer, and the tools' results stay out of the loss.

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
eval_examples = 600  # all 600 val questions at each evaluation; the test split's 1,200 are answered once, at the end
log_interval = 5
prompts_per_step = 32
group_size = 8  # 256 rollouts per step
max_new_tokens = 32  # per round: the longest call, calc(123456*654321), is 21 tokens with <|call|> and <|end|>
max_calls = 2  # one call answers every question of the suite; a second is a retry, a third a loop
learning_rate = 1e-4  # AdamW on every weight
min_lr = 1e-5
warmup_iters = 10
weight_decay = 0.0
kl_coef = 0.05
kl_estimator = 'auto'  # k1 in PPO's reward, k3 in GRPO's loss (seedgpt/policy.py says why)
