"""The documented commands that name config files, and what train.py makes of each (tests/test_configs.py).

resolve(command) is train.py's own resolution: train.py's source up to the line that calls configure() is run
(its defaults, ModelConfig's included), then configurator.apply_config takes the command's config files and
--key=value overrides exactly as train.py would. bench.py's own options are split off by bench.parse first.
"""
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = re.compile(r'^config/\w+\.py$')
PLACEHOLDER = 'config/X.py'


def train_defaults():
    src = (REPO / 'train.py').read_text()
    head = src[:src.index('\nconfig = configure(')]  # train.py up to the line that resolves its config
    ns = {'__name__': 'train_defaults', '__file__': str(REPO / 'train.py')}
    exec(compile(head, str(REPO / 'train.py'), 'exec'), ns)
    return ns


def config_args(command):
    """The arguments train.py gets from a command: its config files and --key=value overrides."""
    tokens = shlex.split(command)
    at = next(i for i, t in enumerate(tokens) if CONFIG.match(t))
    script = tokens[at - 1] if at and tokens[at - 1].endswith('.py') else 'train.py'
    args = tokens[at:]
    if script == 'bench.py':
        sys.path.insert(0, str(REPO))
        import bench
        args = bench.parse(args)[1]  # bench.py's own options stay with it; the rest go to train.py
    return args


def resolve(command):
    """The full set of train.py's config globals after the command's config files and overrides."""
    from configurator import apply_config
    ns = train_defaults()
    args = [str(REPO / a) if CONFIG.match(a) else a for a in config_args(command)]
    given = set()
    config = apply_config(ns, args, auto_keys=('batch_size',), given=given)
    return config, given


def code_spans(markdown):
    """Every line of the fenced code blocks and every inline `code` span (one that wraps is joined)."""
    spans, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith('```'):
            fenced = not fenced
        elif fenced:
            spans.append(line)
    prose = re.sub(r'```.*?```', '', markdown, flags=re.S)
    spans += [' '.join(s.split()) for s in re.findall(r'`([^`]+)`', prose)]
    return spans


def commands_in(text, comments=False):
    """The commands in a text that name a config file (config/X.py, the placeholder, excluded), normalised:
    the launcher and script as written, then the config files and --key=value arguments (optional [...] parts,
    comments and whatever follows the arguments left out). A config file named alone is prose, not a command.
    comments=True reads `# ...` comment lines (a config file's own usage lines) instead of markdown code."""
    if comments:
        spans = [l.lstrip('# ').strip() for l in text.splitlines() if l.startswith('#')]
    else:
        spans = code_spans(text)
    found = []
    for span in spans:
        span = re.sub(r'\[[^\]]*\]', '', span)
        span = re.sub(r'(^|\s)#\s.*$', '', span)
        for seg in span.split('&&'):
            tokens = seg.split()
            at = next((i for i, t in enumerate(tokens) if CONFIG.match(t)), None)
            if at is None or PLACEHOLDER in tokens:
                continue
            end = at
            while end < len(tokens) and (CONFIG.match(tokens[end]) or tokens[end].startswith('--')):
                end += 1
            launch = [i for i in range(at) if tokens[i] in ('python', 'torchrun')]
            start = launch[-1] if launch else at - 1 if at and tokens[at - 1].endswith('.py') else at
            if start == at and end == at + 1:
                continue  # a file named in prose, not a command
            found.append(' '.join(tokens[start:end]))
    return found
