"""Pretrained models by name ("pde2-50"), with or without a source checkout.

As keras.applications' `get_file` and timm's pretrained configs do, the package ships a manifest,
`pde_zoo/pretrained_manifest.json`: for every pretrained model, the files of its directory
`saved_models/<name>/` (`model.keras`, `card.json`, `history.csv`, the SavedModel under
`saved_model/`) with their sha256 and size. It is generated from `saved_models/` by
`pde-zoo manifest` (also run by `pde-zoo results` on the checkout's saved_models/), never typed;
a test fails when it does not match saved_models/.

A pretrained name is looked up, in order, in
1. `$PDE_ZOO_MODELS`, a directory laid out like saved_models/ (`<name>/model.keras`, ...);
2. the source checkout's `saved_models/` (beside the package; a wheel install has none);
3. the download cache `$PDE_ZOO_CACHE/models` (default `~/.cache/pde_zoo/models`), filled on
   demand from `$PDE_ZOO_MODELS_URL` (files at `<url>/<name>/<path>`, http(s) or file://) for the
   models in the manifest. Every downloaded file is checked against the manifest's sha256; a model
   is downloaded into a temporary directory and renamed into place once every file is verified, so
   a model directory in the cache is complete or absent.
"""

import hashlib
import json
import os
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pde_zoo.cache import CACHE_ENV, cache_dir

MODELS_ENV = "PDE_ZOO_MODELS"
URL_ENV = "PDE_ZOO_MODELS_URL"
# The raw files URL of the repository's saved_models/ (e.g.
# "https://raw.githubusercontent.com/OWNER/REPO/TAG/saved_models"); none is published yet.
DEFAULT_MODELS_URL = None
MANIFEST_PATH = Path(__file__).with_name("pretrained_manifest.json")
CHECKOUT_MODELS = Path(__file__).resolve().parent.parent / "saved_models"
MODEL_FILES = ("model.keras", "card.json", "history.csv")  # plus every file under saved_model/
SAVED_MODEL_DIR = "saved_model"
MANIFEST_COMMAND = "pde-zoo manifest"
_STAMP = ".manifest-files.json"  # in a cached model: the manifest entry it was verified against
_TIMEOUT_S = 60
_STALE_TMP_S = 24 * 3600


class PretrainedNotFoundError(ValueError):
    """A pretrained name found nowhere (or published but with no URL to download it from)."""


class ChecksumMismatchError(ValueError):
    """A downloaded file whose sha256 differs from the manifest's."""


class DownloadError(OSError):
    """A file of a pretrained model could not be downloaded (HTTP error, unreachable host)."""


def is_model_dir(path):
    """A pretrained model directory: one holding card.json and model.keras."""
    return (Path(path) / "card.json").is_file() and (Path(path) / "model.keras").is_file()


def model_files(model_dir):
    """The files of a model directory that the manifest lists, as sorted relative POSIX paths."""
    model_dir = Path(model_dir)
    files = [name for name in MODEL_FILES if (model_dir / name).is_file()]
    saved = model_dir / SAVED_MODEL_DIR
    if saved.is_dir():
        files += [p.relative_to(model_dir).as_posix() for p in saved.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sorted(files)


def build_manifest(models_dir=None):
    """The manifest of every model directory under `models_dir` (default the checkout's saved_models/)."""
    models_dir = Path(models_dir or CHECKOUT_MODELS)
    if not models_dir.is_dir():
        raise FileNotFoundError(f"{models_dir} is not a directory; the manifest is generated from a source checkout's saved_models/.")
    models = {model_dir.name: {"files": build_manifest_entry(model_dir)} for model_dir in sorted(p for p in models_dir.iterdir() if is_model_dir(p))}
    return {"_generated": f"by `{MANIFEST_COMMAND}` from saved_models/; do not edit", "models": models}


def write_manifest(models_dir=None, path=None):
    """Regenerate the manifest (default `pde_zoo/pretrained_manifest.json`) from `models_dir`; returns it."""
    from pde_zoo.io_utils import atomic_write_json

    manifest = build_manifest(models_dir)
    atomic_write_json(path or MANIFEST_PATH, manifest)
    return manifest


def read_manifest(path=None):
    """The shipped manifest as a dict (`{"models": {}}` when the file is absent)."""
    path = Path(path or MANIFEST_PATH)
    return json.loads(path.read_text()) if path.is_file() else {"models": {}}


def manifest_differences(models_dir=None, path=None):
    """How the manifest differs from `models_dir`, one line per model; empty when it matches."""
    shipped, actual = read_manifest(path)["models"], build_manifest(models_dir)["models"]
    lines = []
    for name in sorted(set(shipped) | set(actual)):
        if name not in actual:
            lines.append(f"{name}: in the manifest, not in saved_models/")
        elif name not in shipped:
            lines.append(f"{name}: in saved_models/, not in the manifest")
        elif shipped[name] != actual[name]:
            a, b = shipped[name]["files"], actual[name]["files"]
            changed = sorted(rel for rel in set(a) | set(b) if a.get(rel) != b.get(rel))
            lines.append(f"{name}: files differ: {', '.join(changed)}")
    return lines


def cache_models_dir():
    """The download cache of pretrained models: `$PDE_ZOO_CACHE/models` (default ~/.cache/pde_zoo/models)."""
    return cache_dir() / "models"


def models_url():
    """The base URL pretrained models are downloaded from (`$PDE_ZOO_MODELS_URL`), or None."""
    return os.environ.get(URL_ENV) or DEFAULT_MODELS_URL


def _local_dirs():
    """(description, directory) for the two local places, in lookup order."""
    places = []
    if os.environ.get(MODELS_ENV):
        places.append((f"${MODELS_ENV}", Path(os.environ[MODELS_ENV])))
    places.append(("the source checkout's saved_models/", CHECKOUT_MODELS))
    return places


def _names_in(directory):
    return sorted(p.name for p in directory.iterdir() if is_model_dir(p)) if directory.is_dir() else []


def list_pretrained():
    """Sorted names of the pretrained models: those on this machine and those in the manifest."""
    names = set(read_manifest()["models"])
    for _, directory in _local_dirs():
        names.update(_names_in(directory))
    return sorted(names)


def resolve(name, download=True):
    """The directory of pretrained model `name` (holding model.keras, card.json, ...), downloading
    it into the cache when it is in the manifest and nowhere on this machine.

    Raises:
        PretrainedNotFoundError: found nowhere (the message names every place and variable).
        ChecksumMismatchError: a downloaded file differs from the manifest (nothing is cached).
        DownloadError: a file could not be downloaded (nothing is cached).
    """
    entry = read_manifest()["models"].get(name)
    for _, directory in _local_dirs():
        if is_model_dir(directory / name):
            if entry is not None and directory == CHECKOUT_MODELS:
                verify_files(directory / name, entry)
            return directory / name
    cached = cache_models_dir() / name
    if entry is None:
        raise PretrainedNotFoundError(f"Unknown model {name!r}: not a file or directory, and not a pretrained name. " + _where_we_looked())
    if _is_current(cached, entry):
        return cached
    url = models_url()
    if url is None or not download:
        raise PretrainedNotFoundError(
            f"Pretrained model {name!r} is in the package's manifest but not on this machine, and there is no "
            f"URL to download it from: set {URL_ENV} to a base URL under which {name}/model.keras is found (the raw "
            f"files of the repository's saved_models/, a release, or a file:// directory), or set {MODELS_ENV} to a "
            f"directory holding {name}/. " + _where_we_looked()
        )
    return _download(name, entry, url, cache_models_dir())


_VERIFIED = {}  # model directory -> the (path, size, mtime) of its files when they last matched


def verify_files(model_dir, entry):
    """Check every file of a shipped model directory against its manifest `entry` (sha256);
    ChecksumMismatchError naming the first file that differs or is missing."""
    from pde_zoo.data import sha256_file

    model_dir = Path(model_dir)
    stamp = [(rel, *((model_dir / rel).stat()[6:9:2] if (model_dir / rel).is_file() else ())) for rel in sorted(entry["files"])]
    if _VERIFIED.get(model_dir) == stamp:
        return
    for rel, info in sorted(entry["files"].items()):
        path = model_dir / rel
        if not path.is_file() or sha256_file(path) != info["sha256"]:
            raise ChecksumMismatchError(
                f"{path} {'is missing' if not path.is_file() else 'does not match its sha256 in ' + str(MANIFEST_PATH)}: the pretrained "
                f"model {model_dir.name} is refused. Restore it (git checkout -- {model_dir}), or, if you retrained it on purpose, "
                f"regenerate the manifest with `{MANIFEST_COMMAND}`."
            )
    _VERIFIED[model_dir] = stamp


def pretrained_config(name):
    """The preset of pretrained model `name`: what it is and how it was made.

    Returns a dict with `model` (registry name), `depth`, `options`, `recipe_name`, `recipe`,
    `data`, `files` ({path: {sha256, size}}), `metrics` (test / validation accuracy, epochs,
    params) and `card` (the whole card). `pde_zoo.build(cfg["model"], depth=cfg["depth"],
    **cfg["options"])` builds the architecture `pde_zoo.load(name)` loads.
    """
    from pde_zoo.cards import read_card

    directory = resolve(name)
    card = read_card(directory / "card.json")
    entry = read_manifest()["models"].get(name)
    files = entry["files"] if entry else build_manifest_entry(directory)
    metrics = {k: card[k] for k in ("test_accuracy", "test_loss", "val_accuracy", "epochs_run", "params", "nfe_forward", "nfe_backward")}
    return {
        "name": name, "model": card["name"], "depth": card["depth"], "options": card["options"], "recipe_name": card["recipe_name"],
        "recipe": card["recipe"], "data": card["data"], "files": files, "metrics": metrics, "card": card,
    }


def build_manifest_entry(model_dir):
    """{relative path: {sha256, size}} of the files of a model directory."""
    from pde_zoo.data import sha256_file

    model_dir = Path(model_dir)
    return {rel: {"sha256": sha256_file(model_dir / rel), "size": (model_dir / rel).stat().st_size} for rel in model_files(model_dir)}


def _where_we_looked():
    def contents(directory):
        return (", ".join(_names_in(directory)) or "no models") if directory.is_dir() else "absent"

    env, url = os.environ.get(MODELS_ENV), models_url()
    checkout = contents(CHECKOUT_MODELS) if CHECKOUT_MODELS.is_dir() else "absent (not a source checkout)"
    return "\n".join([
        "Pretrained names are looked up in:",
        f"  1. ${MODELS_ENV}: " + (f"{env}: {contents(Path(env))}" if env else "not set (a directory laid out like saved_models/: <name>/model.keras, card.json, ...)"),
        f"  2. the source checkout's saved_models/ {CHECKOUT_MODELS}: {checkout}",
        f"  3. the download cache ${CACHE_ENV}/models ({cache_models_dir()}), filled from ${URL_ENV} "
        f"({url or 'not set'}) with the models of the package's manifest",
        f"Available pretrained models: {', '.join(list_pretrained()) or 'none'}.",
    ])


def _is_current(model_dir, entry):
    """A cached model verified against this manifest entry, with every file still there."""
    try:
        if json.loads((model_dir / _STAMP).read_text()) != entry["files"]:
            return False
    except (OSError, ValueError):
        return False
    return all((model_dir / rel).is_file() and (model_dir / rel).stat().st_size == info["size"] for rel, info in entry["files"].items())


def _fetch(url, dest):
    """Stream `url` into `dest`; returns (sha256 hex, bytes written)."""
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, open(dest, "wb") as f:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                f.write(chunk)
                size += len(chunk)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"Could not download {url}: HTTP {err.code} {err.reason}. Check ${URL_ENV}.") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"Could not download {url}: {reason}. Check ${URL_ENV} and the network.") from err
    return digest.hexdigest(), size


def _download(name, entry, base_url, cache):
    """Download every file of `name` into a temporary directory of `cache`, verify each against the
    manifest, then rename the directory to `cache/name`. On any error nothing is left behind."""
    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(cache)
    files = entry["files"]
    megabytes = sum(info["size"] for info in files.values()) / 1e6
    print(f"pde_zoo: downloading pretrained model {name} ({len(files)} files, {megabytes:.1f} MB) from {base_url} into {cache}", file=sys.stderr)
    tmp = cache / f".tmp-{name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for rel, info in sorted(files.items()):
            url = f"{base_url.rstrip('/')}/{urllib.parse.quote(name)}/{urllib.parse.quote(rel)}"
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            actual, size = _fetch(url, dest)
            if actual != info["sha256"]:
                raise ChecksumMismatchError(
                    f"Downloaded file {name}/{rel} (from {url}) does not match the package's manifest: sha256 expected "
                    f"{info['sha256']}, got {actual} ({size} bytes, expected {info['size']}). Nothing was cached. "
                    f"${URL_ENV} must serve the models this version of pde_zoo was released with."
                )
        (tmp / _STAMP).write_text(json.dumps(files, sort_keys=True))
        target = cache / name
        if target.exists():  # stale (an older manifest) or incomplete by hand: swap it out
            old = cache / f".old-{name}-{secrets.token_hex(4)}"
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _is_current(target, entry):  # not another process that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _remove_stale_temporaries(cache):
    """Remove what a killed download left (`.tmp-*`, `.old-*` older than a day)."""
    for path in [*cache.glob(".tmp-*"), *cache.glob(".old-*")]:
        try:
            if time.time() - path.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
