"""
seedgpt's library: the pieces that the core scripts (model.py, train.py, sample.py) and the stage
scripts (prepare/, feedback/, chat/, serve/, compress/, explain/, export/, bench/) share, one home each.

    config      settings: a dataclass of defaults, config files, --key=value and --help
    runtime     device, dtype, autocast, DDP set-up, matmul peaks
    log         log lines, log.jsonl and wandb; running means of a step's stats
    checkpoint  atomic saves, loads, where a run starts, model building (FSDP too), optimizer state
    tokenizer   char-level, GPT-2 BPE (offline) and BPE trained on the corpus, and the loader every script uses
    corpus      text files to token files, streamed: the pipeline behind every prepare/ script
    data        token files and the batches train.py draws: crops, conversations, preference pairs
    chat        the chat format: one rendering, its loss mask, and parsing it back
    generate    sampling a token, left padding, replies through the KV cache
    optim       the learning-rate schedule, Muon, and one optimizer step (scaler, clipping, masks)
    lora        low-rank adapters
    int8        int8 weight-only Linears
    prune       pruning masks
    objectives  losses other than the next token's: distillation, Bradley-Terry, DPO
    policy      the policy-gradient math of PPO and GRPO: KL, GAE, the clipped objective
    tasks       the offline task suite: problems, the checker, the evaluator
    hf          Hugging Face models in and out: GPT-2, Llama and Qwen3 weights, and the tokenizer files
    engine      the serving engine: continuous batching over a pool of KV slots, with a prefix cache
    api         the OpenAI request format: parsing and checking requests for serve/server.py
    plot        loss curves as PNG

Nothing here imports a script, and nothing here is installed: run every command from the repo root.
"""
