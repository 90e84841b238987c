"""
English Wikipedia articles for the language models of the MDLM comparison (MDLM vs GPT), split by article.

    python prepare/wikitext103.py                       # -> data/wikitext103 (GPT-2 BPE, or a trained BPE offline)
    python prepare/wikitext103.py --tokenizer=bpe --vocab_size=8192
    python prepare/wikitext103.py --input=DIR_OR_FILE

Sources (the first that works, unless --source is given):
  online   WikiText-103 raw (Merity et al. 2016), the official zip with its train/valid/test files; its
           splits are already disjoint by article, and they are kept (articles start at ' = Title = ')
  offline  the real Wikipedia XML dump excerpt shipped inside the gensim==4.4.0 wheel (fetched with
           `pip download`, read with zipfile; gensim is never installed or imported):
           gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2,
           ~107 articles after dropping redirects, cleaned by `wiki_to_text` below
  --input  a directory of .txt files (one article each) or one WikiText-style .txt file (' = Title = ')
The offline and --input sources are split by article with prepare.common.split_by_document.

Tokenizer (--tokenizer=auto): GPT-2 BPE via tiktoken when its files can be fetched, else a byte-level
BPE trained on the train split (--vocab_size, default 1024). The masked diffusion model needs a [MASK]
id: the trained BPE has one; with GPT-2 the model adds it at id vocab_size (train.py).
Licence: Wikipedia text CC BY-SA (WikiText-103 CC BY-SA 3.0); gensim is LGPL-2.1.
"""
import argparse
import html
import re
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpus import die, tokenizer_meta
from download import decompress_bz2, fetch_url, pip_download, read_member
from prepare.common import (auto_tokenizer, decode_replacing, load_from_source, make_tokenizer, read_utf8,
                            split_by_document, staged_dataset, write_dataset)

WIKITEXT_URL = 'https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-raw-v1.zip'
GENSIM_SPEC = 'gensim==4.4.0'
WIKITEXT_MEMBER_BYTES = 1 << 30  # wiki.train.raw unpacks to 541 MB: above download.MAX_MEMBER_BYTES
GENSIM_DUMP = 'gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2'
DROP_SECTIONS = ('references', 'external links', 'see also', 'further reading', 'notes', 'bibliography',
                 'sources', 'footnotes', 'citations')


# ----------------------------------------------------------------------------- MediaWiki markup -> text

def _strip_nested(text, open_, close):
    """Remove every (possibly nested) open_ ... close_ construct, innermost first."""
    pat = re.compile(re.escape(open_) + r'(?:(?!' + re.escape(open_) + r').)*?' + re.escape(close), re.S)
    while True:
        new = pat.sub('', text)
        if new == text:
            return new
        text = new


def _link(m):
    target, _, label = m.group(1).partition('|')
    if ':' in target and target.split(':', 1)[0].strip().lower() in (
            'file', 'image', 'category', 'media', 'wikipedia', 'wp', 'template', 'help', 'portal', 'wikt', 'commons'):
        return ''
    if re.match(r'^[a-z]{2,3}(-[a-z]+)?:', target):  # interlanguage link
        return ''
    return (label or target).split('|')[-1]


def wiki_to_text(markup):
    """A small MediaWiki cleaner (in the spirit of gensim's filter_wiki, which needs gensim installed):
    drops comments, <ref>s and other tags, templates {{...}}, tables {|...|}, File/Category/interlanguage
    links; keeps the label of [[target|label]] and of [url label]; removes bold/italic quotes; turns
    headings into plain lines; strips list markers; cuts the trailing References / External links /
    See also ... sections. Returns plain text, paragraphs separated by blank lines."""
    t = html.unescape(markup)
    t = re.sub(r'<!--.*?-->', '', t, flags=re.S)
    t = re.sub(r'<ref[^>/]*/>', '', t)
    t = re.sub(r'<ref[^>]*>.*?</ref>', '', t, flags=re.S)
    t = re.sub(r'<(gallery|math|timeline|score|syntaxhighlight|source|pre|imagemap)[^>]*>.*?</\1>', '', t, flags=re.S)
    t = _strip_nested(t, '{{', '}}')
    t = _strip_nested(t, '{|', '|}')
    for _ in range(3):  # links inside File captions: resolve the inner ones first
        t = re.sub(r'\[\[([^\[\]]*)\]\]', _link, t)
    t = re.sub(r'\[(?:https?|ftp)://[^\s\]]+\s*([^\]]*)\]', r'\1', t)
    t = re.sub(r'<[^>]+>', '', t)
    t = re.sub(r"'{2,}", '', t)
    lines, out = t.split('\n'), []
    for line in lines:
        s = line.strip()
        h = re.match(r'^(=+)\s*(.*?)\s*\1$', s)
        if h:
            if h.group(2).lower() in DROP_SECTIONS:
                break
            out.extend(['', h.group(2), ''])
            continue
        s = re.sub(r'^[*#:;]+\s*', '', s)
        if s.startswith(('|', '!', '__')) or s in ('}}', '|}'):
            continue
        out.append(s)
    text = '\n'.join(out)
    text = re.sub(r'[ \t]+', ' ', text)
    text = re.sub(r' ([,.;:])', r'\1', text)
    text = re.sub(r'\(\s*[,;]?\s*\)', '', text)
    text = re.sub(r'\n{3,}', '\n\n', text)
    return text.strip() + '\n'


def articles_from_xml(xml_bytes):
    """{title: cleaned text} of the main-namespace, non-redirect pages of a MediaWiki XML export."""
    docs = {}
    for _, el in ET.iterparse(__import__('io').BytesIO(xml_bytes)):
        if el.tag.rsplit('}', 1)[-1] != 'page':
            continue
        get = {c.tag.rsplit('}', 1)[-1]: c for c in el}
        title, ns = get['title'].text, get.get('ns')
        rev = get.get('revision')
        text = None
        if rev is not None:
            for c in rev:
                if c.tag.rsplit('}', 1)[-1] == 'text':
                    text = c.text or ''
        el.clear()
        if (ns is not None and ns.text != '0') or text is None or 'redirect' in get \
                or text.lstrip().lower().startswith('#redirect'):
            continue
        clean = wiki_to_text(text)
        if len(clean.split()) >= 50:
            docs[title] = clean
    return docs


# ----------------------------------------------------------------------------- sources

def articles_from_wikitext(text):
    """Cut a WikiText file into articles at the top-level headings ' = Title = '."""
    docs, title, buf = {}, None, []
    for line in text.split('\n'):
        m = re.match(r'^ = ([^=].*?) = $', line)
        if m:
            if title is not None and ''.join(buf).strip():
                docs[title] = '\n'.join(buf).strip() + '\n'
            title, buf = m.group(1), [m.group(1)]
        elif title is not None:
            buf.append(line)
    if title is not None and ''.join(buf).strip():
        docs[title] = '\n'.join(buf).strip() + '\n'
    return docs


def load_online(raw):
    path = fetch_url(WIKITEXT_URL, raw / 'wikitext-103-raw-v1.zip', timeout=30)
    splits, docs = {}, {}
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        die(f"{path} is not a valid zip file: delete it and run again")
    with z:
        for split, name in (('train', 'wiki.train.raw'), ('val', 'wiki.valid.raw'), ('test', 'wiki.test.raw')):
            member = next((n for n in z.namelist() if n.endswith(name)), None)
            if member is None:
                die(f"{path} has no {name}: it is not the WikiText-103 raw zip; delete it and run again")
            d = articles_from_wikitext(decode_replacing(read_member(z, member, WIKITEXT_MEMBER_BYTES), f'{path.name}:{member}'))
            d = {f'{split}/{k}': v for k, v in d.items()}
            splits[split] = list(d)
            docs.update(d)
    return docs, splits, 'wikitext-103-raw-v1 (official article-level splits)'


def load_offline(raw):
    whl = pip_download(GENSIM_SPEC, raw)
    with zipfile.ZipFile(whl) as z:
        if GENSIM_DUMP not in z.namelist():
            die(f"{whl.name} has no {GENSIM_DUMP}; delete {raw} and try again, or give --input=PATH")
        xml_bytes = decompress_bz2(read_member(z, GENSIM_DUMP), f'{whl.name}:{GENSIM_DUMP}')
    docs = articles_from_xml(xml_bytes)
    if len(docs) < 30:
        die(f"only {len(docs)} articles in the offline dump; give --input=PATH")
    return docs, None, f'pypi-wheel {GENSIM_SPEC}: {Path(GENSIM_DUMP).name}'


def load_input(path):
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob('*.txt'))
        if not files:
            die(f"{path} has no .txt files; give a directory of .txt files or one WikiText-style .txt file")
        docs = {f.stem: read_utf8(f) for f in files}
        return {k: v for k, v in docs.items() if v.strip()}, None, f'input {path}'
    if not path.exists():
        die(f"--input {path} does not exist")
    docs = articles_from_wikitext(read_utf8(path))
    if len(docs) < 3:
        die(f"{path}: found {len(docs)} articles (' = Title = ' lines); give a directory of .txt files instead")
    return docs, None, f'input {path}'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--source', default='auto', choices=['auto', 'online', 'offline', 'input'])
    ap.add_argument('--input', default='')
    ap.add_argument('--tokenizer', default='auto', choices=['auto', 'gpt2', 'bpe', 'unigram', 'char'])
    ap.add_argument('--vocab_size', type=int, default=1024, help='for bpe / unigram (< 65536); 1024 suits the ~0.7M-token offline excerpt')
    ap.add_argument('--out', default='data/wikitext103')
    ap.add_argument('--seed', type=int, default=1337)
    a = ap.parse_args(argv)
    out, raw = Path(a.out), Path('data/wikitext103_raw')
    docs, splits, used = load_from_source(a.source, a.input, lambda: load_online(raw), lambda: load_offline(raw),
                                          lambda: load_input(a.input), 'the offline Wikipedia excerpt')
    print(f"source: {used} ({len(docs)} articles, {sum(len(d.split()) for d in docs.values()):,} words)")
    splits = splits or split_by_document(list(docs), seed=a.seed)
    kind = auto_tokenizer(a.tokenizer, a.vocab_size)
    with staged_dataset(out) as tmp:
        tok = make_tokenizer(kind, [docs[d] for d in splits['train']], a.vocab_size, tmp)
        print(f"tokenizer: {kind}, {tok.vocab_size} ids")
        ids = {s: [tok.encode(docs[d]) for d in names] for s, names in splits.items()}
        meta = {**tokenizer_meta(tok), 'dataset': 'wikitext103', 'source': used,
                'licence': 'Wikipedia text CC BY-SA (WikiText-103: CC BY-SA 3.0); gensim wheel LGPL-2.1',
                'documents': {s: names for s, names in splits.items()},
                'bytes': {s: sum(len(docs[d].encode('utf-8')) for d in names) for s, names in splits.items()}}
        sp = tok.special_ids()
        write_dataset(tmp, ids, meta, sep_id=sp.get('[SEP]', sp.get('<|endoftext|>')))


if __name__ == '__main__':
    main()
