"""Chat SFT on the task suite with tools, what people type: the model learns to call calc for arithmetic
(operands of 1 to 6 digits, expressions), count for counting letters, reverse and sort for words, to
answer a greeting or a question outside the suite with one honest line, and to follow up on an answer.

    python -m prepare.tasks --tools --digits=6 && python train.py config/sft_tools.py
    python -m chat.eval --out_dir=out-sft-tools                  # test and gen side by side, per task and digits
    python -m chat.talk --out_dir=out-sft-tools --prompt="What is 2+2?"

The same model size and time budget as config/sft_tasks.py. The loss covers the calls and the answers,
never the tools' results (python -m prepare.tasks --tools --show=3 colours the parts). Measured with bf16
and in fp32, and what the longer context costs: docs/tools.md.
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
block_size = 384  # the longest conversation (seedgpt/tasks.py CONTEXT, 256) and room to answer after it;
# on a CPU a step costs its batch's longest conversation, not this (docs/tools.md#context)
batch_size = 8  # conversations of up to 4 turns: few rows, many steps (docs/tools.md#results)

pos = 'rope'
norm = 'rms'
mlp = 'swiglu'  # as config/stdlib_char.py: it beat relu2 at equal time, and the model exports to Llama/Qwen3
qk_norm = True
muon_lr = 0.04

learning_rate = 6e-3  # twice config/sft_tasks.py's: a few steps must go far (docs/tools.md#results)
# a hundredth of the peak: the last steps must settle the weights; at a tenth, a run ended wherever its last
# batches had pushed it, and which answers broke changed from run to run (docs/tools.md#the-learning-rates-floor)
min_lr = 6e-5
warmup_iters = 50
