"""Chat SFT on the task suite with tools: the model learns to call calc for arithmetic of 2 to 6 digits
(add, sub, mul) and count for counting letters, and to answer reversing and sorting itself.

    python -m prepare.tasks --tools --digits=6 && python train.py config/sft_tools.py
    python -m chat.eval --out_dir=out-sft-tools                  # accuracy per task and digits, tool use
    python -m chat.talk --out_dir=out-sft-tools --prompt="What is 48213*91275?"

The same model and time budget as config/sft_tasks.py; longer conversations (a call, the tool's
result, the answer), so a longer block. The loss covers the calls and the answers, never the results
(python -m prepare.tasks --tools --show=3 colours the parts).
"""
out_dir = 'out-sft-tools'
data_dir = 'data/tasks-tools'
max_time = 540  # seconds of training, start-up and evals included: no longer than config/sft_tasks.py
max_iters = 100000  # the time budget stops us first
eval_interval = 500
eval_iters = 20
log_interval = 50

n_layer = 4
n_head = 4
n_embd = 128
block_size = 96  # the longest conversation at --digits=6 is 93 tokens
batch_size = 32

pos = 'rope'
norm = 'rms'
mlp = 'swiglu'  # as config/stdlib_char.py: it beat relu2 at equal time, and the model exports to Llama/Qwen3
qk_norm = True
muon_lr = 0.02

learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 50
