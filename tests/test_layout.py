"""The import graph of the repository (README, Layout): no module imports another that (directly or through
others) imports it back, and the scripts that train, sample and evaluate never reach prepare/, whose files are
corpus scripts. Imports inside functions count: a lazy import is still an edge of the graph."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ('train', 'sample', 'evaluate', 'bench', 'interpret')


def repo_modules():
    """{module name: path} of every Python file of the repository outside tests/."""
    out = {}
    for p in sorted(REPO.glob('*.py')) + sorted(REPO.glob('evals/*.py')) + sorted(REPO.glob('prepare/*.py')):
        if p.name == '__init__.py':
            continue
        rel = p.relative_to(REPO).with_suffix('')
        out['.'.join(rel.parts)] = p
    return out


def import_graph():
    mods = repo_modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, ast.Import):
                cands = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from evals import lm` names a module; `from corpus import die` names a module's attribute
                cands = [f'{node.module}.{a.name}' for a in node.names] + [node.module]
            else:
                continue
            for c in cands:
                if c in mods and c != name:
                    deps.add(c)
        graph[name] = deps
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = 'open'
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 'open':
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        state[n] = 'done'
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def reach(graph, start):
    seen, todo = set(), [start]
    while todo:
        for m in graph[todo.pop()]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def test_the_graph_is_what_the_ast_says():
    g = import_graph()
    assert 'corpus' in g['train'] and 'model' in g['checkpoint']  # the parser sees plain and `from` imports
    assert 'evals.lm' in g['evaluate']                            # `from evals import lm` is an edge to evals.lm
    assert 'prepare.common' in g['prepare.akkadian']


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, f"import cycle: {' -> '.join(find_cycle(import_graph()))}"


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_training_sampling_and_evaluation_never_reach_prepare():
    g = import_graph()
    for s in SCRIPTS:
        bad = sorted(m for m in reach(g, s) if m.startswith('prepare.'))
        assert not bad, f"{s}.py reaches {bad}"
    lib = [m for m in g if not m.startswith('prepare.') and m not in SCRIPTS]
    for m in lib:
        bad = sorted(x for x in reach(g, m) if x.startswith('prepare.'))
        assert not bad, f"{m} reaches {bad}"


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """Each library module imported first, on its own (the repository's modules are dropped from sys.modules
    between two), so no import order hides a cycle or a missing import; train.py and sample.py are scripts
    that run on import, and are covered by the graph above."""
    mods = [m for m in repo_modules() if m not in ('train', 'sample')]
    code = (
        "import importlib, sys\n"
        f"mods = {mods!r}\n"
        "for m in mods:\n"
        "    for k in [k for k in sys.modules if k.split('.')[0] in {x.split('.')[0] for x in mods}]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module(m)\n"
        "    if m in ('evaluate', 'bench', 'interpret'):\n"
        "        leaked = sorted(k for k in sys.modules if k.startswith('prepare.'))\n"
        "        assert not leaked, (m, leaked)\n"
        "print('ok', len(mods))\n")
    r = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == f'ok {len(mods)}'


def test_model_is_the_floor_and_scripts_are_the_roof():
    """Imports flow one way (README, Layout): scripts -> named modules -> model.py. model.py holds the architectures
    only and imports nothing of the repository (objectives.py computes the losses from the models' outputs, never the
    other way round); no module that is not a script imports a script."""
    g = import_graph()
    assert g['model'] == set(), f"model.py imports {sorted(g['model'])}"
    assert 'objectives' not in reach(g, 'model')
    for m in g:
        if m not in SCRIPTS:
            assert not g[m] & set(SCRIPTS), f"{m} imports the script(s) {sorted(g[m] & set(SCRIPTS))}"
