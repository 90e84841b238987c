"""
A local web page over a trained restorer (docs/restoring.md, Restoring as a scholar works).

    python serve.py --out_dir=out-akkadian [--port=8000] [--host=127.0.0.1] [--parallels=5]

Loads the run once (the model, the count tables, the product's fitted weights) and serves one self-contained page
on http://127.0.0.1:8000 (no font, script or style from the internet: the page works offline). Paste a line of ATF
with gaps (x one lost sign, ... or [...] a gap of unknown length), or upload an ATF text, and see each gap's ranked
restorations with probability bars, the line with the best restoration, how much each context sign supports the
chosen restoration (occlusion saliency, shaded over the line), the parallel passages of the train split with
their document ids, and the rank of the true filling when you type one.

Standard library only (http.server): the page is one HTML document with its script inline, the API is two POST
routes taking JSON, and one restoration runs at a time (a lock), so a web framework would add a dependency and no
capability. The server binds to 127.0.0.1 unless --host says otherwise, serves only the fixed routes below and
never opens a path named in a request. Bad input (an empty or unbalanced line, more than --max_body bytes, signs
outside the vocabulary, a text with no gap) gets a message on the page and an HTTP 4xx, never a traceback.

    GET  /            the page
    GET  /api/info    the run: scorer, weights, vocabulary size, limits
    POST /api/line    {"line": ATF line, "answer": "e-li|be-li2", "unknown": "error"|"unk"} -> restorer.Restorer.line
    POST /api/text    {"atf": a whole ATF text} -> the restored ATF and one record per gap (sample.py --input)
"""
import json
import os
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from configurator import configure

# ----------------------------------------------------------------------------- defaults
out_dir = 'out-akkadian'
ckpt_name = 'ckpt.pt'
data_dir = ''                 # default: the data the run was trained on
use_ema = True
device = 'cpu'
host = '127.0.0.1'            # localhost only; --host=0.0.0.0 serves the network (only where that is wanted)
port = 8000                   # 0: any free port (printed)
scorer = 'restore'
beam = 20
max_gap_len = 10
candidates = 5
parallels = 5                 # train passages shown beside a line (0: none)
max_body = 65536              # bytes of one request (a line, or an uploaded ATF text)
max_line = 2000               # characters of one pasted line
max_text_gaps = 200           # gaps of one uploaded text (more: sample.py --input)
num_threads = 1               # torch CPU threads
# -----------------------------------------------------------------------------


class Refused(Exception):
    """A request answered with an HTTP 4xx and a message for the page."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


class App:
    """The loaded run and what the routes do with it; one restoration at a time."""

    def __init__(self, restorer, run_name, opts):
        self.r, self.run_name, self.opts = restorer, run_name, opts
        self.lock = threading.Lock()

    def info(self):
        r = self.r
        return {'run': self.run_name, 'scorer': r.scorer, 'description': r.describe(), 'lengths': r.lengths_rule(),
                'weights': r.info['weights'], 'vocab_size': len(r.tok.itos) - r.n_lead, 'iter': r.ckpt['iter_num'],
                'block_size': r.T, 'max_gap_len': r.max_gap_len, 'max_line': self.opts['max_line'],
                'max_body': self.opts['max_body'], 'max_text_gaps': self.opts['max_text_gaps']}

    def line(self, req):
        from restorer import InputError, UnknownSigns
        line = req.get('line')
        if not isinstance(line, str):
            raise Refused(400, 'send {"line": "an ATF line with gaps"}')
        if len(line) > self.opts['max_line']:
            raise Refused(400, f"a line of {len(line):,} characters: paste one line (at most "
                               f"{self.opts['max_line']:,}), or upload a whole text as an ATF file")
        answer = req.get('answer') or ''
        unknown = req.get('unknown', 'error')
        if not isinstance(answer, str) or unknown not in ('error', 'unk'):
            raise Refused(400, 'answer must be text and unknown "error" or "unk"')
        with self.lock:
            try:
                res = self.r.line(line.strip(), answer=answer.strip(), parallels=self.opts['parallels'],
                                  explain=True, unknown=unknown)
                return {**res, 'max_gap_len': self.r.max_gap_len}
            except InputError as e:
                raise Refused(422 if isinstance(e, UnknownSigns) else 400, str(e)) from None

    def text(self, req):
        from edition import Spelling, read_edition
        from restorer import edition_out, public
        atf = req.get('atf')
        if not isinstance(atf, str) or not atf.strip():
            raise Refused(400, 'the text is empty: upload an ATF file (&-lines, numbered lines with gaps)')
        sp = Spelling.of(atf)
        raws, texts = read_edition(atf)
        n = sum(len(l.gaps) for t in texts for l in t.lines)
        if not any(t.lines for t in texts):
            raise Refused(400, "no transliteration line found: an ATF text has numbered lines such as "
                               "'1. a-na [x x] be-li₂-ia'")
        if not n:
            raise Refused(400, 'the text has no gap to restore (no x, ... or [...] in its Akkadian lines)')
        if n > self.opts['max_text_gaps']:
            raise Refused(400, f"the text has {n} gaps; the page restores at most {self.opts['max_text_gaps']}: "
                               f"use python sample.py --input=FILE for long texts")
        with self.lock:
            t0 = time.time()
            records = self.r.texts(texts, spelling=sp)
            out, written = edition_out(raws, texts, records, sp)
        unknown = sorted({s for t in texts for s in self.r.ids(t.tokens)[1]})
        return {'atf': out, 'gaps': [public(r) for r in records], 'written': written, 'texts': len(texts),
                'unknown_signs': unknown, 'seconds': time.time() - t0}


class Handler(BaseHTTPRequestHandler):
    server_version = 'restore-page'
    app = None  # set by serve()

    def send(self, status, body, kind='application/json; charset=utf-8', close=False):
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode('utf-8')
        self.send_response(status)
        self.send_header('Content-Type', kind)
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('Content-Security-Policy', "default-src 'none'; script-src 'unsafe-inline'; "
                                                    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
        if close:
            self.send_header('Connection', 'close')
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = urlsplit(self.path).path
        if path in ('/', '/index.html'):
            self.send(200, PAGE.encode('utf-8'), 'text/html; charset=utf-8')
        elif path == '/api/info':
            self.send(200, self.app.info())
        else:
            self.send(404, {'error': f'no page {path}: open / for the restoration page'})

    def do_POST(self):
        path = urlsplit(self.path).path
        routes = {'/api/line': self.app.line, '/api/text': self.app.text}
        try:
            if path not in routes:
                raise Refused(404, f'no route {path}: POST /api/line or /api/text')
            size = self.headers.get('Content-Length')
            if size is None or not size.isdigit():
                raise Refused(411, 'send the request with a Content-Length')
            if int(size) > self.app.opts['max_body']:
                raise Refused(413, f"{int(size):,} bytes is more than this page takes ({self.app.opts['max_body']:,}): "
                                   f"paste one line, or restore long texts with python sample.py --input=FILE")
            try:
                req = json.loads(self.rfile.read(int(size)).decode('utf-8'))
            except (UnicodeDecodeError, ValueError):
                raise Refused(400, 'the request is not JSON text in UTF-8') from None
            if not isinstance(req, dict):
                raise Refused(400, 'send a JSON object')
            self.send(200, routes[path](req))
        except Refused as e:
            self.send(e.status, {'error': e.message}, close=e.status in (411, 413))
        except Exception:  # a bug, not the user's input: the page says so in one line, the log has the details
            traceback.print_exc(file=sys.stderr)
            self.send(500, {'error': 'the restorer failed on this input (an error of the program, logged by the '
                                     'server); please report it with the line you sent'})

    def do_PUT(self):
        self.send(405, {'error': 'use GET / or POST /api/line, /api/text'})

    do_DELETE = do_PATCH = do_PUT

    def log_message(self, fmt, *args):
        print(f"{self.address_string()} {fmt % args}", file=sys.stderr)


def serve(app, host='127.0.0.1', port=8000):
    """A server for app (not started): ThreadingHTTPServer bound to host:port."""
    handler = type('BoundHandler', (Handler,), {'app': app})
    return ThreadingHTTPServer((host, port), handler)


# ----------------------------------------------------------------------------- the page (self-contained)

PAGE = r'''<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Restoring Akkadian: gaps, candidates and why</title>
<style>
:root { --ink:#1f1d1a; --muted:#6b655c; --rule:#ddd6ca; --paper:#fbf9f5; --card:#fff; --accent:#7a4a12;
        --bar:#b07a3b; --lost:#f1e7d6; --pos:176,96,30; --neg:48,98,160; }
* { box-sizing:border-box; }
body { margin:0; background:var(--paper); color:var(--ink); font:15px/1.5 Georgia, "Times New Roman", serif; }
header { padding:18px 32px 12px; border-bottom:1px solid var(--rule); background:var(--card); }
header h1 { margin:0; font-size:21px; font-weight:normal; letter-spacing:.2px; }
header .run { color:var(--muted); font-size:13px; margin-top:3px; font-family:system-ui, sans-serif; }
main { max-width:1080px; margin:0 auto; padding:20px 32px 48px; }
section { background:var(--card); border:1px solid var(--rule); border-radius:6px; padding:16px 20px; margin-bottom:16px; }
h2 { font-size:15px; margin:0 0 10px; font-weight:normal; text-transform:uppercase; letter-spacing:1px; color:var(--muted);
     font-family:system-ui, sans-serif; }
label { font-family:system-ui, sans-serif; font-size:13px; color:var(--muted); }
textarea, input[type=text] { width:100%; font:17px/1.45 "DejaVu Sans", "Noto Sans", sans-serif; padding:8px 10px;
     border:1px solid #c9c0b1; border-radius:4px; background:#fffefc; }
textarea { height:62px; resize:vertical; }
.row { display:flex; gap:14px; align-items:flex-end; flex-wrap:wrap; margin-top:10px; }
.row > div { flex:1; min-width:220px; }
button { font:14px system-ui, sans-serif; padding:8px 18px; border-radius:4px; border:1px solid var(--accent);
     background:var(--accent); color:#fff; cursor:pointer; }
button.secondary { background:#fff; color:var(--accent); }
button:disabled { opacity:.5; cursor:wait; }
.hint { font:12.5px/1.5 system-ui, sans-serif; color:var(--muted); margin-top:6px; }
#error { display:none; border:1px solid #c9a3a3; background:#fbf0ef; color:#7a1f1f; padding:10px 14px; border-radius:4px;
     margin-bottom:16px; font-family:system-ui, sans-serif; font-size:14px; }
.atf { font:19px/2.1 "DejaVu Sans", "Noto Sans", sans-serif; }
.atf span.sign { border-radius:3px; padding:1px 1px; }
.atf span.gap { background:var(--lost); outline:1px dashed #b99a6a; border-radius:3px; padding:1px 3px; cursor:pointer; }
.atf span.gap.selected { outline:2px solid var(--accent); }
.atf .restored { color:var(--accent); font-weight:bold; }
.legend { font:12.5px system-ui, sans-serif; color:var(--muted); margin-top:6px; display:flex; gap:16px; align-items:center; }
.swatch { display:inline-block; width:28px; height:12px; border-radius:2px; vertical-align:middle; margin-right:4px; }
.gaps { display:grid; grid-template-columns:repeat(auto-fill, minmax(320px, 1fr)); gap:14px; }
.gap-card { border:1px solid var(--rule); border-radius:5px; padding:10px 12px; }
.gap-card h3 { margin:0 0 6px; font:600 13px system-ui, sans-serif; color:var(--ink); }
.gap-card h3 .orig { font:15px "DejaVu Sans", sans-serif; color:var(--muted); font-weight:normal; }
table { border-collapse:collapse; width:100%; }
td { padding:3px 4px; vertical-align:middle; }
tr.cand { cursor:pointer; }
tr.cand:hover td { background:#f7f2ea; }
tr.cand.selected td { background:#f1e7d6; }
td.rank { width:22px; color:var(--muted); font:12px system-ui, sans-serif; text-align:right; }
td.cand-atf { font:16px "DejaVu Sans", sans-serif; white-space:nowrap; }
td.barcell { width:42%; }
.bar { height:10px; background:var(--bar); border-radius:2px; min-width:1px; }
td.cand-p { width:74px; white-space:nowrap; text-align:right; font:12.5px ui-monospace, "DejaVu Sans Mono", monospace; color:var(--ink); }
td.src { font:11px system-ui, sans-serif; color:var(--muted); white-space:nowrap; }
.answer { margin-top:6px; font:13px system-ui, sans-serif; }
.answer b { color:var(--accent); }
.why { margin-top:8px; font:12.5px system-ui, sans-serif; color:var(--muted); }
ol.parallels { margin:0; padding-left:22px; }
ol.parallels li { margin:4px 0; }
.doc { font:12.5px ui-monospace, "DejaVu Sans Mono", monospace; color:var(--accent); margin-right:8px; }
.cos { font:12px system-ui, sans-serif; color:var(--muted); margin-right:8px; }
.ptext { font:15px "DejaVu Sans", sans-serif; }
pre { white-space:pre-wrap; font:14px/1.5 "DejaVu Sans Mono", monospace; background:#fffefc; border:1px solid var(--rule);
      padding:10px; border-radius:4px; max-height:420px; overflow:auto; }
.muted { color:var(--muted); }
footer { font:12px system-ui, sans-serif; color:var(--muted); text-align:center; margin-top:24px; }
</style></head>
<body>
<header><h1>Restoring damaged Akkadian lines</h1><div class="run" id="run">loading the run…</div></header>
<main>
<section>
  <h2>A line</h2>
  <textarea id="line-input" spellcheck="false" placeholder="e.g. a-na LUGAL be-li₂-ia ARAD-ka {m}aš-šur-[x x] lu DI-mu a-na LUGAL [...]"></textarea>
  <div class="hint">ATF as you write it: <b>x</b> one lost sign, <b>...</b> or <b>[...]</b> a gap of unknown length;
    determinatives in braces ({d}, {m}, {ki}); ša₂ or ša2.</div>
  <div class="row">
    <div><label for="answer-input">True filling, if you know it (one per gap, | between)</label>
      <input type="text" id="answer-input" spellcheck="false" placeholder="e.g. PAP-AŠ|be-li₂"></div>
    <div style="flex:0 0 auto"><label><input type="checkbox" id="unk-input"> read unknown signs as [UNK]</label></div>
    <div style="flex:0 0 auto"><button id="restore-btn">Restore</button></div>
  </div>
</section>
<section>
  <h2>Or a whole text</h2>
  <div class="row" style="margin-top:0">
    <div><input type="file" id="file-input" accept=".atf,.txt,text/plain"></div>
    <div style="flex:0 0 auto"><button class="secondary" id="upload-btn">Restore the text</button></div>
  </div>
  <div class="hint" id="limits"></div>
</section>
<div id="error" role="alert"></div>
<div id="result" style="display:none">
  <section>
    <h2>The line, and what supports the selected restoration</h2>
    <div class="atf" id="line-view"></div>
    <div class="hint" id="unknown-note"></div>
    <div class="legend"><span><span class="swatch" style="background:rgba(var(--pos),.55)"></span>hiding this sign lowers the
      candidate's probability (it supports it)</span><span><span class="swatch" style="background:rgba(var(--neg),.45)"></span>
      hiding it raises the probability</span><span id="why-scale"></span></div>
  </section>
  <section>
    <h2>Best restoration</h2>
    <div class="atf" id="best-line"></div>
  </section>
  <section>
    <h2>Gaps</h2>
    <div class="gaps" id="gaps"></div>
  </section>
  <section id="parallels-section">
    <h2>Parallel passages (train split)</h2>
    <ol class="parallels" id="parallels"></ol>
  </section>
</div>
<div id="text-result" style="display:none">
  <section><h2>The restored text</h2><div class="hint" id="text-summary"></div><pre id="text-atf"></pre></section>
  <section><h2>Its gaps</h2><table id="text-gaps"></table></section>
</div>
<footer>Runs on this machine only; nothing is sent elsewhere.</footer>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }
function fmtP(p) { return p >= 0.001 ? p.toFixed(3) : p.toExponential(1); }
let state = null, selected = {gap: 0, cand: 0};

function showError(msg) { const e = $('error'); e.textContent = msg; e.style.display = 'block'; }
function clearError() { $('error').style.display = 'none'; }

async function post(url, body) {
  const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  let data; try { data = await r.json(); } catch (e) { data = {error: 'the server answered ' + r.status}; }
  if (!r.ok) throw new Error(data.error || ('HTTP ' + r.status));
  return data;
}

async function restoreLine() {
  clearError(); $('restore-btn').disabled = true;
  try {
    state = await post('/api/line', {line: $('line-input').value, answer: $('answer-input').value,
                                    unknown: $('unk-input').checked ? 'unk' : 'error'});
    selected = {gap: 0, cand: 0};
    $('text-result').style.display = 'none';
    draw();
  } catch (e) { showError(e.message); $('result').style.display = 'none'; }
  finally { $('restore-btn').disabled = false; }
}

function draw() {
  $('result').style.display = 'block';
  $('unknown-note').textContent = state.unknown_signs.length ?
    'read as unknown signs ([UNK]), outside the vocabulary: ' + state.unknown_signs.join(' ') : '';
  drawLine(); drawBest(); drawGaps(); drawParallels();
}

function drawLine() {
  const view = $('line-view'); view.textContent = '';
  const g = state.gaps[selected.gap], c = g.candidates[selected.cand];
  const drops = {}; let maxAbs = 1e-9;
  for (const s of (c.saliency || [])) { drops[s.index] = s.drop; maxAbs = Math.max(maxAbs, Math.abs(s.drop)); }
  for (const seg of state.segments) {
    if (seg.gap) {
      const sp = el('span', 'gap' + (seg.gap - 1 === selected.gap ? ' selected' : ''), seg.text);
      sp.title = 'gap ' + seg.gap; sp.dataset.gap = seg.gap;
      sp.onclick = () => { selected = {gap: seg.gap - 1, cand: 0}; draw(); };
      view.appendChild(sp);
    } else if (seg.sign !== null) {
      const sp = el('span', 'sign ctx-sign', seg.text); const d = drops[seg.sign];
      sp.dataset.index = seg.sign;
      if (d !== undefined) {
        sp.dataset.drop = d.toFixed(4);
        const a = Math.min(1, Math.abs(d) / maxAbs);
        sp.style.background = d >= 0 ? `rgba(var(--pos),${(0.75 * a).toFixed(3)})` : `rgba(var(--neg),${(0.6 * a).toFixed(3)})`;
        sp.title = `hiding this sign changes log p(${c.atf}) by ${(-d).toFixed(2)}`;
      }
      view.appendChild(sp);
    } else { view.appendChild(document.createTextNode(seg.text)); }
  }
  const top = [...(c.saliency || [])].sort((a, b) => b.drop - a.drop).slice(0, 5);
  $('why-scale').textContent = 'gap ' + (selected.gap + 1) + ', ' + c.atf + ': strongest ' +
    (top.map(s => s.sign + ' ' + (s.drop >= 0 ? '+' : '') + s.drop.toFixed(2)).join(', ') || 'none');
}

function drawBest() {
  const b = $('best-line'); b.textContent = '';
  for (const seg of state.best_segments) b.appendChild(seg.gap ? el('span', 'restored', seg.text) : document.createTextNode(seg.text));
}

function drawGaps() {
  const box = $('gaps'); box.textContent = '';
  state.gaps.forEach((g, gi) => {
    const card = el('div', 'gap-card'); card.dataset.gap = g.gap;
    const h = el('h3', null, 'Gap ' + g.gap + ' · ' + (g.length ? g.length + ' sign' + (g.length > 1 ? 's' : '') : 'length unknown') + '  ');
    h.appendChild(el('span', 'orig', g.original)); card.appendChild(h);
    const t = el('table'); const pmax = Math.max(...g.candidates.map(c => c.p), 1e-12);
    g.candidates.forEach((c, ci) => {
      const tr = el('tr', 'cand' + (gi === selected.gap && ci === selected.cand ? ' selected' : ''));
      tr.appendChild(el('td', 'rank', String(ci + 1)));
      tr.appendChild(el('td', 'cand-atf', c.atf));
      const bc = el('td', 'barcell'); const bar = el('div', 'bar'); bar.style.width = (100 * c.p / pmax).toFixed(1) + '%';
      bc.appendChild(bar); tr.appendChild(bc);
      tr.appendChild(el('td', 'cand-p', fmtP(c.p)));
      tr.appendChild(el('td', 'src', c.source === state.scorer ? '' : c.source));
      tr.onclick = () => { selected = {gap: gi, cand: ci}; draw(); };
      t.appendChild(tr);
    });
    card.appendChild(t);
    card.appendChild(el('div', 'why', g.length ? 'p: probability of these signs in the gap, given the line' :
      'p: probability of this length and these signs, given the line (lengths 1–' + state.max_gap_len + ' tried)'));
    if (g.answer) {
      const a = el('div', 'answer');
      a.append('your answer ', el('b', null, g.answer.atf), g.answer.in_candidates ? ': rank ' + g.answer.rank :
        ': rank ' + g.answer.rank + ' (not among the candidates above)', ', p = ' + fmtP(g.answer.p));
      a.id = 'answer-' + g.gap; card.appendChild(a);
    }
    if (g.context_matches) {
      const m = g.context_matches;
      card.appendChild(el('div', 'why', 'same context in train (' + (m.left_atf || '^') + ' … ' + (m.right_atf || '$') + '): ' +
        m.examples.map(e => e.atf + ' in ' + e.doc).join('; ')));
    }
    box.appendChild(card);
  });
}

function drawParallels() {
  const ol = $('parallels'); ol.textContent = '';
  $('parallels-section').style.display = state.parallels.length ? 'block' : 'none';
  for (const p of state.parallels) {
    const li = el('li'); li.appendChild(el('span', 'doc', p.doc)); li.appendChild(el('span', 'cos', 'cos ' + p.cosine.toFixed(3)));
    li.appendChild(el('span', 'ptext', p.text)); ol.appendChild(li);
  }
}

async function restoreText() {
  clearError(); const f = $('file-input').files[0];
  if (!f) { showError('choose an ATF file first'); return; }
  $('upload-btn').disabled = true;
  try {
    const atf = await f.text();
    const res = await post('/api/text', {atf: atf});
    $('result').style.display = 'none'; $('text-result').style.display = 'block';
    $('text-summary').textContent = res.gaps.length + ' gaps in ' + res.texts + ' text(s), ' + res.written +
      ' written into their lines (the rest in the #note: lines); ' + res.seconds.toFixed(1) + ' s' +
      (res.unknown_signs.length ? '; signs outside the vocabulary, read as [UNK]: ' + res.unknown_signs.join(' ') : '');
    $('text-atf').textContent = res.atf;
    const t = $('text-gaps'); t.textContent = '';
    for (const g of res.gaps) {
      const tr = el('tr'); tr.appendChild(el('td', 'rank', g.line + ''));
      tr.appendChild(el('td', 'muted', g.label)); tr.appendChild(el('td', 'cand-atf', g.original));
      tr.appendChild(el('td', 'cand-atf', g.candidates.map(c => c.atf + ' ' + fmtP(c.p)).join(' | ')));
      t.appendChild(tr);
    }
  } catch (e) { showError(e.message); $('text-result').style.display = 'none'; }
  finally { $('upload-btn').disabled = false; }
}

$('restore-btn').onclick = restoreLine;
$('upload-btn').onclick = restoreText;
$('line-input').addEventListener('keydown', (e) => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); restoreLine(); } });
fetch('/api/info').then(r => r.json()).then(i => {
  $('run').textContent = i.run + ' · iteration ' + i.iter + ' · ' + i.vocab_size + ' signs · scorer ' + i.description;
  $('limits').textContent = 'At most ' + i.max_text_gaps + ' gaps and ' + Math.round(i.max_body / 1024) +
    ' KB per text here; longer texts: python sample.py --out_dir=... --input=FILE.';
}).catch(() => { $('run').textContent = 'the server does not answer'; });
</script>
</body></html>
'''


def main():
    import torch
    from checkpoint import load_run
    from corpus import die, load_meta
    from restorer import InputError, Restorer
    torch.set_num_threads(num_threads)
    model, ckpt, ddir = load_run(out_dir, ckpt_name, device, data_dir, False, use_ema)
    if ckpt['model_args']['arch'] not in ('encoder', 'hf') or load_meta(ddir).get('dataset') != 'akkadian':
        die(f"{out_dir} is not an Akkadian restorer (an encoder trained on prepare/akkadian.py's data)")
    try:
        r = Restorer(model, ckpt, ddir, cache_dir=out_dir, ckpt_path=os.path.join(out_dir, ckpt_name), scorer=scorer,
                     beam=beam, max_gap_len=max_gap_len, candidates=candidates)
    except InputError as e:
        die(str(e))
    app = App(r, os.path.basename(os.path.abspath(out_dir)),
              {'parallels': parallels, 'max_body': max_body, 'max_line': max_line, 'max_text_gaps': max_text_gaps})
    try:
        httpd = serve(app, host, port)
    except OSError as e:
        die(f"cannot listen on {host}:{port} ({e.strerror}): choose another --port")
    print(f"serving {out_dir} on http://{host}:{httpd.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == '__main__':
    configure(globals())
    main()
