"""`dupify models pull`'s download: files of a hub repository (`<hub>/<repo>/resolve/<revision>/
<path>`, the layout model hubs serve), streamed to disk and kept only if their sha256 matches
the hub's checksum header and any the operator gave."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

SHA256 = re.compile(r"^[0-9a-f]{64}$")
GIT_BLOB = re.compile(r"^[0-9a-f]{40}$")
# Where a hub says what a file is: the LFS object's sha256 (large files), else the ETag, which
# is that sha256 for LFS files and the git blob id (sha1 of a header and the bytes) otherwise.
CHECKSUM_HEADERS = ("X-Linked-Etag", "ETag")
TIMEOUT_S = 60
BLOCK = 1 << 20


class PullError(RuntimeError):
    """A download that did not happen or did not check out; nothing is left behind."""


def hub_url(given: str | None) -> str:
    """The hub's base URL: `--hub`, else $HF_ENDPOINT (the variable hub tools read)."""
    url = given or os.environ.get("HF_ENDPOINT")
    if not url:
        raise PullError("no hub: pass --hub <base URL> (or set HF_ENDPOINT)")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise PullError(f"--hub must be an http(s) URL, got {url!r}")
    return url.rstrip("/")


def _checksum(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """What the hub says the file is: ("sha256", hex) for a large (LFS) file, or ("git", hex),
    the git blob id of a small file kept in git itself."""
    for name in CHECKSUM_HEADERS:
        value = (headers.get(name) or "").strip().removeprefix("W/").strip('"').lower()
        if SHA256.match(value):
            return "sha256", value
        if GIT_BLOB.match(value):
            return "git", value
    return None


class _KeepChecksum(urllib.request.HTTPRedirectHandler):
    """Follows redirects (a hub sends large files from elsewhere), keeping the checksum the
    hub's own answer carried: the final answer may come without it."""

    checksum: tuple[str, str] | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if self.checksum is None:
            self.checksum = _checksum(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _safe(target: Path, name: str) -> Path:
    path = (target / name).resolve()
    if target.resolve() not in path.parents:
        raise PullError(f"{name}: not a path inside the repository")
    return path


def download_one(url: str, path: Path, expected: str | None) -> str:
    """One file to `path` (through a temporary name), returning its sha256."""
    # The scheme was checked by `hub_url`; a redirect may only lead to http(s) (urllib's rule).
    request = urllib.request.Request(url, headers={"User-Agent": "dupify-models-pull"})  # noqa: S310
    temporary = path.with_name(path.name + ".part")
    digest = hashlib.sha256()
    blob = hashlib.sha1()  # noqa: S324 - git's blob id, compared, not a security choice
    try:
        redirects = _KeepChecksum()
        opener = urllib.request.build_opener(redirects)
        with opener.open(request, timeout=TIMEOUT_S) as response:
            announced = redirects.checksum or _checksum(response.headers)
            length = response.headers.get("Content-Length")
            if announced and announced[0] == "git" and length is None:
                raise PullError(f"{url}: no Content-Length, so its git blob id cannot be checked")
            blob.update(b"blob %d\0" % int(length or 0))
            path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as stream:
                for block in iter(lambda: response.read(BLOCK), b""):
                    digest.update(block)
                    blob.update(block)
                    stream.write(block)
    except urllib.error.HTTPError as exc:
        temporary.unlink(missing_ok=True)
        raise PullError(f"{url}: the hub answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        temporary.unlink(missing_ok=True)
        raise PullError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    actual = digest.hexdigest()
    checks = [("--sha256", expected, actual)]
    if announced is not None:
        kind, value = announced
        checks.append(
            (f"the hub's {kind}", value, actual if kind == "sha256" else blob.hexdigest())
        )
    for source, wanted, found in checks:
        if wanted is not None and wanted.lower() != found:
            temporary.unlink(missing_ok=True)
            raise PullError(f"{url}: {found} does not match {source} {wanted}")
    if announced is None and expected is None:
        temporary.unlink(missing_ok=True)
        raise PullError(
            f"{url}: the hub sent no sha256 for it; pass --sha256 {path.name}=<hex> to pull it"
        )
    temporary.replace(path)
    return actual


def download_files(
    hub: str,
    repo: str,
    revision: str,
    files: Sequence[str],
    target: Path,
    expected: Mapping[str, str],
) -> dict[Path, str]:
    """Each of `files` into `target`, checked; on any failure the files of this pull so far
    are removed again."""
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo):
        raise PullError(f"{repo!r} is not a repository name (owner/name)")
    unknown = set(expected) - set(files)
    if unknown:
        raise PullError(f"--sha256 names files not pulled: {', '.join(sorted(unknown))}")
    done: dict[Path, str] = {}
    try:
        for name in files:
            path = _safe(target, name)
            quoted = urllib.parse.quote(f"{repo}/resolve/{revision}/{name}")
            done[path] = download_one(f"{hub}/{quoted}", path, expected.get(name))
    except PullError:
        for path in done:
            path.unlink(missing_ok=True)
        raise
    return done
