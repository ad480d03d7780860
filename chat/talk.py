"""
Talk to a chat model (one fine-tuned on chat data, e.g. prepare/tasks.py's suite) in the terminal.

    python -m chat.talk --out_dir=out-sft-tasks                               # multi-turn, answers streamed
    python -m chat.talk --out_dir=out-sft-tasks --prompt="What is 48+75?"     # one turn: only the answer on stdout
    python -m chat.talk --out_dir=out-sft-tasks --system="Be brief." --temperature=0.8
    python -m chat.talk --out_dir=out-sft-tools                               # calls its four tools as it answers

In the chat, /reset starts a new conversation and Ctrl-D (end of input) leaves; Ctrl-C stops an
answer being written. When the conversation and room for a reply outgrow the model's context, the oldest
turns are dropped.
"""
if not __package__:  # run as a file, the repo root is not on the path: say how to run it
    raise SystemExit("error: run it from the repo root as a module: python -m chat.talk ...")

import sys
from dataclasses import dataclass

import torch

from seedgpt.agent import generate_with_tools
from seedgpt.chat import chat_ids, knows_tools, render_prompt
from seedgpt.checkpoint import load_model
from seedgpt.config import load_config
from seedgpt.generate import stream_reply
from seedgpt.runtime import setup_runtime


@dataclass
class Config:
    out_dir: str = 'out'  # the training run's directory, holding ckpt.pt
    prompt: str = ''  # answer this one question and exit, printing only the answer
    system: str = ''  # a system message opening every conversation
    max_new_tokens: int = 256  # an answer stops here if it has not ended itself
    temperature: float = 0.0  # 0 is greedy: exact tasks want the likeliest answer
    top_k: int = 0  # keep only the k likeliest tokens; 0 keeps all
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches top_p; 1.0 keeps all
    max_calls: int = 3  # a model that knows tools: at most this many tool calls per answer
    seed: int = 1337
    device: str = 'auto'  # 'auto', 'cpu', 'cuda', 'mps'
    dtype: str = 'auto'  # weights in 'auto' (bf16 where fast), 'float32', 'bfloat16', 'float16'


def fit(tok, messages, block_size, room=0):
    """Drop the oldest turns, never the system message nor the last one, until the prompt fits the context
    with `room` tokens to spare for the reply."""
    first = 1 if messages and messages[0]['role'] == 'system' else 0
    dropped = False
    while len(render_prompt(tok, messages)) + room > block_size and len(messages) - first > 1:
        del messages[first]
        while len(messages) - first > 1 and messages[first]['role'] in ('assistant', 'tool'):
            del messages[first]  # a reply without its question would only confuse
        dropped = True
    return dropped


def reply_room(model, cfg):
    """Tokens kept free for a reply: max_new_tokens, at most a third of the context (a chat model of the tool
    suite has room for its longest conversation and a third more: config/sft_tools.py)."""
    return min(cfg.max_new_tokens, model.config.block_size // 3)


def reply(model, tok, messages, cfg, g):
    """Stream the model's answer to stdout and return it as messages; Ctrl-C stops it where it is. A model
    that knows tools calls them (seedgpt/agent.py): each call and its result are shown, dimmed, before the
    answer, and they are kept in the conversation as the model saw them."""
    if knows_tools(tok):
        trace = generate_with_tools(model, tok, [render_prompt(tok, messages)], cfg.max_new_tokens,
                                    max_calls=cfg.max_calls, temperature=cfg.temperature, top_k=cfg.top_k,
                                    top_p=cfg.top_p, generator=g)[0]
        for text, result in trace.calls:
            sys.stderr.write(f"\033[2m[{text} -> {result}]\033[0m\n")
        print(trace.answer if trace.finish == 'stop' else f"{trace.answer}(stopped: {trace.finish})", flush=True)
        return trace.messages
    pieces = []
    try:
        for piece in stream_reply(model, tok, messages, cfg.max_new_tokens, temperature=cfg.temperature,
                                  top_k=cfg.top_k, top_p=cfg.top_p, generator=g):
            sys.stdout.write(piece)
            sys.stdout.flush()
            pieces.append(piece)
    except KeyboardInterrupt:
        pass
    sys.stdout.write('\n')
    sys.stdout.flush()
    return [{'role': 'assistant', 'content': ''.join(pieces)}]


def main(cfg):
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    model, tok = load_model(cfg.out_dir, rt.device, rt.ptdtype)
    chat_ids(tok)  # a base model stops here, with a one-line error
    g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    start = [{'role': 'system', 'content': cfg.system}] if cfg.system else []
    if cfg.prompt:
        messages = start + [{'role': 'user', 'content': cfg.prompt}]
        try:
            render_prompt(tok, messages)
        except ValueError as e:
            raise SystemExit(f"error: {e}; change the prompt")
        fit(tok, messages, model.config.block_size, reply_room(model, cfg))
        reply(model, tok, messages, cfg, g)
        return

    try:
        import readline  # noqa: F401  line editing and history for input(), where the platform has it
    except ImportError:
        pass
    sys.stderr.write(f"chatting with {cfg.out_dir}: /reset starts over, Ctrl-D leaves\n")
    messages = list(start)
    while True:
        try:
            line = input('> ')
        except (EOFError, KeyboardInterrupt):
            sys.stdout.write('\n')
            break
        if not line.strip():
            continue
        if line.strip() == '/reset':
            messages = list(start)
            sys.stderr.write("(a new conversation)\n")
            continue
        messages.append({'role': 'user', 'content': line})
        try:
            render_prompt(tok, messages)
        except ValueError as e:
            messages.pop()
            sys.stderr.write(f"error: {e}; say it another way\n")
            continue
        if fit(tok, messages, model.config.block_size, reply_room(model, cfg)):
            sys.stderr.write("(older turns dropped to fit the model's context)\n")
        messages += reply(model, tok, messages, cfg, g)


if __name__ == '__main__':
    main(load_config(Config))
