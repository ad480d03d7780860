"""GPT-2 124M on a GPT-2 BPE corpus, on 8 GPUs: about 300B tokens, as OpenAI's GPT-2 saw.

    python -m prepare.corpus /path/to/openwebtext/ --name=owt   # any large BPE corpus
    torchrun --standalone --nproc_per_node=8 train.py config/gpt2_124m.py
"""
out_dir = 'out-gpt2-124m'
data_dir = 'data/owt'
eval_interval = 1000
eval_iters = 200
log_interval = 10

# GPT-2 small exactly
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
bias = True
dropout = 0.0

# 12 sequences x 1024 tokens x 40 micro-batches = ~0.5M tokens per iteration, whatever the GPU count
batch_size = 12
grad_accum = 40  # a multiple of the process count: 5 per GPU on 8 GPUs
max_iters = 600000
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 2000
weight_decay = 0.1
compile = True
