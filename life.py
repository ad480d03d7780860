r"""
A model's whole life in one command: the stages the primers tell, each run by its own script, and a report
card that puts every stage side by side.

    python life.py                                 # about 30 minutes on 2 CPU cores -> out-life/report.md
    python life.py --preset=tiny --out_dir=out-tiny  # every stage in a minute or two (the tests run it)
    python life.py --redo=rl                       # run one stage again, and every stage after it
    python life.py --until=sft                     # stop after a stage (the report covers what is done)
    python life.py --help                          # every setting

  prepare   the task suite with tools (the chat data), and a pretraining corpus on the suite's characters
  pretrain  a base model on raw text (the Python standard library): next-token prediction
  sft       supervised fine-tuning of the base on the suite's conversations: it learns to answer and to call tools
  pairs     preference pairs: the SFT model's own answers, judged right or wrong by the suite's checker
  reward    a reward model: the SFT model with a scalar head, trained to score the chosen answer higher
  rl        PPO from the SFT model on the learned reward, with a KL leash to the SFT model
  dpo       DPO from the SFT model on the same pairs: preference learning without a reward model
  int8      the RL model's block weights stored as int8
  pruned    the RL model with its smallest weights zeroed
  student   a smaller model distilled from the RL model's next-token distributions
  export    the RL model as a Hugging Face directory (Llama/Qwen3), which transformers loads
  serve     the RL model behind the OpenAI-style server: one chat request that calls a tool
Every stage is a command of its own (python -m ...), printed before it runs, so any stage can be rerun by
hand. A stage that is done is not redone: a killed run, started again, goes on where it stopped
(out_dir/life.json records what is done). Then out_dir/report.md: per stage its time, parameters, size on
disk, val bits per byte, accuracy per task on the suite's test and gen splits, and the same prompts
answered, with pictures in out_dir/report/.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from seedgpt.checkpoint import load_checkpoint
from seedgpt.config import load_config
from seedgpt.dataset import stdlib_files
from seedgpt.log import fmt_time
from seedgpt.report import ask_all, evaluate, serve_check, write_report

# each preset: how long each stage trains, the suite's and the pairs' sizes, the student's shape; 'model'
# and 'loop' override config/sft_tools.py's model shape and loop settings (the tiny preset's small and quick
# ones). The laptop preset's budgets are seconds (the time left is their sum); the tiny preset's iterations.
PRESETS = {
    'laptop': dict(seconds=dict(pretrain=240, sft=300, reward=90, rl=240, dpo=90, student=150),
                   suite=['--n_train=4000'], corpus_mb=0, pairs=['--n_train=2000', '--n_val=200'],
                   student=['--n_layer=2', '--n_embd=96'], prune=0.3, eval_examples=0, rl=[], model=[], loop=[]),
    'tiny': dict(iters=dict(pretrain=30, sft=40, reward=10, rl=2, dpo=10, student=20),
                 suite=['--n_train=100', '--n_val=4', '--n_test=4', '--n_gen=4'], corpus_mb=1,
                 pairs=['--n_train=48', '--n_val=16', '--samples=2'], student=['--n_layer=1', '--n_embd=32'],
                 prune=0.3, eval_examples=8,
                 rl=['--prompts_per_step=4', '--group_size=4', '--eval_interval=2', '--log_interval=1'],
                 model=['--n_layer=2', '--n_embd=64', '--n_head=2'],
                 loop=['--batch_size=8', '--eval_interval=20', '--eval_iters=2', '--log_interval=5']),
}
STAGES = ('prepare', 'pretrain', 'sft', 'scratch', 'pairs', 'reward', 'rl', 'dpo', 'int8', 'pruned', 'student',
          'export', 'serve')
MODELS = ('pretrain', 'sft', 'scratch', 'reward', 'rl', 'dpo', 'int8', 'pruned', 'student')  # stages that make a model
PROMPTS = 'What is 2+2?|Reverse the word planet.|Hello! Who are you?'


@dataclass
class Config:
    out_dir: str = 'out-life'  # every stage's data, checkpoints, life.json and report.md go here
    preset: str = 'laptop'  # 'laptop' (about 30 minutes on 2 CPU cores) or 'tiny' (a minute or two, for tests)
    redo: str = ''  # a stage to run again, with every stage after it ('' runs only what is not done)
    until: str = ''  # the last stage to run this time ('' runs to the end); the report covers what is done
    compare: bool = False  # also SFT from scratch for pretrain's and SFT's time together: did pretraining help?
    prompts: str = PROMPTS  # the questions every stage answers in the report, separated by |
    device: str = 'auto'  # every stage's device: 'auto', 'cpu', 'cuda', 'mps'
    dtype: str = 'auto'  # every stage's dtype: 'auto', 'float32', 'bfloat16', 'float16'


def commands(stage, cfg, p):
    """The command lines of a stage: a list of argv lists, each run from the repo root."""
    out = lambda *parts: os.path.join(cfg.out_dir, *parts)  # noqa: E731
    system = [f'--device={cfg.device}', f'--dtype={cfg.dtype}']
    t = (f"--max_time={p['seconds'].get(stage)}" if 'seconds' in p
         else f"--max_iters={p['iters'].get(stage)}" if stage in p['iters'] else '--')
    # the base and SFT models share config/sft_tools.py's shape and optimizer: SFT fine-tunes the base
    trained = ['train.py', 'config/sft_tools.py', *system, *p['model'], *p['loop']]
    suite, base_data, pairs = out('data', 'tasks'), out('data', 'base'), out('data', 'pairs')
    # SFT from scratch gets what pretraining and SFT took together
    both = (f"--max_time={p['seconds']['pretrain'] + p['seconds']['sft']}" if 'seconds' in p
            else f"--max_iters={p['iters']['pretrain'] + p['iters']['sft']}")
    # the stages after SFT read its conversations at its context length
    block = f'--block_size={block_size(out("sft"))}' if stage in ('reward', 'dpo', 'student') else '--'
    return {
        'prepare': [['-m', 'prepare.tasks', '--tools', '--digits=6', f'--out_dir={suite}', *p['suite']],
                    corpus_command(cfg, p, suite, base_data)],
        'pretrain': [[*trained, f'--data_dir={base_data}', f'--out_dir={out("pretrain")}', t]],
        'sft': [[*trained, f'--init_from={out("pretrain")}', f'--data_dir={suite}', f'--out_dir={out("sft")}', t]],
        'scratch': [[*trained, f'--data_dir={suite}', f'--out_dir={out("scratch")}', both]],
        'pairs': [['-m', 'prepare.preferences', f'--from_dir={out("sft")}', f'--out_dir={pairs}',
                   f'--device={cfg.device}', *p['pairs']]],
        'reward': [['-m', 'feedback.reward', 'config/reward_tasks.py', *system, f'--init_from={out("sft")}',
                    f'--data_dir={pairs}', f'--out_dir={out("reward")}', block, '--max_iters=100000', t,
                    *p['loop']]],
        'rl': [['-m', 'feedback.rl', 'config/rl_tools.py', *system, f'--init_from={out("sft")}',
                f'--ref_dir={out("sft")}', '--reward=model', f'--reward_dir={out("reward")}', f'--data_dir={suite}',
                f'--out_dir={out("rl")}', t, f'--eval_examples={p["eval_examples"] or 200}', *p['rl']]],
        'dpo': [['-m', 'feedback.dpo', 'config/dpo_tasks.py', *system, f'--init_from={out("sft")}',
                 f'--ref_dir={out("sft")}', f'--data_dir={pairs}', f'--out_dir={out("dpo")}', block,
                 '--max_iters=100000', t, *p['loop']]],
        'int8': [['-m', 'compress.shrink', f'--out_dir={out("rl")}', '--int8', f'--to={out("int8")}']],
        'pruned': [['-m', 'compress.shrink', f'--out_dir={out("rl")}', f'--prune={p["prune"]}',
                    f'--to={out("pruned")}']],
        'student': [[*trained, f'--teacher_dir={out("rl")}', f'--data_dir={suite}', f'--out_dir={out("student")}',
                     block, t, *p['student']]],
        'export': [['-m', 'export.hf', f'--out_dir={out("rl")}', f'--hf_dir={out("hf")}', '--force']],
        'serve': [],  # serve_check below, in this process
    }[stage]


def corpus_command(cfg, p, suite, base_data):
    """The base's pretraining corpus: the Python standard library (on every machine, nothing to download),
    written with the suite's characters, so that every id means the same to the base and to the SFT model."""
    same = ['--tokenizer=char', f'--chars_from={suite}', f'--out_dir={base_data}']
    if not p['corpus_mb']:
        return ['-m', 'prepare.stdlib', *same]
    # a slice of it: the tiny preset's base reads a megabyte, not all of it
    stdlib = sample_stdlib(os.path.join(cfg.out_dir, 'data', 'stdlib'), p['corpus_mb'])
    return ['-m', 'prepare.corpus', stdlib, '--name=base', '--block_size=64', *same]


def block_size(out_dir):
    """A checkpoint's context: the stages after SFT keep the SFT model's."""
    return load_checkpoint(out_dir)['model_args']['block_size']


def sample_stdlib(where, megabytes):
    """A folder of the stdlib's first files, about `megabytes` of them (the tiny preset's corpus). Written
    beside `where` and renamed when whole, so a run killed half-way never leaves a partial corpus behind."""
    if not os.path.isdir(where):
        tmp = f'{where}.tmp{os.getpid()}'
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        total = 0
        for i, f in enumerate(stdlib_files()[1]):
            shutil.copy(f, os.path.join(tmp, f'{i:04d}.txt'))
            total += os.path.getsize(f)
            if total > megabytes * 2 ** 20:
                break
        os.replace(tmp, where)
    return where


def run_stage(stage, cfg, p):
    """Run a stage's commands, their output shown as it comes; stop at the first that fails."""
    if stage == 'serve':
        return serve_check(os.path.join(cfg.out_dir, 'rl'), cfg.device)
    for argv in commands(stage, cfg, p):
        argv = [a for a in argv if a != '--']
        print(f"$ python {' '.join(argv)}", flush=True)
        if subprocess.run([sys.executable, *argv]).returncode:
            raise SystemExit(f"error: stage {stage} failed (the command above); fix it and run life.py again: "
                             "the stages done so far are kept")
    return {}


def main(cfg):
    if cfg.preset not in PRESETS:
        raise SystemExit(f"error: preset must be one of {', '.join(PRESETS)}, got {cfg.preset!r}")
    for name in ('redo', 'until'):
        if getattr(cfg, name) and getattr(cfg, name) not in STAGES:
            raise SystemExit(f"error: {name} must be one of the stages ({', '.join(STAGES)}), "
                             f"got {getattr(cfg, name)!r}")
    p = PRESETS[cfg.preset]
    os.makedirs(cfg.out_dir, exist_ok=True)
    state_path = os.path.join(cfg.out_dir, 'life.json')
    state = {}
    if os.path.isfile(state_path):
        with open(state_path) as f:
            state = json.load(f)
    if cfg.redo:
        state = {s: v for s, v in state.items() if STAGES.index(s) < STAGES.index(cfg.redo)}
    t_life = time.time()
    last = STAGES.index(cfg.until) if cfg.until else len(STAGES) - 1
    for i, stage in enumerate(STAGES[:last + 1]):
        if stage == 'scratch' and not cfg.compare:
            continue
        if stage in state:
            print(f"[{i + 1}/{len(STAGES)}] {stage}: done ({fmt_time(state[stage]['seconds'])}), kept", flush=True)
            continue
        left = sum(p.get('seconds', {}).get(s, 0) for s in STAGES[i:last + 1] if s not in state)
        left += sum(p.get('seconds', {}).get(s, 0) for s in ('pretrain', 'sft')) if cfg.compare and i <= 3 else 0
        print(f"\n[{i + 1}/{len(STAGES)}] {stage} | {fmt_time(time.time() - t_life)} so far | about "
              f"{fmt_time(left)} of training left, evaluations besides", flush=True)
        t0 = time.time()
        state[stage] = {**run_stage(stage, cfg, p), 'seconds': round(time.time() - t0, 1)}
        if stage in MODELS:
            pairs = os.path.join(cfg.out_dir, 'data', 'pairs') if stage == 'reward' else None
            state[stage].update(evaluate(os.path.join(cfg.out_dir, stage), cfg, p['eval_examples'], pairs))
        tmp = state_path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, state_path)
    # every model that writes answers; the reward model scores them
    writers = [os.path.join(cfg.out_dir, s) for s in MODELS if s in state and s != 'reward']
    answers = ask_all(writers, cfg.prompts.split('|'), cfg.device)
    path = write_report(cfg, state, answers)
    print(f"\nthe life took {fmt_time(time.time() - t_life)} this run; the report card: {path}")


if __name__ == '__main__':
    main(load_config(Config))
