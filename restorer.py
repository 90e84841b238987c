"""
A trained restorer loaded once, restoring what a scholar gives it: one ATF line (sample.py --text, the page of
serve.py) or whole ATF texts (sample.py --input), with why each restoration was chosen.

    r = Restorer(model, ckpt, data_dir, cache_dir=out_dir, ckpt_path=out_dir + '/ckpt.pt')  # scorers built once: count tables, fitted weights
    r.line('{m}aš-šur-[x x] lu DI-mu', answer='PAP-AŠ', parallels=5, explain=True)   -> one dict (sample.py --json)
    r.texts(texts, explain=False, progress=bar)                 -> one record per gap of edition.read_edition's texts

The search is restoration.py's (beam search per gap, the product of experts with weights chosen on val, the length
model for gaps of unknown length), batched over every gap of a text (restore_gaps_many); the rendering is
edition.py's, in the input's own conventions. A user's input that cannot be restored raises InputError, one
sentence saying what to do (sample.py prints it as its one error line, serve.py shows it on the page with an HTTP
4xx).
"""
import math
import os

import numpy as np

from atf import GAP, GAPN, parse_atf_line
from checkpoint import data_fingerprints
from corpus import excerpt, load_tokenizer
from edition import Spelling, check_brackets, fill_segments, join_signs, line_gaps, line_signs, render, spell
from restoration import (context_matches, describe_product, gap_score, occlusion_saliency, restoration_scorers,
                         restore_cache_key, restore_gaps_many, score_filling, similar_passages, _crop)

SCORERS = ('restore', 'model', 'ngram', 'infinigram', 'unigram')
EXAMPLE = 'a-na [x x] be-li₂-ia qi₂-bi₂-ma'


class InputError(ValueError):
    """Input a restorer cannot use; the message says what to do."""


class UnknownSigns(InputError):
    """A line with signs outside the model's vocabulary, refused (Restorer.line with unknown='error')."""


class Restorer:
    def __init__(self, model, ckpt, data_dir, cache_dir=None, ckpt_path=None, scorer='restore', beam=20, max_gap_len=10,
                 candidates=5, length_model='prior', length_alpha=1.0):
        """cache_dir: where restore.json keeps the product's fitted weights, keyed by the checkpoint file ckpt_path
        and the data (restoration.restore_cache_key); both or neither."""
        if scorer not in SCORERS:
            raise InputError(f"--scorer must be {', '.join(SCORERS[:-1])} or {SCORERS[-1]}, got {scorer!r}")
        if length_model not in ('prior', 'aeneas'):
            raise InputError(f"--length_model must be prior or aeneas, got {length_model!r}")
        self.model, self.ckpt, self.data_dir = model, ckpt, data_dir
        self.tok = load_tokenizer(data_dir)
        self.specials = self.tok.special_ids()
        self.n_lead, self.mask_id, self.unk_id = len(self.specials), self.specials['[MASK]'], self.specials['[UNK]']
        self.T = ckpt['model_args']['block_size']
        if max_gap_len >= self.T:
            raise InputError(f"a restoration of {max_gap_len} signs does not fit the model's context of {self.T} "
                             f"signs with any context around it; use --max_gap_len below {self.T}")
        self.scorer, self.beam, self.max_gap_len, self.candidates = scorer, beam, max_gap_len, candidates
        self.length_model, self.length_alpha = length_model, length_alpha
        if (cache_dir is None) != (ckpt_path is None):
            raise ValueError("Restorer: give cache_dir and ckpt_path together (the cache is keyed by the checkpoint)")
        key = restore_cache_key(ckpt_path, ckpt, data_fingerprints(data_dir)['data']) if cache_dir else None
        self.cache_dir, self.cache_key = cache_dir, key  # also keys the parallels index (parallels.pt)
        self.scorers, self.info = restoration_scorers(model, data_dir, max_gap_len, cache_dir=cache_dir,
                                                      cache_key=key,
                                                      verbose=False)
        self.score_fn = self.scorers[scorer]
        self.prior = self.info['length_logprior'] if length_model == 'prior' else None

    # ------------------------------------------------------------------------- pieces shared by lines and texts

    def describe(self):
        """What the scorer is, in words (printed above the candidates)."""
        return {'restore': f"{describe_product(self.info['weights'])} (a product of experts, weights chosen on val)",
                'model': 'the encoder alone', 'ngram': 'the bidirectional n-gram of the train split',
                'infinigram': 'the bidirectional infini-gram of the train split',
                'unigram': 'train-split sign frequencies'}[self.scorer]

    def lengths_rule(self):
        return ("log P(length) + log p(signs | length), P from the train split's gaps" if self.prior is not None else
                f"Aeneas's logp / (1 + length)^{self.length_alpha:g}")

    def ids(self, tokens):
        """Token ids ([UNK] for a sign outside the vocabulary) and the sorted signs that were outside."""
        ids = [self.tok.stoi.get(t, self.unk_id) for t in tokens]
        return ids, sorted({t for t, i in zip(tokens, ids) if i == self.unk_id and t != '[UNK]'})

    def shown_p(self, prob, score, length):
        """The probability shown for a candidate: p(signs) for a gap of known length; for an unknown length with
        the length model, P(length, signs) = exp(log P(k) + log p(signs | k)), the quantity candidates are ranked
        by (Aeneas's normalised score is no probability: p(signs | k) then)."""
        return math.exp(score) if length is None and self.prior is not None else prob

    def search(self, items, progress=None):
        """restore_gaps_many over items [(ids, [(start, length)])] with this restorer's options."""
        return restore_gaps_many(self.score_fn, items, mask_id=self.mask_id, max_gap_len=self.max_gap_len,
                                 beam=self.beam, alpha=self.length_alpha, topk=self.candidates,
                                 banned_ids=self.specials.values(), window=self.T, length_logprior=self.prior,
                                 progress=progress)

    def joint(self, ids, start, length, fill):
        """(log p, ranking score) of a given filling of gap (start, length) under the scorer, as the search ranks."""
        k = len(fill)
        seq = ids[:start] + [self.mask_id] * k + ids[start + (length or 1):]
        seq, pos = _crop(seq, list(range(start, start + k)), self.T)
        lp = score_filling(self.score_fn, seq, pos, fill)
        return lp, gap_score(lp, length, k, self.prior, self.length_alpha)

    def saliency(self, ids, start, length, fill):
        """Occlusion saliency of a filling of gap (start, length) of ids: [(token index in ids, drop)] for every
        real sign of the context the scorer reads (the model's window around the gap)."""
        k = len(fill)
        seq = ids[:start] + [self.mask_id] * k + ids[start + (length or 1):]
        crop, pos = _crop(seq, list(range(start, start + k)), self.T)
        shift = start - pos[0]
        ctx = [j for j in range(len(crop)) if j not in pos and crop[j] >= self.n_lead]
        if not ctx:
            return []
        _, drops = occlusion_saliency(self.score_fn, crop, pos, fill, self.mask_id, ctx)
        back = lambda j: j + shift if j < pos[0] else j + shift - k + (length or 1)  # noqa: E731
        return [(back(j), d) for j, d in zip(ctx, drops)]

    def candidates_of(self, found, length, sp):
        return [{'signs': [self.tok.itos[s] for s in signs], 'atf': join_signs([self.tok.itos[s] for s in signs], sp),
                 'prob': p, 'score': sc, 'p': self.shown_p(p, sc, length), 'length': k, 'source': self.scorer}
                for signs, p, sc, k in found]

    # ------------------------------------------------------------------------- one line (sample.py --text, the page)

    def line(self, text, answer='', parallels=0, explain=False, unknown='unk', top_signs=5):
        """Restore every gap of one ATF line. answer: the true filling of each gap, '|' between gaps (where it
        ranks); parallels: the N most similar train passages and each gap's exact context matches; explain:
        occlusion saliency of every candidate; unknown: 'unk' reads a sign outside the vocabulary as [UNK],
        'error' refuses the line. Returns the dict sample.py --json prints (the page draws it)."""
        if not text.strip():
            raise InputError(f"the line is empty: write an ATF line with gaps, e.g. {EXAMPLE}")
        if '\n' in text.strip() or '\r' in text.strip():
            raise InputError("that is more than one line: give one line here, or a whole ATF text as a file")
        bad = check_brackets(text)
        if bad:
            raise InputError(bad)
        sp = Spelling.of(text)
        signs = line_signs(text)
        toks = [s.token for s in signs]
        ids, unknown_signs = self.ids(toks)
        if unknown_signs and unknown == 'error':
            shown = ' '.join(unknown_signs[:10]) + (' ...' if len(unknown_signs) > 10 else '')
            raise UnknownSigns(f"{len(unknown_signs)} sign(s) not in the vocabulary of this model: {shown}; check "
                             f"the spelling, or read them as unknown signs ([UNK])")
        gaps = line_gaps(signs, text)
        if not gaps:
            raise InputError("the line has no gap to restore: write a lost sign as x and a gap of unknown length as "
                             f"... or [...], e.g. {EXAMPLE}")
        longest = max(self.max_gap_len if g.length is None else g.length for g in gaps)
        if longest >= self.T:
            raise InputError(f"a restoration of {longest} signs does not fit the model's context of {self.T} signs "
                             f"with any context around it; use --max_gap_len below {self.T} (and gaps of fewer than "
                             f"{self.T} x's)")
        answers = self.check_answers(answer, gaps) if answer else []
        found = self.search([(ids, [(g.start, g.length) for g in gaps])])[0]
        out_gaps = []
        for n, (g, cands) in enumerate(zip(gaps, found)):
            og = {'gap': n + 1, 'start': g.start, 'length': g.length, 'span': list(g.span) if g.span else None,
                  'original': text[g.span[0]:g.span[1]] if g.span else spell(toks[g.start]),
                  'candidates': self.candidates_of(cands, g.length, sp)}
            if parallels:
                self._context_matches(og, ids, g, sp, [s.flag for s in signs])
            if answers:
                truth, fill = answers[n]
                lp, sc = self.joint(ids, g.start, g.length, fill)
                og['answer'] = {'signs': truth, 'atf': join_signs(truth, sp), 'prob': math.exp(lp), 'score': sc,
                                'p': self.shown_p(math.exp(lp), sc, g.length),
                                'rank': 1 + sum(c['score'] > sc for c in og['candidates']),
                                'in_candidates': any(c['signs'] == truth for c in og['candidates'])}
            if explain:
                for c in og['candidates']:
                    fill = [self.tok.stoi[s] for s in c['signs']]
                    c['saliency'] = [{'index': j, 'sign': spell(toks[j], sp), 'drop': d}
                                     for j, d in self.saliency(ids, g.start, g.length, fill)]
            out_gaps.append(og)
        fills = [(g, og['candidates'][0]['signs']) for g, og in zip(gaps, out_gaps)]
        best_segments = fill_segments(text, fills, sp)
        passages = []
        if parallels:
            query = [i for i in ids if i >= self.n_lead]
            passages = [{'doc': d, 'cosine': c, 'text': self.render_train(s, e, sp)} for c, d, s, e in
                        similar_passages(self.model, self.data_dir, query, self.n_lead, parallels,
                                         cache=os.path.join(self.cache_dir, 'parallels.pt') if self.cache_dir else None,
                                         key=self.cache_key)]
        return {'text': text, 'signs': toks, 'unknown_signs': unknown_signs, 'scorer': self.scorer,
                'scorer_description': self.describe(), 'lengths': self.lengths_rule(),
                'weights': self.info['weights'], 'gaps': out_gaps,
                'best': ''.join(t for t, _ in best_segments),
                'best_segments': [{'text': t, 'gap': n} for t, n in best_segments],
                'segments': self.segments(text, signs, gaps), 'parallels': passages}

    def check_answers(self, answer, gaps):
        """The true filling of each gap ('|' between gaps) -> [(signs, ids)]: real signs of the vocabulary, as many
        as the gap holds (1..max_gap_len for an unknown length)."""
        parts = [a.strip() for a in answer.split('|')]
        if len(parts) != len(gaps):
            raise InputError(f"the answer has {len(parts)} part(s) for {len(gaps)} gap(s): give one per gap, "
                             f"separated by |")
        out = []
        for n, (part, g) in enumerate(zip(parts, gaps)):
            where = f"the answer for gap {n + 1} ({part!r})"
            if not part:
                raise InputError(f"{where} is empty: give the signs of every gap, e.g. e-li|be-li₂")
            signs = [t for t, _ in parse_atf_line(part)]
            if g.length and len(signs) != g.length:
                raise InputError(f"{where} has {len(signs)} sign(s) for a gap of {g.length}: give exactly {g.length}")
            if not g.length and not 1 <= len(signs) <= self.max_gap_len:
                raise InputError(f"{where} has {len(signs)} sign(s); a gap of unknown length is tried with "
                                 f"1..{self.max_gap_len} signs")
            bad = [t for t in signs if t in self.specials or t in (GAP, GAPN) or t not in self.tok.stoi]
            if bad:
                raise InputError(f"{where}: {excerpt(bad[0])} is not a sign of the vocabulary of this model's data, "
                                 f"so it cannot be ranked")
            out.append((signs, [self.tok.stoi[t] for t in signs]))
        return out

    def _context_matches(self, og, ids, g, sp, flags):
        """Exact matches of the gap's context in train; their fillings join the candidates (source 'parallel')."""
        lengths = [g.length] if g.length else range(1, self.max_gap_len + 1)
        end = g.start + (g.length or 1)
        m = context_matches(self.data_dir, ids[max(0, g.start - 3):g.start], ids[end:end + 3], lengths, self.n_lead)
        og['context_matches'] = None
        if not m:
            return
        itos = self.tok.itos
        left = [j for j in range(max(0, g.start - 3), g.start) if ids[j] >= self.n_lead]
        left = left[len(left) - len(m['left']):]
        right = [j for j in range(end, min(len(ids), end + 3)) if ids[j] >= self.n_lead][:len(m['right'])]
        side = lambda js: render([itos[ids[j]] for j in js], [flags[j] for j in js], sp)  # noqa: E731  (the line's words)
        og['context_matches'] = {
            'left': [itos[s] for s in m['left']], 'right': [itos[s] for s in m['right']],
            'left_atf': side(left), 'right_atf': side(right),
            'fillings': [{'signs': [itos[s] for s in f], 'atf': join_signs([itos[s] for s in f], sp), 'count': c}
                         for f, c in m['fillings']],
            'examples': [{'doc': d, 'offset': o, 'signs': [itos[s] for s in f], 'atf': join_signs([itos[s] for s in f], sp)}
                         for d, o, f in m['examples']]}
        have = {tuple(c['signs']) for c in og['candidates']}
        for f, c in m['fillings']:  # what the corpus puts in this gap, offered beside the scorer's candidates
            signs = [itos[s] for s in f]
            if tuple(signs) in have or (g.length and len(f) != g.length):
                continue
            lp, sc = self.joint(ids, g.start, g.length, f)
            og['candidates'].append({'signs': signs, 'atf': join_signs(signs, sp), 'prob': math.exp(lp), 'score': sc,
                                     'p': self.shown_p(math.exp(lp), sc, g.length), 'length': len(f),
                                     'source': f'parallel (x{c})'})
        og['candidates'].sort(key=lambda c: -c['score'])

    def render_train(self, s, e, sp, split='train'):
        """The signs of split[s:e] as an ATF line in the conventions sp."""
        d = np.memmap(os.path.join(self.data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')[s:e]
        f = np.memmap(os.path.join(self.data_dir, f'{split}.flags.bin'), dtype=np.uint8, mode='r')[s:e]
        return render([self.tok.itos[int(i)] for i in d], [int(x) for x in f], sp)

    @staticmethod
    def segments(text, signs, gaps):
        """The line cut into pieces for the page: [{'text', 'sign': token index or None, 'gap': gap number or
        None}], joined they give the line back."""
        marks = []
        for n, g in enumerate(gaps):
            if g.span:
                marks.append((g.span[0], g.span[1], None, n + 1))
        taken = [(a, b) for a, b, _, _ in marks]
        for k, s in enumerate(signs):
            if s.start is not None and not any(a <= s.start < b for a, b in taken):
                marks.append((s.start, s.end, k, None))
        for k, (a, b, i, n) in enumerate(marks):  # a determinative with its braces: {m}, {+ni}
            if i is not None and signs[i].token.startswith('{'):
                a -= 2 if text[max(0, a - 2):a] == '{+' else (1 if text[a - 1:a] == '{' else 0)
                marks[k] = (a, b + (text[b:b + 1] == '}'), i, n)
        marks.sort()
        out, at = [], 0
        for a, b, k, n in marks:
            if a < at:
                continue
            if a > at:
                out.append({'text': text[at:a], 'sign': None, 'gap': None})
            out.append({'text': text[a:b], 'sign': k, 'gap': n})
            at = b
        if at < len(text):
            out.append({'text': text[at:], 'sign': None, 'gap': None})
        return out

    # ------------------------------------------------------------------------- whole texts (sample.py --input)

    def texts(self, texts, explain=False, progress=None, spelling=Spelling()):
        """Restore every gap of edition.read_edition's texts, each gap in the context of its text (the model's
        window around it). Returns one record per gap, in file order: text id, line number, label, position
        (token index in the line), column (in the file's line), the gap as written, its length (None: unknown),
        candidates with probabilities (and saliency with explain), and for a run the editor restored (read with
        restored=True) the editor's signs as the truth with their rank and probability."""
        items, where = [], []
        for t in texts:
            ids, _ = self.ids(t.tokens)
            places = [(l, g) for l in t.lines for g in l.gaps if (g.length or 1) < self.T - 1]
            items.append((ids, [(l.at + g.start, g.length) for l, g in places]))
            where.append(places)
        found = self.search(items, progress=progress)
        records = []
        for t, (ids, _), places, res in zip(texts, items, where, found):
            for (l, g), cands in zip(places, res):  # (a run of x's as long as the model's context is left alone)
                start = l.at + g.start
                rec = {'text': t.id, 'line': l.no + 1, 'label': l.raw[:l.offset].strip(), 'position': g.start,
                       'column': l.offset + g.span[0] if g.span else None,
                       'original': l.content[g.span[0]:g.span[1]] if g.span else spell(t.tokens[start]),
                       'length': g.length, 'kind': 'editor' if g.truth else 'lost',
                       'candidates': self.candidates_of(cands, g.length, spelling), 'truth': g.truth}
                if g.truth:
                    fill = [self.tok.stoi.get(s) for s in g.truth]
                    rec['truth_atf'] = join_signs(g.truth, spelling)
                    if None in fill:  # a sign outside the vocabulary: the model cannot rank it
                        rec.update(truth_rank=None, truth_p=None)
                    else:
                        lp, sc = self.joint(ids, start, g.length, fill)
                        rec.update(truth_rank=1 + sum(c['score'] > sc for c in rec['candidates']),
                                   truth_p=math.exp(lp))
                if explain:
                    for c in rec['candidates']:
                        fill = [self.tok.stoi[s] for s in c['signs']]
                        c['saliency'] = [{'line': self._line_of(t, j), 'sign': spell(t.tokens[j], spelling), 'drop': d}
                                         for j, d in self.saliency(ids, start, g.length, fill)]
                rec['_line'], rec['_gap'] = l, g
                records.append(rec)
        return records

    @staticmethod
    def _line_of(t, j):
        """The file line number (1-based) of token j of text t (None: a `$` line's gap)."""
        for l in t.lines:
            if l.at <= j < l.at + len(l.signs):
                return l.no + 1
        return None


def top_saliency(saliency, n=5):
    """The n context signs whose hiding lowers the candidate's log-probability most."""
    return sorted(saliency, key=lambda s: -s['drop'])[:n]


def note_of(records, explain=False):
    """The `#note:` texts under one line: its gaps' best restorations with probabilities (and with explain, for
    each gap's best, the 5 signs that support it most)."""
    parts, why = [], []
    for n, r in enumerate(records, 1):
        cands = ' | '.join(f"{c['atf']} {c['p']:.3g}" for c in r['candidates'])
        if r['kind'] == 'editor':
            rank = f"rank {r['truth_rank']}" if r['truth_rank'] else 'outside the vocabulary'
            parts.append(f"gap {n} (editor: {r['truth_atf']}, {rank}): {cands}")
        else:
            parts.append(f"gap {n} ({r['original']}): {cands}")
        if explain and r['candidates']:
            c = r['candidates'][0]
            why.append(f"why gap {n} {c['atf']}: " + ', '.join(f"{s['sign']} {s['drop']:+.2f}"
                                                              for s in top_saliency(c.get('saliency', []))))
    return ['restored ' + '; '.join(parts)] + why


# ----------------------------------------------------------------------------- records written out

def public(rec):
    """A record without the references to the edition's objects (what --json and the page get)."""
    return {k: v for k, v in rec.items() if not k.startswith('_')}


def records_jsonl(records):
    import json
    return ''.join(json.dumps(public(r), ensure_ascii=False) + '\n' for r in records)


TSV_COLUMNS = ('text', 'line', 'label', 'position', 'length', 'original', 'best', 'p', 'candidates', 'truth',
               'truth_rank')


def records_tsv(records):
    """One tab-separated row per gap, with a header: the best restoration and all candidates with probabilities."""
    rows = ['\t'.join(TSV_COLUMNS)]
    for r in records:
        best = r['candidates'][0]
        rows.append('\t'.join(str(x) for x in (
            r['text'], r['line'], r['label'], r['position'], r['length'] or 'unknown', r['original'], best['atf'],
            f"{best['p']:.4g}", ' | '.join(f"{c['atf']} {c['p']:.4g}" for c in r['candidates']),
            r.get('truth_atf', ''), r.get('truth_rank') or '')))
    return '\n'.join(rows) + '\n'


def edition_out(raws, texts, records, sp, explain=False):
    """The file back with every restoration written in: each restored line's gaps filled with their best
    restoration inside brackets (edition.fill_line) and a `#note:` line under it (note_of); every other line as it
    was, byte for byte. raws None (an ORACC JSON input): each text is written as `&id` and its lines of ten words.
    Returns (text, number of gaps written into their line)."""
    from edition import fill_line, with_notes
    by_line = {}
    for rec in records:
        by_line.setdefault(id(rec['_line']), []).append(rec)
    if raws is None:
        raws = []
        for t in texts:
            raws.append(f"&{t.id.split('/')[-1]} = {t.id}\n")
            raws.append("# lines of ten words: the ORACC JSON keeps no line breaks\n")
            for l in t.lines:
                l.no = len(raws)
                raws.append(l.raw)
    lines = {l.no: l for t in texts for l in t.lines}
    parts, written = [], 0
    for no, raw in enumerate(raws):
        l = lines.get(no)
        recs = by_line.get(id(l), []) if l is not None else []
        if not recs:
            parts.append(raw)
            continue
        content, done = fill_line(l.content, [(rec['_gap'], rec['candidates'][0]['signs']) for rec in recs], sp)
        written += sum(done)
        parts.append(with_notes(raw[:l.offset] + content + raw[l.offset + len(l.content):], note_of(recs, explain)))
    return ''.join(parts), written
