"""Verify DVC's cache by rehashing it, and restore what does not match from the remote.

DVC 3 trusts its cache: `dvc status`, `dvc checkout` and `dvc pull` all pass over an
object whose bytes no longer match its name. This rehashes every object (its md5 is its
name), removes the corrupted ones and fetches them again from the remote.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from finetune.core.errors import UserError
from finetune.core.files import file_digest

log = logging.getLogger(__name__)


class CacheError(UserError, RuntimeError):
    """Corrupted objects could not be restored; the message says how to rebuild them."""


def cache_objects_dir(repo: Path) -> Path:
    """Where DVC keeps this repository's objects (files/md5 under the cache, which `dvc cache dir` may move)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        return Path(dvc.cache.local.path)


def corrupted_objects(objects: Path) -> list[Path]:
    """Objects under ``objects`` (DVC 3 layout: ab/cdef..., .dir for folders) not matching their md5."""
    bad = []
    for path in sorted(objects.glob("*/*")):
        name = (path.parent.name + path.name).removesuffix(".dir")
        if path.is_file() and not path.name.endswith(".tmp") and file_digest(path, "md5") != name:
            bad.append(path)
    return bad


def verify_cache(repo: Path, restore: bool = True) -> list[Path]:
    """Remove corrupted objects and, if ``restore``, fetch them again from the default remote."""
    objects = cache_objects_dir(repo)
    log.info("rehashing DVC's cache in %s", objects)
    bad = corrupted_objects(objects)
    for path in bad:
        log.warning("corrupted cache object removed: %s", path)
        path.unlink()
    if bad and restore:
        result = subprocess.run(["dvc", "fetch"], cwd=repo, capture_output=True, text=True)
        if result.returncode != 0:
            raise CacheError(f"removed {len(bad)} corrupted objects, but `dvc fetch` could not restore them "
                               f"from the remote:\n{result.stderr.strip()}\nRun `dvc repro` to rebuild them")
        still_missing = [p for p in bad if not p.exists()]
        if still_missing:
            raise CacheError(f"{len(still_missing)} corrupted objects are not on the remote either: "
                               "run `dvc repro` to rebuild them")
    return bad
