"""
Generation that runs tools: the model writes a call, the tool answers, the model goes on.

    prompt  <|user|>What is 4812+7533?<|end|><|assistant|>
    round 1 the model writes   <|call|>calc(4812+7533)<|end|>          (generated: mask 1)
            the tool's turn    <|tool|>12345<|end|><|assistant|>         (given: mask 0)
    round 2 the model writes   12345<|end|>                             (generated: mask 1)

Each round is one batched generate_replies over the rows still going, so rows of a batch may take
different numbers of rounds; at temperature 0 each row gets what it gets alone. A row stops at a
reply with no call, after max_calls calls (a model that loops on calls), or when the context is full.
A call that does not parse, or names no tool, gets 'error: ...' as its result and the row goes on: the
model sees its mistake as a tool would report it. A call cut by max_new_tokens before its <|end|> is
never run (what came may not be what was meant: calc(4812+75 of calc(4812+7533)): the row ends there,
'length' (or 'stop' where another turn's token broke it off). In the messages, a call that is not run
is the text the model wrote, without the chat tokens. chat/eval, chat/talk and the RL rollouts use this;
the server instead returns the call to the client, which runs its own tools (OpenAI's protocol).

Decoding is speculative where it pays (seedgpt/speculative.py): a lone greedy row (chat.talk) drafts by prompt lookup,
since an answer often copies the question's operands or a tool's result; draft= in `sampling` chooses ('ngram',
a smaller model, None), for batches too. Prompt lookup gives the plain path's very traces, seed for seed.
"""
import json
from dataclasses import dataclass, field

from seedgpt.chat import chat_ids, knows_tools, parse_reply, stop_ids
from seedgpt.generate import generate_replies, reply_text
from seedgpt.tools import ToolError, call_text, run_tool


@dataclass
class Trace:
    """What one prompt became: ids after the prompt, and which of them the model wrote (1) or was given (0)."""
    ids: list = field(default_factory=list)
    mask: list = field(default_factory=list)
    calls: list = field(default_factory=list)  # (call text as the model wrote it, the result)
    malformed: int = 0  # calls that did not parse as name(arguments) of a known tool
    answer: str = ''  # the text of the last assistant turn: what the checker scores
    messages: list = field(default_factory=list)  # the same as chat messages: calls, results, the answer
    finish: str = 'stop'  # 'stop', 'calls' (max_calls reached) or 'length'

    @property
    def called(self):
        return len(self.calls) > 0


def tool_turns(tok, reply):
    """What answers a reply that calls: (ids of the tool turns, then <|assistant|>; the messages of the
    reply and the results; calls [(text, result)]; 1 if the call was malformed, else 0)."""
    special = chat_ids(tok)
    try:
        message = parse_reply(tok, reply)
        calls = [(call_text(c['function']['name'], c['function']['arguments']), run_tool(c['function']['name'],
                  json.loads(c['function']['arguments']))) for c in message['tool_calls']]
        malformed = 0
    except ToolError as e:  # the reply as text (<|call|> is a token, no character), the error as the result
        message = {'role': 'assistant', 'content': reply_text(tok, reply)}
        calls, malformed = [(message['content'], f"error: {e}")], 1
    ids = [i for _, result in calls for i in [special['tool']] + tok.encode(result) + [special['end']]]
    messages = [message] + [{'role': 'tool', 'content': r} for _, r in calls]
    return ids + [special['assistant']], messages, calls, malformed


def generate_with_tools(model, tok, prompts, max_new_tokens, max_calls=3, **sampling):
    """A Trace per prompt (lists of ids, render_prompt's): generate_replies in rounds, running each call.

    max_new_tokens bounds each round's reply; the whole trace stays within the model's block_size."""
    if not knows_tools(tok):  # a model from before tools: one round, as generate_replies
        texts = [(r, reply_text(tok, r)) for r in generate_replies(model, tok, prompts, max_new_tokens, **sampling)]
        return [Trace(ids=r, mask=[1] * len(r), answer=a, messages=[{'role': 'assistant', 'content': a}])
                for r, a in texts]
    call_id, end_id, block = chat_ids(tok)['call'], chat_ids(tok)['end'], model.config.block_size
    traces = [Trace() for _ in prompts]
    active = list(range(len(prompts)))
    while active:
        contexts = [prompts[b] + traces[b].ids for b in active]
        replies = generate_replies(model, tok, contexts, max_new_tokens, **sampling)
        going = []
        for b, context, reply in zip(active, contexts, replies):
            t = traces[b]
            t.ids += reply
            t.mask += [1] * len(reply)
            if call_id not in reply:
                t.answer = parse_reply(tok, reply)['content']
                t.messages.append({'role': 'assistant', 'content': t.answer})
                continue
            if reply[-1] != end_id:  # the call was cut, or broken off by another turn's token: never run it
                t.answer = reply_text(tok, reply)
                t.messages.append({'role': 'assistant', 'content': t.answer})
                t.finish = 'stop' if reply[-1] in stop_ids(tok) else 'length'
                continue
            if len(t.calls) >= max_calls:
                t.finish = 'calls'
                continue
            turn, messages, calls, malformed = tool_turns(tok, reply)
            t.messages += messages
            t.calls += calls
            t.malformed += malformed
            # room for the tool's turn and a reply of a few tokens; else the row ends here
            if len(context) + len(reply) + len(turn) + 2 > block:
                t.finish = 'length'
                continue
            t.ids += turn
            t.mask += [0] * len(turn)
            going.append(b)
        active = going
    return traces
