"""Fine-tune the SFT chat model to 3-digit arithmetic, every weight trained: the reference for LoRA's run,
config/finetune_tasks_lora.py, on the same data with the same budget.

    python -m prepare.tasks --digits=3 --out_dir=data/tasks3   # the same suite with numbers up to 999
    python train.py config/finetune_tasks_full.py              # from out-sft-tasks (train.py config/sft_tasks.py)
    python train.py config/finetune_tasks_lora.py
    python -m chat.eval --out_dir=out-tasks3-full --data_dir=data/tasks3

Same tokenizer (every printable character), so the model reads the new data as is; the loss is on the
answers only, as in SFT.
"""
init_from = 'out-sft-tasks'
data_dir = 'data/tasks3'
out_dir = 'out-tasks3-full'
max_iters = 600
eval_interval = 100
eval_iters = 20
log_interval = 50
always_save_checkpoint = False  # keep the best val loss

block_size = 64
batch_size = 32

learning_rate = 1e-3  # AdamW on all 0.8M weights
min_lr = 1e-4
warmup_iters = 20
weight_decay = 0.0
