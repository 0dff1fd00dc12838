"The package's layers: imports go one way (no cycles), and no library module imports the command line."
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / 'carerft'


def imports(path: Path) -> set[str]:
    "The carerft modules a file imports, at module level or inside functions (relative and absolute forms)."
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:       # from .x import y / from . import x
                names = [node.module] if node.module else [a.name for a in node.names]
            elif node.module and node.module.split('.')[0] == 'carerft':
                rest = node.module.split('.')[1:]
                names = rest[:1] if rest else [a.name for a in node.names]
            else:
                continue
            found |= {n.split('.')[0] for n in names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split('.')[1] for a in node.names if a.name.startswith('carerft.')}
    return found & MODULES


MODULES = {p.stem for p in PKG.glob('*.py') if p.stem not in ('__init__', '_modidx')}
GRAPH = {m: imports(PKG / f'{m}.py') - {m} for m in MODULES}


def test_graph_is_read():
    "Guard: the parser sees the imports that are certainly there."
    assert {'rollout', 'divergences', 'algos'} <= GRAPH['trainer'] and 'trainer' in GRAPH['cli']


def test_no_library_module_imports_the_command_line():
    offenders = sorted(m for m, deps in GRAPH.items() if 'cli' in deps)
    assert not offenders, f'these modules import carerft.cli: {offenders}'


def find_cycle(graph: dict) -> list | None:
    "A cycle of the import graph as a list of modules, or None."
    state, stack = {}, []

    def visit(m):
        state[m] = 'open'
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 'open':
                return stack[stack.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        state[m] = 'done'
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_imports_have_no_cycle():
    assert find_cycle(GRAPH) is None, f'import cycle: {" -> ".join(find_cycle(GRAPH))}'


def test_cycle_finder_can_fail():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None
