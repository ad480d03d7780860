"""The same fine-tune as config/finetune_tasks_full.py (3-digit arithmetic from the SFT model, same data,
same iterations and batches), with LoRA: low-rank adapters on every Linear of the blocks, the base weights fixed.

    python -m prepare.tasks --digits=3 --out_dir=data/tasks3
    python train.py config/finetune_tasks_full.py && python train.py config/finetune_tasks_lora.py

The checkpoint holds merged weights: chat/eval.py, chat/talk.py, sample.py and export/hf.py read it as is.
"""
init_from = 'out-sft-tasks'
data_dir = 'data/tasks3'
out_dir = 'out-tasks3-lora'
max_iters = 600
eval_interval = 100
eval_iters = 20
log_interval = 50
always_save_checkpoint = False

block_size = 64
batch_size = 32

lora_rank = 16
lora_alpha = 32.0  # the update is scaled by alpha / rank = 2
lora_targets = 'c_attn,c_proj,c_fc'  # every Linear of every block: attention's and the MLP's
learning_rate = 5e-3  # the adapters start at zero (B = 0): larger steps than a full fine-tune's
min_lr = 5e-4
warmup_iters = 20
weight_decay = 0.0
