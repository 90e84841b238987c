"""serve.py, the local restoration page: started as a user starts it (python serve.py, any free port) on a tiny run;
HTTP-level tests of every bad input (a clear message and a 4xx, never a traceback), of what the page needs and of
the server's boundaries (localhost, fixed routes, no path read from a request); and one test that drives the page
in a real headless Chromium through Selenium: a line with two gaps submitted, the candidates, the best line and the
saliency read from the rendered page. That test skips, saying why, only where no Chromium and chromedriver are
installed (.ci/run installs them)."""
import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import REPO, train_env
from test_restoration import akk_ckpt  # noqa: F401,F811  (a pytest fixture: the tiny Akkadian run)

LINE = 'a-na [x x] be-li₂-ia ... LUGAL'


@pytest.fixture(scope='module')
def server(akk_ckpt):  # noqa: F811
    p = subprocess.Popen([sys.executable, 'serve.py', f'--out_dir={akk_ckpt}', '--port=0', '--beam=3', '--max_gap_len=3',
                          '--candidates=3', '--parallels=2', '--max_body=20000', '--max_text_gaps=8'],
                         cwd=REPO, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        m = re.search(r'http://([\d.]+):(\d+)/', line)
        assert m, (line, p.stderr.read() if p.poll() is not None else '')
        yield {'url': f'http://127.0.0.1:{m.group(2)}', 'host': m.group(1), 'proc': p}
    finally:
        p.terminate()
        p.wait(timeout=30)


def call(server, path, body=None, method=None, raw=None, headers=None):
    data = raw if raw is not None else (json.dumps(body).encode('utf-8') if body is not None else None)
    req = urllib.request.Request(server['url'] + path, data=data, method=method or ('POST' if data is not None else 'GET'),
                                 headers=headers or {'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def error_of(status_body):
    status, body, _ = status_body
    return status, json.loads(body)['error']


def test_binds_to_localhost_and_serves_one_self_contained_page(server):
    assert server['host'] == '127.0.0.1'
    status, page, headers = call(server, '/')
    page = page.decode('utf-8')
    assert status == 200 and headers['Content-Type'].startswith('text/html')
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page)       # no script, style or font from outside
    assert '@import' not in page and 'url(' not in page
    assert "connect-src 'self'" in headers['Content-Security-Policy']
    info = json.loads(call(server, '/api/info')[1])
    assert info['scorer'] == 'restore' and info['max_gap_len'] == 3 and info['vocab_size'] > 10


def test_a_line_is_restored_with_everything_the_page_draws(server):
    status, body, _ = call(server, '/api/line', {'line': LINE, 'answer': 'ša₂-a|a'})
    assert status == 200
    res = json.loads(body)
    assert [g['length'] for g in res['gaps']] == [2, None] and [g['original'] for g in res['gaps']] == ['x x', '...']
    assert all(len(g['candidates']) >= 3 and g['candidates'][0]['saliency'] for g in res['gaps'])
    assert res['best'].startswith('a-na [') and '] be-li₂-ia [' in res['best'] and res['best'].endswith('] LUGAL')
    assert ''.join(s['text'] for s in res['segments']) == LINE and ''.join(s['text'] for s in res['best_segments']) == res['best']
    assert [s['text'] for s in res['segments'] if s['gap']] == ['x x', '...']
    assert all(g['answer']['rank'] >= 1 for g in res['gaps']) and len(res['parallels']) == 2
    assert all(p['doc'].startswith('P') for p in res['parallels'])


@pytest.mark.parametrize('body,status,says', [
    ({'line': 'a-na [x x be-li₂-ia'}, 400, 'unbalanced brackets: a [ (the last at character 6) is never closed by ]'),
    ({'line': 'a-na x] be-li₂-ia'}, 400, 'unbalanced brackets: the ] at character 7 closes no ['),
    ({'line': '   '}, 400, 'the line is empty'),
    ({'line': 'a-na LUGAL be-li₂-ia'}, 400, 'no gap to restore'),
    ({'line': 'a-na [x x]\nbe-li₂-ia x'}, 400, 'more than one line'),
    ({'line': 'a-na qqqz [x x] zzwz'}, 422, '2 sign(s) not in the vocabulary of this model: qqqz zzwz'),
    ({'line': LINE, 'answer': 'a'}, 400, 'the answer has 1 part(s) for 2 gap(s)'),
    ({'line': LINE, 'answer': 'a-a|qqqz'}, 400, "'qqqz' is not a sign of the vocabulary of this model's data"),
    ({'line': 'a ' * 1500 + 'x'}, 400, 'paste one line (at most 2,000)'),
    ({'line': 5}, 400, 'send {"line"'),
    ({'atf': ''}, 400, 'the text is empty'),
    ({'atf': '&P1 = a\n1. a-na LUGAL\n'}, 400, 'the text has no gap to restore'),
    ({'atf': 'hello world'}, 400, 'no transliteration line found'),
    ({'atf': '&P1 = a\n' + ''.join(f'{k}. a-na x\n' for k in range(1, 10))}, 400, 'the page restores at most 8'),
])
def test_bad_input_gets_a_message_and_a_4xx(server, body, status, says):
    got, msg = error_of(call(server, '/api/text' if 'atf' in body else '/api/line', body))
    assert got == status and says in msg and 'Traceback' not in msg


def test_unknown_signs_can_be_read_as_unk_when_asked(server):
    res = json.loads(call(server, '/api/line', {'line': 'a-na qqqz [x x]', 'unknown': 'unk'})[1])
    assert res['unknown_signs'] == ['qqqz'] and res['gaps'][0]['candidates']


def test_bodies_routes_and_methods_that_are_refused(server):
    big = json.dumps({'line': 'a-na x ' * 15000}).encode('utf-8')             # ~100 KB
    status, msg = error_of(call(server, '/api/line', raw=big))
    assert status == 413 and 'more than this page takes' in msg
    assert error_of(call(server, '/api/line', raw=b'\xff\xfe not json'))[0] == 400
    assert error_of(call(server, '/api/line', raw=b'[1, 2]')) == (400, 'send a JSON object')
    for path in ('/../../etc/passwd', '/serve.py', '/api/../serve.py', '/%2e%2e/etc/passwd'):
        status, body, _ = call(server, path)
        assert status == 404 and b'root:' not in body and b'import' not in body
    assert call(server, '/api/line', {'line': LINE}, method='PUT')[0] == 405
    assert error_of(call(server, '/nowhere', {'line': LINE}))[0] == 404
    assert server['proc'].poll() is None                                        # still serving after all of it


def test_an_uploaded_text_comes_back_restored(server):
    atf = '&P7 = letter\n1. a-na LUGAL [x x]\n#note: mine\n2. ARAD-ka ...\n'
    res = json.loads(call(server, '/api/text', {'atf': atf})[1])
    assert [(g['line'], g['original']) for g in res['gaps']] == [(2, 'x x'), (4, '...')] and res['written'] == 2
    out = res['atf'].splitlines()
    assert out[0] == '&P7 = letter' and out[1].startswith('1. a-na LUGAL [') and out[2].startswith('#note: restored gap 1')
    assert out[3] == '#note: mine' and out[4].startswith('2. ARAD-ka [')


# ----------------------------------------------------------------------------- a real browser

def browser():
    """(chromium, chromedriver) paths, or None."""
    chrome = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)
    driver = shutil.which('chromedriver')
    return (chrome, driver) if chrome and driver else None


def test_the_page_in_a_headless_browser(server):
    found = browser()
    if found is None:
        pytest.skip('no Chromium with chromedriver on this machine (apt-get install chromium chromium-driver; .ci/run '
                    'installs them)')
    webdriver = pytest.importorskip('selenium.webdriver', reason='selenium is not installed (pip install -r requirements.txt)')
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1200,1400'):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(found[1]), options=opts)
    try:
        d.get(server['url'] + '/')
        d.find_element(By.ID, 'line-input').send_keys(LINE)
        d.find_element(By.ID, 'answer-input').send_keys('ša₂-a|a')
        d.find_element(By.ID, 'restore-btn').click()
        WebDriverWait(d, 120).until(EC.visibility_of_element_located((By.ID, 'best-line')))
        want = json.loads(call(server, '/api/line', {'line': LINE, 'answer': 'ša₂-a|a'})[1])
        # the candidates of each gap, in order, with their probabilities
        cards = d.find_elements(By.CSS_SELECTOR, '#gaps .gap-card')
        assert len(cards) == 2
        for card, g in zip(cards, want['gaps']):
            rows = card.find_elements(By.CSS_SELECTOR, 'tr.cand')
            assert [r.find_element(By.CSS_SELECTOR, '.cand-atf').text for r in rows] == [c['atf'] for c in g['candidates']]
            shown = [float(r.find_element(By.CSS_SELECTOR, '.cand-p').text) for r in rows]
            assert shown == pytest.approx([c['p'] for c in g['candidates']], rel=0.06, abs=1e-4)
            widths = [r.find_element(By.CSS_SELECTOR, '.bar').size['width'] for r in rows]
            assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1] >= 0
            assert 'rank' in card.find_element(By.CSS_SELECTOR, '.answer').text
        # the best line, restorations marked
        assert d.find_element(By.ID, 'best-line').text == want['best']
        assert [e.text for e in d.find_elements(By.CSS_SELECTOR, '#best-line .restored')] == \
            [s['text'] for s in want['best_segments'] if s['gap']]
        # the saliency of the selected candidate (gap 1, best), shaded over the context signs
        sal = {s['index']: s['drop'] for s in want['gaps'][0]['candidates'][0]['saliency']}
        signs = d.find_elements(By.CSS_SELECTOR, '#line-view .ctx-sign')
        drops = {int(e.get_attribute('data-index')): float(e.get_attribute('data-drop')) for e in signs
                 if e.get_attribute('data-drop') is not None}
        assert drops.keys() == sal.keys() and all(abs(drops[k] - sal[k]) < 1e-3 for k in sal)
        strongest = max(sal, key=lambda k: abs(sal[k]))
        shade = next(e for e in signs if int(e.get_attribute('data-index')) == strongest).value_of_css_property('background-color')
        assert shade.startswith('rgba(') and float(shade.rstrip(')').split(',')[-1]) > 0.3
        # another gap selected: its candidate's saliency is drawn
        d.find_elements(By.CSS_SELECTOR, '#gaps .gap-card')[1].find_elements(By.CSS_SELECTOR, 'tr.cand')[1].click()
        sal2 = {s['index']: s['drop'] for s in want['gaps'][1]['candidates'][1]['saliency']}
        drops2 = {int(e.get_attribute('data-index')): float(e.get_attribute('data-drop'))
                  for e in d.find_elements(By.CSS_SELECTOR, '#line-view .ctx-sign') if e.get_attribute('data-drop')}
        assert drops2.keys() == sal2.keys() and all(abs(drops2[k] - sal2[k]) < 1e-3 for k in sal2)
        # bad input: the message is on the page
        box = d.find_element(By.ID, 'line-input')
        box.clear()
        box.send_keys('a-na [x x be-li₂-ia')
        d.find_element(By.ID, 'answer-input').clear()
        d.find_element(By.ID, 'restore-btn').click()
        WebDriverWait(d, 60).until(EC.visibility_of_element_located((By.ID, 'error')))
        assert 'unbalanced brackets' in d.find_element(By.ID, 'error').text
    finally:
        d.quit()
