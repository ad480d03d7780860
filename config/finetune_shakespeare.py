"""Fine-tune GPT-2 (124M) on tiny Shakespeare, GPT-2 BPE, as nanoGPT's finetune_shakespeare does.

    python -m prepare.shakespeare --tokenizer=gpt2
    python train.py config/finetune_shakespeare.py                             # GPT-2 from the local HF cache
    python train.py config/finetune_shakespeare.py --hf_dir=path/to/gpt2       # ... or from a local directory
    python train.py config/finetune_shakespeare.py --init_from=out-mine        # ... or from a seedgpt checkpoint

The weights are never downloaded here: without a local copy the run stops and says how to get one
(on a machine with internet: `hf download openai-community/gpt2 --local-dir gpt2`). A GPU job; on a
CPU, add --init_from=gpt2 --max_iters=20 to watch the loss move.
"""
out_dir = 'out-shakespeare-ft'
data_dir = 'data/shakespeare_gpt2'
init_from = 'gpt2'  # the model's shape comes from the weights; only dropout and a shorter block_size apply
eval_interval = 5
eval_iters = 40
log_interval = 1
always_save_checkpoint = False  # keep the best val loss: a small corpus overfits within a few hundred steps

block_size = 512  # cropped from GPT-2's 1024: shorter blocks, more of them per batch
dropout = 0.1

# 1 x 32 x 512 = 16,384 tokens per iteration; tiny Shakespeare has 301,966 train tokens in GPT-2 BPE
batch_size = 1
grad_accum = 32
max_iters = 20
learning_rate = 3e-5  # small and constant: nudge the pretrained weights, do not overwrite them
min_lr = 3e-5
warmup_iters = 0
weight_decay = 0.0
