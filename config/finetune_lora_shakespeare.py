"""LoRA fine-tune of GPT-2 (124M) on tiny Shakespeare: the same run as finetune_shakespeare.py, but only
low-rank adapters on the attention and MLP projections train (811,008 of 124M parameters, so the optimizer
state is 0.7% of a full fine-tune's). The checkpoint holds merged weights: sample.py and export/hf.py read it as is.

    python -m prepare.shakespeare --tokenizer=gpt2
    python train.py config/finetune_lora_shakespeare.py
    python sample.py --out_dir=out-shakespeare-lora

Not yet measured on GPT-2 here (no weights on the test machine): the settings below are a starting point.
"""
out_dir = 'out-shakespeare-lora'
data_dir = 'data/shakespeare_gpt2'
init_from = 'gpt2'
eval_interval = 5
eval_iters = 40
log_interval = 1
always_save_checkpoint = False  # keep the best val loss...
patience = 4  # ...and stop once it has not improved for 4 evaluations

block_size = 512
dropout = 0.1

batch_size = 1
grad_accum = 32
max_iters = 100
lora_rank = 8
lora_alpha = 16.0  # the update is scaled by alpha / rank = 2
lora_dropout = 0.05
lora_targets = 'c_attn,c_proj'  # attention's q, k, v and output, and the MLP's output
learning_rate = 1e-3  # adapters start at zero: they need far larger steps than a full fine-tune's 3e-5
min_lr = 1e-4
warmup_iters = 10
weight_decay = 0.0
