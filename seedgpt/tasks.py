"""
The offline task suite: problems whose answers can be checked exactly, the one checker, and the
evaluator that eval, RL and the preference pairs share. prepare/tasks.py writes the suite as a dataset.

The plain suite (prepare.tasks), five tasks, each a user question and a short, bare assistant answer:
  add      What is 48+75?                          123    numbers of up to `digits` digits
  sub      What is 75-48?                          27     never negative
  reverse  Reverse the word kvit.                  tivk   made-up words of 3 to `word_len` letters
  sort     Sort the letters of kvit.               iktv
  count    How many times does a appear in abaca?  3      words of 3 to `word_len` + 2 letters
Each question has several phrasings. No problem (a task and its operands, in any phrasing) is in two
splits, nor twice in one.

The suite with tools (prepare.tasks --tools) is what people type to a chat model (seedgpt/tools.py):
  add sub mul div  what's 7 times 8 / 1,234 - 56789      operands of 1 to `digits` digits, any two lengths
  expr             What is (12+7)*3-4?                   several operators, parentheses       all through calc
  count            how many s in mississippi             English and made-up words of 2 to 15 letters, count
  reverse, sort    Reverse the word planet.              the same words, through reverse and sort
  chat             Hello! Who are you? / thanks! / What is the capital of France?   one honest line, no call
  followup         a conversation of 2 to 4 turns whose later questions build on an answer: "and times 3?",
                   "now reverse it", "what about 12-5?"
Phrasings vary at random: each question is a core ("reverse {w}") in a wrapper ("Can you {v}?"), dozens
of forms per task, then lower case, no question mark, "what's", operators in words, thousands separators,
extra spaces. A tool task's conversation is the question, the assistant's
call, the tool's result and the answer (the tool's result, as it wrote it):
    user: What is 4,812 plus 7533?   assistant: calc(4812+7533) (a call)   tool: 12345   assistant: 12345
Besides train, val and test, it has a gen split that differs from train by construction: phrasings
(pairings of a core and a wrapper) and operand digit-length pairs that training never sees, English
words kept out of it, and follow-ups in forms held out too. Test measures the training distribution;
gen, how far the skill carries beyond it.
"""
import json
import math
import os
import random
import re
import string
import sys
import zlib
from fractions import Fraction

import torch

from seedgpt.agent import generate_with_tools
from seedgpt.chat import loss_text, render_chat, render_prompt
from seedgpt.tools import run_tool

TASKS = ('add', 'sub', 'reverse', 'sort', 'count')


TOOL_TASKS = ('add', 'sub', 'mul', 'div', 'expr', 'count', 'reverse', 'sort', 'chat', 'followup')  # with tools


NUMBER_TASKS = ('add', 'sub', 'mul', 'div', 'expr', 'count')  # answers compared as numbers


LETTERS = string.ascii_lowercase


PHRASES = {
    'add': ["What is {a}+{b}?", "What is {a} + {b}?", "{a}+{b}=?", "Compute {a}+{b}.", "Add {a} and {b}.",
            "What is the sum of {a} and {b}?", "Calculate {a} plus {b}."],
    'sub': ["What is {a}-{b}?", "What is {a} - {b}?", "{a}-{b}=?", "Compute {a}-{b}.", "Subtract {b} from {a}.",
            "What is {a} minus {b}?", "Calculate {a} minus {b}."],
    'reverse': ["Reverse the word {w}.", "Reverse {w}.", "What is {w} backwards?", "Spell {w} backwards.",
                "Write {w} in reverse."],
    'sort': ["Sort the letters of {w}.", "Sort {w} alphabetically.", "Put the letters of {w} in alphabetical order.",
             "What is {w} with its letters sorted?"],
    'count': ["How many times does {c} appear in {w}?", "How many {c}'s are in {w}?", "Count the letter {c} in {w}.",
              "How often does {c} occur in {w}?"],
}


class TaskError(Exception):
    """Bad settings: the message names the problem and the fix."""


# -- the checker: one judge for eval, RL and the preference pairs

_NUMBER = re.compile(r'-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?')  # 1234, -0.5, 1,234 (thousands separated)


def _as_number(text):
    """The value of an answer written as a number, in its usual forms ('1,234', '0123', '12.'), else None."""
    text = text.strip().removesuffix('.').strip()
    return Fraction(text.replace(',', '')) if _NUMBER.fullmatch(text) else None


def _line(text):
    return ' '.join(text.lower().split()).rstrip('.!')


def check(task, meta, answer):
    """True when `answer` (the model's reply text) is right for the question that `meta` describes.

    Numbers compare as numbers, in their usual forms ('1,234' is 1234, '07' is 7, a trailing period is
    fine); words exactly, after trimming spaces and a full stop; chat's line ignoring case and spacing.
    """
    if task not in TOOL_TASKS:
        raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(TOOL_TASKS)}")
    kind = meta['kind'] if task == 'followup' else 'number' if task in NUMBER_TASKS else task
    if kind == 'number':
        right = _as_number(meta['answer'])
        return right is not None and _as_number(answer) == right
    if kind == 'chat':
        return _line(answer) == _line(meta['answer'])
    return answer.strip().removesuffix('.').strip() == meta['answer']


# -- the plain suite

def _word(rng, lo, hi, alphabet=LETTERS):
    return ''.join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def make_problem(task, rng, digits, word_len):
    """(operands, answer) of one problem of the plain suite."""
    if task == 'add':
        a, b = rng.randint(0, 10 ** digits - 1), rng.randint(0, 10 ** digits - 1)
        return dict(a=a, b=b), str(a + b)
    if task == 'sub':
        a, b = sorted((rng.randint(0, 10 ** digits - 1), rng.randint(0, 10 ** digits - 1)), reverse=True)
        return dict(a=a, b=b), str(a - b)
    if task == 'reverse':
        w = _word(rng, 3, max(3, word_len))
        return dict(w=w), w[::-1]
    if task == 'sort':
        w = _word(rng, 3, max(3, word_len))
        return dict(w=w), ''.join(sorted(w))
    # count: letters from a small pool, so a letter often occurs more than once; sometimes not at all
    pool = rng.sample(LETTERS, 3)
    w = _word(rng, 3, max(3, word_len) + 2, pool)
    c = rng.choice(pool) if rng.random() < 0.85 else rng.choice(LETTERS)
    return dict(c=c, w=w), str(w.count(c))


def make_record(task, operands, answer, rng):
    question = rng.choice(PHRASES[task]).format(**operands)
    meta = {'task': task, 'answer': answer, **operands}
    if task in ('add', 'sub'):
        meta['digits'] = len(str(operands['a']))
    return {'messages': [{'role': 'user', 'content': question}, {'role': 'assistant', 'content': answer}],
            'meta': meta}


def _too_few(task, n_train, n_val, n_test, digits, word_len):
    return TaskError(f"too few distinct {task} problems for {n_train}+{n_val}+{n_test} of them at "
                     f"digits={digits}, word_len={word_len}; ask for fewer or make them harder")


def generate(seed=1337, digits=2, word_len=None, n_train=4000, n_val=100, n_test=200, tasks=None, tools=False,
             n_gen=None, max_turns=4):
    """{split: [record, ...]}, n_split records of every task per split, shuffled; deterministic in the seed.
    tasks: default TASKS; with tools, the suite with tools (generate_tools: TOOL_TASKS, and a gen split).
    word_len: the longest word (default 5; with tools 15). max_turns: with tools, of a conversation (1: single
    questions, no followup)."""
    if tools:
        return generate_tools(seed, digits, word_len or 15, n_train, n_val, n_test,
                              n_test if n_gen is None else n_gen, tasks, max_turns)
    word_len = word_len or 5
    rng = random.Random(seed)
    seen = set()  # (task, operands) of every problem so far: splits are disjoint, no problem repeats
    splits = {}
    for split, n in (('test', n_test), ('val', n_val), ('train', n_train)):
        records = []
        for task in tasks or TASKS:
            made, misses = 0, 0
            while made < n:
                operands, answer = make_problem(task, rng, digits, word_len)
                key = (task, tuple(sorted(operands.items())))
                if key in seen:
                    misses += 1
                    if misses > 20 * n + 1000:
                        raise _too_few(task, n_train, n_val, n_test, digits, word_len)
                    continue
                seen.add(key)
                records.append(make_record(task, operands, answer, rng))
                made += 1
        rng.shuffle(records)
        splits[split] = records
    return splits


# -- the suite with tools: what people type. Each choice of phrasing is (seen, held): the seen forms make
# train, val and test; the held ones only the gen split, which training never sees.

GEN_PAIRS = {(1, 4), (2, 6), (3, 1), (4, 5), (5, 3), (6, 2)}  # operand digit lengths (a, b) only gen asks


OPS = {'add': '+', 'sub': '-', 'mul': '*', 'div': '/'}


DIGIT_WEIGHT = {1: 3, 2: 2, 3: 1.5, 4: 1, 5: 1, 6: 1}  # how often an operand has this many digits, relatively


TYPED_OPS = {'+': ('+', ' + ', ' plus '), '-': ('-', ' - ', ' minus '),
             '*': ('*', ' * ', ' times ', ' x ', ' multiplied by '),
             '/': ('/', ' / ', ' divided by ')}  # how people write each operator; the call always has the symbol


# How people ask: a question is a core, what is asked ("reverse {w}"), in a wrapper, how it is asked ("Can
# you {v}?"). A core is a question ({q}) or a request ({v}); {Q} and {V} are the same, capitalized. Training
# sees every core and every wrapper, but a fifth of their pairings (picked by a hash of the text, so by
# construction and not by chance) are asked only in gen: gen measures whether the model takes a question
# it never saw apart into parts it knows, which is what a newcomer's wording asks of it. A wording made of
# words the suite never uses is another matter: the model knows no English but the suite's.
ASK = ["{Q}?", "{Q}", "Can you tell me {q}?", "Do you know {q}?", "Tell me {q}.", "Quick question: {q}?",
       "I want to know {q}.", "Hey, {q}?"]
DO = ["{V}.", "{V}", "Please {v}.", "Can you {v}?", "Could you {v}?", "Would you {v}?", "I need you to {v}.",
      "Help me {v}.", "{V}, please.", "Go ahead and {v}.", "{V} for me.", "Try to {v}."]
AGAIN = (["{Q}?", "{Q}", "And {q}?", "Then {q}?", "Ok, and {q}?"],
         ["{V}.", "{V}", "Now {v}.", "And {v}.", "Then {v}.", "Ok, now {v}.", "Can you {v}?", "Please {v}."])
# the wrappers of a follow-up: "Do you know plus 3?" is no question


CORES = {  # task: (questions, requests, bare forms that need no wrapper)
    'expr': (["what is {e}", "how much is {e}", "what does {e} equal", "what is the value of {e}"],
             ["compute {e}", "calculate {e}", "solve {e}", "work out {e}", "evaluate {e}", "figure out {e}"],
             ["{e}", "{e}=?", "{e} = ?", "{e} =", "{e}?"]),
    'add': (["what is the sum of {a} and {b}", "what do {a} and {b} add up to"],
            ["add {a} and {b}", "add {b} to {a}", "find the sum of {a} and {b}", "sum {a} and {b}"], []),
    'sub': (["what is {b} subtracted from {a}", "what is the difference between {a} and {b}"],
            ["subtract {b} from {a}", "take {b} away from {a}", "find the difference between {a} and {b}"], []),
    'mul': (["what is the product of {a} and {b}"],
            ["multiply {a} by {b}", "multiply {a} and {b}", "find the product of {a} and {b}"], []),
    'div': (["what is the quotient of {a} and {b}", "what do you get dividing {a} by {b}"],
            ["divide {a} by {b}", "find the quotient of {a} and {b}"], []),
    'reverse': (["what is {w} backwards", "what is {w} spelled backwards", "what is {w} reversed",
                 "how do you spell {w} backwards", "what is the reverse of {w}"],
                ["reverse {w}", "reverse the word {w}", "spell {w} backwards", "write {w} backwards",
                 "write {w} in reverse", "write the word {w} backwards", "flip {w}"],
                ["{w} reversed?", "{w} backwards"]),
    'sort': (["what is {w} with its letters sorted", "what is {w} sorted", "what is {w} in alphabetical order",
              "what are the letters of {w} in alphabetical order"],
             ["sort {w}", "sort the letters of {w}", "sort {w} alphabetically", "sort the word {w} alphabetically",
              "put the letters of {w} in alphabetical order", "put {w} in alphabetical order", "alphabetize {w}",
              "arrange the letters of {w} alphabetically"],
             ["{w} sorted?"]),
    'count': (["how many times does {c} appear in {w}", "how many {c}'s are in {w}", "how often does {c} occur in {w}",
               "how many {c} are there in {w}", "in {w}, how many {c}'s are there", "the number of {c}'s in {w}",
               "how many times does the letter {c} show up in {w}"],
              ["count the letter {c} in {w}", "count the {c}'s in {w}", "count how many {c}'s are in {w}",
               "count the times {c} appears in {w}"], []),
}


FOLLOW_CORES = {  # how a follow-up asks of the last answer ("it", "that"): (questions, requests)
    '+': (["what is that plus {k}", "what is it plus {k}", "plus {k}"],
          ["add {k}", "add {k} to that", "add {k} to it"]),
    '-': (["what is that minus {k}", "minus {k}"], ["subtract {k}", "subtract {k} from that", "take {k} away from it"]),
    '*': (["what is that times {k}", "times {k}", "what is it multiplied by {k}"],
          ["multiply by {k}", "multiply it by {k}", "multiply that by {k}"]),
    '/': (["what is that divided by {k}", "divided by {k}", "what is it divided by {k}"],
          ["divide by {k}", "divide that by {k}", "divide it by {k}"]),
    'about': (["what about {e}", "how about {e}"], ["do the same for {e}", "do {e} too"]),  # another of the kind
    'reverse': (["what is it backwards", "what is that reversed", "backwards"],
                ["reverse it", "reverse that", "spell it backwards"]),
    'sort': (["what is it sorted", "what is that sorted", "sorted"], ["sort it", "sort that", "sort its letters"]),
    'count': (["how many {c}'s are in it", "how many times does {c} appear in it"],
              ["count the {c}'s in that", "count the {c}'s in it"]),
    'letter': (["what about {c}", "how about {c}", "what about the letter {c}"], ["count {c} too"]),  # after a count
    'in': (["what about in {w}", "how about in {w}", "how many in {w}"], ["count them in {w}"]),  # same letter
}


def held_out(form):
    """Whether a form is asked only in gen: a fifth of them, by a hash of the text (the same on every run)."""
    return zlib.crc32(form.encode()) % 5 == 0


def phrase(wrapper, core):
    """A core in a wrapper: phrase("Can you {v}?", "reverse {w}") is "Can you reverse {w}?"."""
    cap = core[0].upper() + core[1:]
    return wrapper.replace('{Q}', cap).replace('{V}', cap).replace('{q}', core).replace('{v}', core)


def _split(forms):
    """(seen, held) of a list of forms."""
    return [f for f in forms if not held_out(f)], [f for f in forms if held_out(f)]


def _wrapped(cores, wrappers=(ASK, DO)):
    """(seen, held, bare) forms: every core in every wrapper of its kind, split; the bare forms, all seen."""
    seen, new = _split([phrase(w, c) for kind in (0, 1) for c in cores[kind] for w in wrappers[kind]])
    return seen, new, list(cores[2] if len(cores) > 2 else [])


FORMS = {task: _wrapped(cores) for task, cores in CORES.items()}
FOLLOW_FORMS = {how: _wrapped(cores, AGAIN) for how, cores in FOLLOW_CORES.items()}


# English words of 2 to 15 letters (one in five kept for the gen split), beside made-up ones: people ask
# about words they know, and a model that saw only random letters autocompletes a word it half knows
ENGLISH = """an at be by do go he hi if in is it me my no of on or so to up us we and ant art bag bed big box boy
bus cat cup day dog ear egg eye fan fox fun hat ice jam key leg map man net owl pen pig red run sea sky sun tea toy
van web zoo ball bear bird blue boat book cake city cold door duck fish frog gold hand home kite lamp leaf lion
milk moon nose rain rice road rock rose salt ship shoe snow star tree wind wolf yard zero apple beach bread chair
cloud dance earth field fruit glass grape green heart horse house juice lemon light money mouse music night ocean
paper piano plant queen river robot sheep smile snake stone sugar table tiger train water whale world animal banana
bottle bridge butter candle carrot castle cheese circle coffee cookie dragon flower forest garden guitar hammer
island jungle kitten letter market mirror monkey orange pencil pepper pillow planet pocket rabbit rocket school
silver spider summer tomato turtle window winter yellow balloon bicycle blanket brother cabbage chicken compass
diamond dolphin example feather freedom giraffe holiday kitchen library machine morning mystery network octopus
pumpkin rainbow science sparrow station teacher thunder tornado unicorn village weather whisper airplane alphabet
birthday building calendar champion children computer daughter dinosaur elephant favorite football hospital
keyboard language mountain notebook painting question sandwich sentence shoulder squirrel strength sunshine treasure
umbrella vacation adventure apartment astronaut beautiful butterfly challenge chocolate christmas crocodile
dangerous direction education furniture happiness important invisible knowledge lightning microwave newspaper
pineapple president raspberry scientist signature telephone tradition wonderful yesterday basketball blackberry
strawberry background binoculars calculator chimpanzee connection dictionary everything friendship government
helicopter impossible instrument lighthouse motorcycle playground restaurant skateboard television understand
university watermelon mississippi grasshopper imagination independent information photography temperature
caterpillar celebration environment marshmallow opportunity programming thunderstorm refrigerator conversation
encyclopedia construction championship intelligence neighborhood relationship constellation understanding
international extraordinary communication entertainment investigation accommodation responsibility
transportation characteristic congratulations committee bookkeeper assessment possession tennessee success address
necessary occurrence parallel referee sleepless museum""".split()


ENGLISH_SEEN = [w for i, w in enumerate(ENGLISH) if i % 5 != 4]  # train, val, test
ENGLISH_HELD = [w for i, w in enumerate(ENGLISH) if i % 5 == 4]  # gen only
_ENGLISH_SEEN, _ENGLISH_HELD = set(ENGLISH_SEEN), set(ENGLISH_HELD)


SYLLABLES = (['', 'b', 'c', 'd', 'f', 'g', 'h', 'k', 'l', 'm', 'n', 'p', 'r', 's', 't', 'v', 'w', 'z', 'bl', 'br',
              'ch', 'cl', 'cr', 'dr', 'fl', 'gr', 'pl', 'pr', 'sh', 'st', 'th', 'tr'],
             ['a', 'e', 'i', 'o', 'u', 'ai', 'ea', 'ee', 'oo', 'ou'],
             ['', '', 'n', 'r', 's', 't', 'l', 'm', 'ck', 'nd', 'ng', 'ss', 'll', 'st'])  # onset, vowel, coda


HELLO = "Hi! I'm seedgpt. I can do math, count letters, and reverse or sort words."
OUTSIDE = "I can't answer that: I only do math, count letters, and reverse or sort words."
THANKS = "You're welcome!"


OPENERS = ["Hello", "Hi", "Hey", "Hi there", "Hello there", "Good morning", "Good evening", "Hey there", "Greetings",
           "Howdy", "Good afternoon"]
ABOUT_ME = ["Who are you?", "What can you do?", "What are you?", "What's your name?", "How are you?",
            "Can you help me?", "Help", "Who made you?", "Are you a robot?", "What should I ask you?", "Are you there?",
            "Tell me about yourself.", "What do you do?", "How can you help me?"]
THANKS_HEADS = ["Thanks", "Thank you", "thx", "ty", "Great, thanks", "Cool, thank you", "Ok thanks", "Perfect, thanks",
                "Nice, thanks", "Appreciate it", "Got it, thanks", "Much appreciated", "Cheers", "Awesome, thanks"]
THANKS_TAILS = ["", "!", " a lot", " so much", " :)", ", that helps", " a bunch"]
OUTSIDE_FORMS = [
    "What is the capital of {country}?", "Tell me a joke.", "Tell me a joke about {topic}.", "Who wrote {book}?",
    "What's the weather like in {city}?", "How do I cook {food}?", "Translate {word} into {lang}.",
    "Write a poem about {topic}.", "What time is it?", "Who is the president of {country}?",
    "What is the meaning of life?", "How many legs does a {animal} have?", "Why is the sky blue?", "Where is {city}?",
    "What is a {animal}?", "Do you like {topic}?", "How old are you?", "What should I eat tonight?",
    "Is it going to rain in {city} tomorrow?", "Who won the world cup?", "What is the population of {country}?",
    "Tell me a story about {topic}.", "Can you recommend a book about {topic}?",
    "What language do they speak in {country}?", "Who painted the Mona Lisa?", "How far is {city} from here?",
    # more of what people say that is no task, pieced together, so that "not a task" is learned from many
    # sentences and not from a few
    "Why does {s} {v}?", "How does {s} {v}?", "When did {s} {v}?", "Can {s} {v}?", "Is {s} {adj}?",
    "Should I {act}?", "I think {s} is {adj}.", "Tell me {obj} about {topic}.", "Write {wobj} about {topic}.",
    "Give me {gobj}.", "My name is {name}.", "I feel {feel}.", "Do you know {s}?", "Explain {s} to me."]


CHAT_FORMS = {  # (seen, held) of each kind of message: a greeting (an opener, a question about the model, or
    # both: "Hi | Who are you?"), thanks, or a question outside the suite
    'hello': _split(OPENERS + ABOUT_ME + [f"{o} | {a}" for o in OPENERS for a in ABOUT_ME]),
    'thanks': _split([h + t for h in THANKS_HEADS for t in THANKS_TAILS]),
    'outside': _split(OUTSIDE_FORMS),
}


CHAT_REPLY = {'hello': HELLO, 'thanks': THANKS, 'outside': OUTSIDE}


DECORATIONS = (["Please ", "Hey, ", "Quick question: ", "Tell me, ", "So ", "Ok, ", "I need this: ", "Hmm, "],
               [" please", ", thanks", " :)", " now"])  # around a question, as people pad one


FILLERS = dict(country='France Japan Brazil Canada Egypt India Italy Kenya Mexico Norway Peru Spain'.split(),
               city='Paris Tokyo London Berlin Cairo Lima Rome Sydney Oslo Madrid'.split(),
               book=['Hamlet', 'Dracula', 'Emma', 'Ulysses', 'Moby Dick', 'Frankenstein'],
               topic=['cats', 'the sea', 'robots', 'pizza', 'winter', 'space', 'dogs', 'music', 'trains'],
               food='pasta rice pizza soup pancakes eggs'.split(), lang='French German Spanish Japanese'.split(),
               animal='spider cat bird horse ant octopus'.split(), word='hello cat house water tree'.split(),
               s=['the sun', 'the moon', 'my cat', 'the ocean', 'a computer', 'my phone', 'the wind', 'coffee',
                  'music', 'the internet', 'a rainbow', 'gravity', 'my teacher', 'this song'],
               v=['shine', 'work', 'sleep', 'grow', 'fly', 'move', 'change', 'matter', 'begin', 'smell', 'feel'],
               adj=['real', 'alive', 'happy', 'big', 'dangerous', 'good', 'expensive', 'hot', 'old', 'safe'],
               act=['buy a car', 'learn French', 'go to bed', 'call my mom', 'move to Paris', 'get a dog'],
               obj=['a joke', 'a fact', 'a secret', 'something funny', 'the news'],
               wobj=['a poem', 'a song', 'an essay', 'a letter', 'a haiku'],
               gobj=['some advice', 'a recipe', 'a name for my dog', 'a hug', 'directions to the station'],
               name=['Ana', 'Bob', 'Li', 'Sam', 'Maria', 'Tom'], feel=['sad', 'tired', 'bored', 'great', 'hungry'])


CONTEXT = 256  # tokens of a conversation at most (char-level; other tokenizers take fewer): block_size holds one


MIX = {'add': 1, 'sub': 1, 'mul': 1, 'div': 1, 'expr': 1, 'count': 1.5, 'reverse': 1.5, 'sort': 1.5, 'chat': 1,
       'followup': 1}  # records of each task per n_split; a followup record is a conversation of 2 to 4 turns


def _form(rng, forms, held, bare=0.2):
    """A held-out form in gen; else a seen one, or (that often, where the task has them) a bare one: "2+2"."""
    if held:
        return rng.choice(forms[1])
    return rng.choice(forms[2] if len(forms) > 2 and forms[2] and rng.random() < bare else forms[0])


def _styled(rng, text, decorate=True):
    """The text as people type it: "what's", a word or two around it, lower case, no question mark or full
    stop, an extra space."""
    if text.startswith('What is ') and rng.random() < 0.4:
        text = rng.choice(["What's ", "what's ", "Whats "]) + text[len('What is '):]
    if decorate and rng.random() < 0.2:
        text = rng.choice(DECORATIONS[0]) + text[0].lower() + text[1:]
    end = len(text.rstrip('?.!'))
    if decorate and rng.random() < 0.1 and text[end - 1].isalnum():
        text = text[:end] + rng.choice(DECORATIONS[1]) + text[end:]
    if rng.random() < 0.3:
        text = text.lower()
    if rng.random() < 0.3:
        text = text.rstrip('?.!')
    if rng.random() < 0.15:
        spaces = [i for i, ch in enumerate(text) if ch == ' ']
        at = rng.choice(spaces) if spaces else len(text)
        text = text[:at] + ' ' + text[at:]
    return text


def _number(rng, d, low=0):
    return rng.randint(max(low, 10 ** (d - 1) if d > 1 else 0), 10 ** d - 1)


def _typed(rng, n):
    return f"{n:,}" if n >= 1000 and rng.random() < 0.25 else str(n)  # thousands separated, sometimes


def _turn(task, question, answer, call=None, **meta):
    """One question and its answer: the call, run here as generation will run it, then the answer."""
    meta = {'task': task, 'answer': answer, **meta}
    if call is not None:
        meta['tool'] = call[0]
    return {'question': question, 'call': call, 'answer': answer, 'meta': meta}


def _calc(task, call, question, **meta):
    return _turn(task, question, run_tool('calc', {'expression': call}), ('calc', {'expression': call}), **meta)


def arithmetic(rng, task, digits, held, longest=6):
    """a op b, each of 1 to `digits` digits (at most `longest`), any two lengths; gen asks the GEN_PAIRS,
    or the seen pairs in held-out phrasings."""
    lengths = range(1, min(digits, longest) + 1)
    pairs = [(x, y) for x in lengths for y in lengths]
    new_pairs = [p for p in pairs if p in GEN_PAIRS]
    new_pair = held and new_pairs and rng.random() < 0.5
    seen = [p for p in pairs if p not in GEN_PAIRS]
    # people ask small numbers most ("What is 2+2?"), and a model that saw few one-digit pairs takes 2+2 for
    # the start of a longer expression (calc(2+2+2)): shorter operands are drawn more often
    la, lb = rng.choice(new_pairs) if new_pair else rng.choices(seen, [DIGIT_WEIGHT[x] * DIGIT_WEIGHT[y]
                                                                          for x, y in seen])[0]
    a, b = _number(rng, la, low=int(task == 'div')), _number(rng, lb, low=int(task == 'div'))
    if not new_pair and rng.random() < 0.05:  # 2+2, 5*5: the same number twice, which a model that copies by
        lb, b = la, a  # looking for what followed a digit reads as one number running on ("calc(2+2+2)")
    op = OPS[task]
    forms = FORMS[task] if rng.random() < 0.25 else FORMS['expr']
    ta, tb = _typed(rng, a), _typed(rng, b)
    form = _form(rng, forms, held and not new_pair, bare=0.4)
    question = _styled(rng, form.format(e=ta + rng.choice(TYPED_OPS[op]) + tb, a=ta, b=tb))
    return _calc(task, f"{a}{op}{b}", question, a=a, b=b, digits=f"{la},{lb}", form=form)


def _expression(rng):
    """(as typed, as the call writes it) of 3 or 4 numbers of 1 to 3 digits, + - * / and maybe parentheses."""
    nums = [str(_number(rng, rng.randint(1, 3))) for _ in range(rng.randint(3, 4))]
    ops = rng.choices('+-*/', weights=(4, 3, 3, 1), k=len(nums) - 1)
    if rng.random() < 0.6:  # parentheses around a run of two or more numbers, never all of them
        i = rng.randint(0, len(nums) - 2)
        j = rng.randint(i + 1, len(nums) - 1 if i == 0 else len(nums))
        nums[i], nums[j - 1] = '(' + nums[i], nums[j - 1] + ')'
    spaced = rng.random() < 0.4
    typed = nums[0] + ''.join((f' {o} ' if spaced else o) + n for o, n in zip(ops, nums[1:]))
    return typed, typed.replace(' ', '')


def expression(rng, held):
    typed, call = _expression(rng)
    form = _form(rng, FORMS['expr'], held, bare=0.4)
    return _calc('expr', call, _styled(rng, form.format(e=typed)), expression=call, form=form)


def word(rng, held, lo=2, hi=15):
    """A word of lo to hi letters: English (the held-out ones in gen), made up of syllables, or random; a made-up
    word that is an English word of the other side ("do") is made again."""
    r = rng.random()
    if r < 0.35:
        return rng.choice([w for w in (ENGLISH_HELD if held else ENGLISH_SEEN) if lo <= len(w) <= hi])
    while True:
        n = rng.randint(lo, hi)
        if r < 0.65:
            w = ''
            while len(w) < n:
                w += ''.join(rng.choice(part) for part in SYLLABLES)
            w = w[:n]
        else:
            w = _word(rng, n, n)
        if w not in (_ENGLISH_SEEN if held else _ENGLISH_HELD):
            return w


def word_task(rng, task, held, hi=15):
    w = word(rng, held, 2, hi)
    typed = f'"{w}"' if rng.random() < 0.1 else w
    form = _form(rng, FORMS[task], held)
    if task in ('reverse', 'sort'):
        return _turn(task, _styled(rng, form.format(w=typed)), run_tool(task, {'word': w}), (task, {'word': w}),
                     w=w, form=form)
    c = rng.choice(w) if rng.random() < 0.75 else rng.choice(LETTERS)
    return _turn('count', _styled(rng, form.format(c=c, w=typed)), run_tool('count', {'letter': c, 'word': w}),
                 ('count', {'letter': c, 'word': w}), c=c, w=w, form=form)


def chat(rng, held, kind=None):
    """A message outside the tasks (a greeting, thanks, a question the model cannot answer) and its one line."""
    kind = kind or rng.choices(('hello', 'thanks', 'outside'), weights=(4, 1, 4))[0]
    forms = CHAT_FORMS[kind][1 if held else 0]
    if kind == 'hello':  # an opener alone, a question about the model alone, or both
        mode = rng.random()
        form = rng.choice([f for f in forms if (f in OPENERS) == (mode < 0.3) and ('|' in f) == (mode >= 0.55)]
                          or forms)
        opener, _, ask = form.partition(' | ')
        text = opener + rng.choice(['!', '.', '']) if form in OPENERS else \
            f"{opener}{rng.choice(['!', '.', ','])} {ask}" if ask else form
    else:
        form = rng.choice(forms)
        text = form.format(**{k: rng.choice(v) for k, v in FILLERS.items()})
    return _turn('chat', _styled(rng, text, decorate=kind == 'outside'), CHAT_REPLY[kind], intent=kind, form=form)


def _family(task):
    return 'arith' if task in OPS or task == 'expr' else 'word' if task in ('reverse', 'sort') else task


def fresh(rng, task, digits, word_len, held, short=False):
    """A question of `task` on its own; short: smaller operands, for a turn of a conversation."""
    if task in OPS:
        t = arithmetic(rng, task, digits, held, longest=3 if short else 6)
    elif task == 'expr':
        t = expression(rng, held)
    elif task in ('reverse', 'sort', 'count'):
        t = word_task(rng, task, held, min(word_len, 10) if short else word_len)
    else:
        t = chat(rng, held)
    return {**t, 'family': _family(task), 'redo': task, 'c': t['meta'].get('c'), 'w': t['meta'].get('w')}


def _number_follow_up(rng, prev, how, text, held):
    if how == 'about':  # another question of the kind just asked: "what about 12-5?"
        if prev['redo'] == 'expr':
            typed, call = _expression(rng)
        else:
            a, b, op = _number(rng, rng.randint(1, 3)), _number(rng, rng.randint(1, 2), low=1), OPS[prev['redo']]
            typed, call = f"{a}{rng.choice(TYPED_OPS[op])}{b}", f"{a}{op}{b}"
        t = _calc('followup', call, _styled(rng, text.format(e=typed)), kind='number', how=how, expression=call,
                  form=text)
    else:  # the last answer, then an operator and a number
        k = _number(rng, rng.randint(1, 2), low=1)
        t = _calc('followup', f"{prev['answer']}{how}{k}", _styled(rng, text.format(k=k)), kind='number', how=how,
                  n=prev['answer'], k=k, form=text)
        if prev['family'] != 'arith':  # a count, then "times 3": what about asks for another product
            return {**t, 'family': 'arith', 'redo': {symbol: task for task, symbol in OPS.items()}[how]}
    return {**t, 'family': 'arith', 'redo': prev['redo']}


def follow_up(rng, prev, word_len, held):
    """A question that builds on the last turn's answer ("and times 3?", "now reverse it"), or None."""
    whole = re.fullmatch(r'-?\d{1,9}', prev['answer']) is not None  # an answer short enough to compute on
    how = rng.choice({'arith': ['+', '-', '*', '/', 'about'] if whole else ['about'],
                      'count': ['letter', 'in', '+', '*'],
                      'word': ['reverse', 'sort', 'count', 'about']}.get(prev['family'], [None]))
    if how is None:
        return None
    text = _form(rng, FOLLOW_FORMS[how], held)
    if how in OPS.values() or prev['family'] == 'arith':
        return _number_follow_up(rng, prev, how, text, held)
    if how in ('reverse', 'sort', 'about'):  # the last word (or a new one) reversed or sorted
        w = prev['answer'] if how != 'about' else word(rng, held, 2, min(word_len, 10))
        task = prev['redo'] if how == 'about' else how
        t = _turn('followup', _styled(rng, text.format(e=w)), run_tool(task, {'word': w}), (task, {'word': w}),
                  kind='text', how=how, w=w, form=text)
        return {**t, 'family': 'word', 'redo': task}
    if how == 'count':  # a letter of the last word
        c, w = rng.choice(prev['answer']), prev['answer']
    elif how == 'letter':  # another letter of the same word
        c, w = rng.choice(prev['w'] if rng.random() < 0.75 else LETTERS), prev['w']
    else:  # the same letter in another word
        c, w = prev['c'], word(rng, held, 2, min(word_len, 10))
    t = _turn('followup', _styled(rng, text.format(c=c, w=w)), run_tool('count', {'letter': c, 'word': w}),
              ('count', {'letter': c, 'word': w}), kind='number', how=how, c=c, w=w, form=text)
    return {**t, 'family': 'count', 'redo': 'count', 'c': c, 'w': w}


def size(turn):
    """The turn's tokens, char-level: its messages' text and chat tokens."""
    call = len(turn['call'][0]) + 2 + sum(len(v) + 1 for v in turn['call'][1].values()) if turn['call'] else 0
    return len(turn['question']) + 3 + len(turn['answer']) + 2 + (call + 3 + len(turn['answer']) + 3 if call else 0)


def conversation(rng, digits, word_len, held, max_turns=4):
    """2 to 4 turns, CONTEXT tokens at most: maybe a greeting, a question, a follow-up on its answer, then
    more of either, or thanks."""
    first = fresh(rng, rng.choice(TOOL_TASKS[:8]), digits, word_len, held, short=True)
    turns = [first, follow_up(rng, first, word_len, held)]
    hello = chat(rng, held, 'hello') if max_turns > 2 and rng.random() < 0.2 else None
    if hello is not None and sum(map(size, [hello] + turns)) <= CONTEXT:
        turns.insert(0, hello)
    for _ in range(rng.randint(len(turns), max(len(turns), max_turns)) - len(turns)):
        r = rng.random()
        if r < 0.15:
            nxt = chat(rng, held, 'thanks')
        else:
            nxt = (follow_up(rng, turns[-1], word_len, held) if r < 0.7 else None) or \
                fresh(rng, rng.choice(TOOL_TASKS[:8]), digits, word_len, held, short=True)
        if sum(map(size, turns + [nxt])) > CONTEXT:
            break
        turns.append(nxt)
        if r < 0.15:
            break
    return turns


def sessions(rng, singles, max_turns=4):
    """Single questions grouped max_turns to a conversation, within CONTEXT tokens, as one asks a chat model
    one thing after another. A batch row is padded to its batch's longest, so rows of similar lengths waste
    less of each step on padding; each conversation's first question is still asked with nothing before it;
    and the model learns that an earlier, unrelated turn changes nothing."""
    rng.shuffle(singles)
    grouped, i = [], 0
    while i < len(singles):
        group = [singles[i]]
        i += 1
        while len(group) < max_turns and i < len(singles) and sum(map(size, group + [singles[i]])) <= CONTEXT:
            group.append(singles[i])
            i += 1
        grouped.append(group)
    return grouped


def problem(turn):
    """What makes two questions the same problem: the tool's computation (or the word's), for chat the text."""
    meta = turn['meta']
    if meta['task'] == 'chat':
        return 'chat', turn['question']
    if turn['call'] is not None:
        return turn['call'][0], json.dumps(turn['call'][1], sort_keys=True)
    return turn['redo'], meta['w']  # reverse or sort of a word


def tool_record(turns):
    """The conversation as chat messages, the last turn's meta (with every turn's, for a conversation)."""
    messages = []
    for t in turns:
        messages.append({'role': 'user', 'content': t['question']})
        if t['call'] is not None:  # the call, then the tool's result: the answer, as the tool wrote it
            name, arguments = t['call']
            function = {'name': name, 'arguments': json.dumps(arguments)}
            call = {'role': 'assistant', 'content': '', 'tool_calls': [{'type': 'function', 'function': function}]}
            messages += [call, {'role': 'tool', 'content': t['answer']}]
        messages.append({'role': 'assistant', 'content': t['answer']})
    meta = dict(turns[-1]['meta'])
    if len(turns) > 1:
        meta['turns'] = [t['meta'] for t in turns]
    return {'messages': messages, 'meta': meta}


def generate_tools(seed, digits, word_len, n_train, n_val, n_test, n_gen, tasks=None, max_turns=4):
    """{split: [record, ...]} of the suite with tools, round(n_split * MIX[task]) questions of each task (a
    followup is a conversation) shuffled, in train and val grouped into sessions; deterministic in the seed.
    No problem is in two splits (a chat message may recur within one); gen asks in held-out forms only."""
    rng = random.Random(seed)
    owner = {}  # problem -> the split that asks it
    splits = {}
    for split, n in (('test', n_test), ('val', n_val), ('gen', n_gen), ('train', n_train)):
        held, convs = split == 'gen', []
        for task in tasks or [t for t in TOOL_TASKS if max_turns > 1 or t != 'followup']:
            want, made, misses = max(1, round(n * MIX[task])), 0, 0
            while made < want:
                turns = conversation(rng, digits, word_len, held, max_turns) if task == 'followup' else \
                    [fresh(rng, task, digits, word_len, held)]
                keys = [problem(t) for t in turns]
                fresh_keys = [k for k in keys if k[0] != 'chat']
                if any(t['answer'].startswith('error') for t in turns) or len(set(fresh_keys)) < len(fresh_keys) \
                        or any(owner.get(k, split) != split or (k in owner and k[0] != 'chat') for k in keys):
                    misses += 1
                    if misses > 20 * want + 1000:
                        raise _too_few(task, n_train, n_val, n_test, digits, word_len)
                    continue
                owner.update((k, split) for k in keys)
                convs.append(turns)
                made += 1
        if split in ('train', 'val'):
            convs = sessions(rng, [c[0] for c in convs if len(c) == 1], max_turns) + [c for c in convs if len(c) > 1]
        records = [tool_record(turns) for turns in convs]
        rng.shuffle(records)
        splits[split] = records
    return splits


def load_records(data_dir, split, max_examples=0):
    path = os.path.join(data_dir, f'{split}.jsonl')
    if not os.path.isfile(path):
        raise SystemExit(f"error: no {path}; make the task suite first: python -m prepare.tasks")
    with open(path, encoding='utf-8') as f:
        records = [json.loads(line) for line in f if line.strip()]
    return records[:max_examples] if max_examples > 0 else records


def question(record):
    """The conversation up to the answer that its meta describes: through the last user message, so a
    conversation's earlier turns come as the suite wrote them."""
    messages = record['messages']
    last = max((i for i, m in enumerate(messages) if m['role'] == 'user'), default=len(messages) - 1)
    return messages[:last + 1]


def each_answer(records):
    """A record per answer to score: a conversation gives one per assistant answer (its meta['turns']),
    each with the turns before it as the suite wrote them, so an earlier miss does not sink a later answer."""
    items = []
    for r in records:
        metas = r['meta'].get('turns')
        if not metas:
            items.append(r)
            continue
        users = [i for i, m in enumerate(r['messages']) if m['role'] == 'user']
        ends = users[1:] + [len(r['messages'])]
        items += [{'messages': r['messages'][:end], 'meta': meta} for end, meta in zip(ends, metas, strict=True)]
    return items


# the hard cases a newcomer types, across tasks (the suite with tools; digits 'a,b' are the operands' lengths)
GROUPS = {
    'one digit': lambda m: m['task'] in OPS and m.get('digits') == '1,1',
    'unequal lengths': lambda m: m['task'] in OPS and isinstance(m.get('digits'), str)
    and len(set(m['digits'].split(','))) > 1,
    'long words': lambda m: m['task'] in ('count', 'reverse', 'sort') and len(m.get('w', '')) >= 10,
}


def score(records, answers, traces=None):
    """{'tasks': {task: {n, correct, accuracy}}, 'mean': mean accuracy over tasks, 'n': questions}; with
    arithmetic of several lengths, 'digits': {task: {d: accuracy}} (d: the first operand's digits; with tools,
    'a,b', both operands'); with traces (seedgpt/agent.py) on the suite with tools, 'tools': how often a tool was
    called where the suite needs one (recall) and where it does not (needless), and the share of calls that were
    malformed; 'groups': {group: {n, accuracy}} for GROUPS that have questions."""
    tasks, digits, groups = {}, {}, {}
    for record, answer in zip(records, answers, strict=True):
        meta = record['meta']
        row = tasks.setdefault(meta['task'], {'n': 0, 'correct': 0})
        right = check(meta['task'], meta, answer)
        row['n'] += 1
        row['correct'] += right
        for name, member in GROUPS.items():
            if member(meta):
                groups.setdefault(name, []).append(right)
        if 'digits' in meta:
            digits.setdefault(meta['task'], {}).setdefault(meta['digits'], []).append(right)
    for row in tasks.values():
        row['accuracy'] = row['correct'] / row['n']
    mean = sum(row['accuracy'] for row in tasks.values()) / max(1, len(tasks))
    result = {'tasks': dict(sorted(tasks.items())), 'mean': mean, 'n': len(records)}
    if any(len(by) > 1 for by in digits.values()):
        result['digits'] = {task: {d: sum(v) / len(v) for d, v in sorted(by.items())}
                            for task, by in sorted(digits.items())}
    if groups:
        result['groups'] = {name: {'n': len(groups[name]), 'accuracy': sum(groups[name]) / len(groups[name])}
                            for name in GROUPS if name in groups}
    if traces is not None and any(r['meta'].get('tool') for r in records):  # the suite with tools
        needed = [t.called for r, t in zip(records, traces) if r['meta'].get('tool')]
        needless = [t.called for r, t in zip(records, traces) if not r['meta'].get('tool')]
        calls = sum(len(t.calls) for t in traces)
        result['tools'] = {'called_when_needed': sum(needed) / max(1, len(needed)), 'needed': len(needed),
                           'called_when_not': sum(needless) / max(1, len(needless)), 'not_needed': len(needless),
                           'calls': calls, 'malformed': sum(t.malformed for t in traces) / max(1, calls)}
    return result


def accuracy(model, tok, records, batch_size=64, max_new_tokens=32, progress=False, max_calls=3, **sampling):
    """score() of the model's answers to the records' questions (every answer of a conversation: each_answer),
    batch_size at a time; a model that knows tools calls them (seedgpt/agent.py), up to max_calls per answer.
    The questions are batched shortest first: a batch's replies may run only as far as its longest prompt
    leaves room in the context, and a greeting's line should not be cut for a long conversation beside it."""
    records = each_answer(records)
    prompts = [render_prompt(tok, question(r)) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(prompts[i]))
    answers, traces, correct = [None] * len(records), [None] * len(records), 0
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        answered = generate_with_tools(model, tok, [prompts[i] for i in chunk], max_new_tokens, max_calls, **sampling)
        for i, trace in zip(chunk, answered):
            traces[i], answers[i] = trace, trace.answer
            correct += check(records[i]['meta']['task'], records[i]['meta'], trace.answer)
        if progress:
            sys.stderr.write(f"\reval: {start + len(chunk)}/{len(records)} answered, {correct} right")
            sys.stderr.flush()
    if progress:
        sys.stderr.write('\n')
    return score(records, answers, traces)


@torch.no_grad()
def answer_loss(model, tok, records, batch_size=64):
    """{task: {'loss', 'bpb'}}: the loss of the records' own answers under the model, read with the question
    before them (SFT's loss: nats per token over each answer and its <|end|>), and the same in bits per byte
    of the answers' text, which compares models of different tokenizers."""
    device, sums = next(model.parameters()).device, {}
    for start in range(0, len(records), batch_size):
        chunk = [r for r in records[start:start + batch_size] if r['messages'][-1]['role'] == 'assistant']
        if not chunk:
            continue
        rendered = [render_chat(tok, r['messages']) for r in chunk]
        T = max(len(ids) for ids, _ in rendered) - 1
        x, y = torch.zeros(len(chunk), T, dtype=torch.long), torch.full((len(chunk), T), -1, dtype=torch.long)
        for row, (ids, mask) in enumerate(rendered):  # right-padded: causal attention never looks at the padding
            x[row, :len(ids) - 1] = torch.tensor(ids[:-1])
            y[row, :len(ids) - 1] = torch.tensor([i if m else -1 for i, m in zip(ids[1:], mask[1:])])
        logp, _ = model(x.to(device), y.to(device), per_token=True)  # (B, T), 0 where y is -1
        for r, (ids, mask), nll, n in zip(chunk, rendered, (-logp.double().sum(1)).tolist(), (y != -1).sum(1).tolist()):
            s = sums.setdefault(r['meta']['task'], [0.0, 0, 0])
            # the bytes of what the loss covers: the answers' text (and calls'), not their chat tokens
            s[0], s[1], s[2] = s[0] + nll, s[1] + n, s[2] + len(loss_text(tok, ids, mask).encode('utf-8'))
    return {task: {'loss': nll / n, 'bpb': nll / math.log(2) / max(1, n_bytes)}
            for task, (nll, n, n_bytes) in sums.items()}


def _tool_use(t):
    return (f"tool called where needed {t['called_when_needed']:.3f} (of {t['needed']}), where not "
            f"{t['called_when_not']:.3f} (of {t['not_needed']}); {t['calls']} calls, {t['malformed']:.3f} malformed")


def _hard_cases(groups):
    return 'hard cases: ' + ', '.join(f"{g} {r['accuracy']:.3f} (of {r['n']})" for g, r in groups.items())


def _grids(task, by_split):
    """Accuracy by the operands' digits 'a,b' as a grid per split, side by side: a down, b across; '-' where
    a split asks no such pair (gen's held-out pairs are '-' in test)."""
    pairs = {tuple(map(int, d.split(','))) for by in by_split.values() for d in by}
    sizes = range(1, max(max(p) for p in pairs) + 1)
    lines = [f"{task} by digits, first operand down, second across: " + ' | '.join(by_split)]
    lines.append('  ' + ' | '.join(''.join(f"{b:>6}" for b in sizes) for _ in by_split))
    for a in sizes:
        cells = [''.join(f"{by[f'{a},{b}']:>6.2f}" if f'{a},{b}' in by else f"{'-':>6}" for b in sizes)
                 for by in by_split.values()]
        lines.append(f"{a:<2}" + ' | '.join(cells))
    return lines


def table(result):
    """The result as a text table; with answer_loss's figures merged in, their columns too."""
    losses = 'loss' in next(iter(result['tasks'].values()), {})
    head = f"{'task':<10}{'n':>6}{'correct':>9}{'accuracy':>10}"
    lines = [head + (f"{'loss':>9}{'bits/byte':>11}" if losses else '')]
    for task, row in result['tasks'].items():
        lines.append(f"{task:<10}{row['n']:>6}{row['correct']:>9}{row['accuracy']:>10.3f}"
                     + (f"{row['loss']:>9.3f}{row['bpb']:>11.3f}" if losses else ''))
    lines.append(f"{'mean':<10}{result['n']:>6}{'':>9}{result['mean']:>10.3f}"
                 + (f"{result['loss']:>9.3f}{result['bpb']:>11.3f}" if losses else ''))
    for task, by in result.get('digits', {}).items():
        if any(isinstance(d, str) for d in by):
            lines += _grids(task, {'accuracy': by})
        else:
            lines.append(f"{task} by digits: " + ', '.join(f"{d}: {acc:.3f}" for d, acc in by.items()))
    if 'groups' in result:
        lines.append(_hard_cases(result['groups']))
    if 'tools' in result:
        lines.append(_tool_use(result['tools']))
    return '\n'.join(lines)


def tables(results):
    """{split: result} side by side: accuracy and questions per task and split, the digit grids, tool use."""
    if len(results) == 1:
        return table(next(iter(results.values())))
    tasks = sorted({task for r in results.values() for task in r['tasks']})
    lines = [f"{'task':<10}" + ''.join(f"{split:>9}{'n':>6}" for split in results)]
    for task in tasks:
        rows = [r['tasks'].get(task) for r in results.values()]
        lines.append(f"{task:<10}" + ''.join(f"{row['accuracy']:>9.3f}{row['n']:>6}" if row else f"{'-':>9}{'':>6}"
                                             for row in rows))
    lines.append(f"{'mean':<10}" + ''.join(f"{r['mean']:>9.3f}{r['n']:>6}" for r in results.values()))
    for task in sorted({task for r in results.values() for task in r.get('digits', {})}):
        by_split = {split: r.get('digits', {}).get(task, {}) for split, r in results.items()}
        if any(isinstance(d, str) for by in by_split.values() for d in by):
            lines += _grids(task, by_split)
        else:
            lines += [f"{task} by digits, {split}: " + ', '.join(f"{d}: {acc:.3f}" for d, acc in by.items())
                      for split, by in by_split.items()]
    lines += [f"{split}: {_hard_cases(r['groups'])}" for split, r in results.items() if 'groups' in r]
    lines += [f"{split}: {_tool_use(r['tools'])}" for split, r in results.items() if 'tools' in r]
    return '\n'.join(lines)
