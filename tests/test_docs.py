"""The README and the docs/ pages hold together: every relative link leads to a file (and its #anchor to a heading of
that file), and every pointer the code, configs and tests make at the documentation ("README, Layout",
"docs/mdlm.md, The unigram plateau") names a page that exists and a section of it: a heading or a bold lead
that begins with the name."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md'] + sorted((REPO / 'docs').glob('*.md'))
SOURCES = (sorted(REPO.glob('*.py')) + sorted(REPO.glob('evals/*.py')) + sorted(REPO.glob('prepare/*.py'))
           + sorted(REPO.glob('config/*.py')) + [p for p in sorted(REPO.glob('tests/*.py')) if p.name != 'test_docs.py']
           + [REPO / 'requirements.txt'])


def slug(heading):
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(page):
    text = re.sub(r'```.*?```', '', page.read_text(encoding='utf-8'), flags=re.S)
    return {slug(m) for m in re.findall(r'^#+ (.*)$', text, re.M)}


def test_slug_follows_github():
    assert slug('Phase 2: does multilingual pretraining help?') == 'phase-2-does-multilingual-pretraining-help'
    assert slug('Results (measured offline on a CPU)') == 'results-measured-offline-on-a-cpu'


def test_every_relative_link_resolves():
    bad = []
    for page in PAGES:
        text = re.sub(r'```.*?```', '', page.read_text(encoding='utf-8'), flags=re.S)
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if re.match(r'[a-z]+:', target):
                continue
            path, _, anchor = target.partition('#')
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f'{page.name}: {target} (no such file)')
            elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
                bad.append(f'{page.name}: {target} (no such heading)')
    assert not bad, bad


def pointers():
    """(source, page, section or None) for every 'README, Section' and 'docs/NAME.md[, Section]' in the sources."""
    out = []
    for src in SOURCES:
        text = src.read_text(encoding='utf-8')
        for m in re.finditer(r'README, "?([A-Z][^)",:;]*)', text):
            out.append((src.name, REPO / 'README.md', m.group(1).strip()))
        for m in re.finditer(r'docs/([\w-]+\.md)(?:, "?([A-Z][^)",:;]*))?', text):
            out.append((src.name, REPO / 'docs' / m.group(1), (m.group(2) or '').strip() or None))
    return out


def test_pointers_at_the_documentation_lead_somewhere():
    found = pointers()
    assert len(found) > 20, found          # the scan sees the pointers (model.py alone holds ten)
    bad = []
    for src, page, section in found:
        if not page.exists():
            bad.append(f'{src}: {page.name} does not exist')
        elif section and not re.search(r'^(#+ |\*\*)' + re.escape(section), page.read_text(encoding='utf-8'),
                                       re.M | re.I):
            bad.append(f'{src}: {page.name} has no heading or bold lead "{section}"')
    assert not bad, bad
