"""Pretrained names outside a source checkout: the shipped manifest, the lookup order, downloads
from a base URL verified by sha256 (a local HTTP server on loopback), and a wheel install."""

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import build_wheel_venv

import pde_zoo
from pde_zoo import pretrained

ROOT = Path(__file__).resolve().parent.parent
SAVED = ROOT / "saved_models"
NAME = "pde2-5"


@contextmanager
def serve(directory):
    """An HTTP server on 127.0.0.1 serving `directory`; yields (base URL, list of requested paths)."""
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def no_local_models(tmp_path, monkeypatch):
    """No $PDE_ZOO_MODELS, no source checkout, an empty cache: only a download can find a model.
    Returns the cache directory of pretrained models."""
    from pde_zoo.layers import _native

    _native.stencil_ops()  # the op library is cached under $PDE_ZOO_CACHE: load it before moving that
    monkeypatch.delenv(pretrained.MODELS_ENV, raising=False)
    monkeypatch.delenv(pretrained.URL_ENV, raising=False)
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(pretrained, "CHECKOUT_MODELS", tmp_path / "not-a-checkout" / "saved_models")
    return tmp_path / "cache" / "models"


def _served_copy(tmp_path, change=None):
    """A copy of saved_models/NAME to serve, with `change(model_dir)` applied."""
    served = tmp_path / "served"
    shutil.copytree(SAVED / NAME, served / NAME)
    if change:
        change(served / NAME)
    return served


def test_manifest_matches_saved_models():
    stale = pretrained.manifest_differences(SAVED)
    assert not stale, f"pde_zoo/pretrained_manifest.json is stale; run `{pretrained.MANIFEST_COMMAND}`:\n" + "\n".join(stale)
    entry = pretrained.read_manifest()["models"][NAME]["files"]
    assert {"model.keras", "card.json", "history.csv", "saved_model/saved_model.pb"} <= set(entry)
    assert any(rel.startswith("saved_model/variables/") for rel in entry)


def test_manifest_command_writes_what_check_accepts(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(SAVED / NAME, models / NAME)
    (models / NAME / "logs").mkdir()  # not a shipped file
    (models / NAME / "logs" / "events").write_text("x")
    path = tmp_path / "manifest.json"
    manifest = pretrained.write_manifest(models, path)
    assert list(manifest["models"]) == [NAME] and "logs/events" not in manifest["models"][NAME]["files"]
    assert pretrained.manifest_differences(models, path) == []
    (models / NAME / "history.csv").write_text("retrained\n")
    assert pretrained.manifest_differences(models, path) == [f"{NAME}: files differ: history.csv"]


def test_download_verifies_caches_and_predicts(no_local_models, monkeypatch):
    cache = no_local_models
    with serve(SAVED) as (url, requests):
        monkeypatch.setenv(pretrained.URL_ENV, url)
        model = pde_zoo.load(NAME)
        entry = pretrained.read_manifest()["models"][NAME]["files"]
        assert len(requests) == len(entry)
        assert pretrained.resolve(NAME) == cache / NAME and len(requests) == len(entry)  # cached: no request
        for rel, info in entry.items():
            assert hashlib.sha256((cache / NAME / rel).read_bytes()).hexdigest() == info["sha256"]
        assert sorted(p.name for p in cache.iterdir()) == [NAME]
        x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
        reference = pde_zoo.load(SAVED / NAME / "model.keras")
        np.testing.assert_allclose(model.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-6)
        assert pde_zoo.cards.read_card(NAME)["name"] == "pde2"

        (cache / NAME / "history.csv").unlink()  # an incomplete cache entry is downloaded again
        assert pretrained.resolve(NAME) == cache / NAME and (cache / NAME / "history.csv").is_file()
        assert len(requests) == 2 * len(entry)


def test_file_url(no_local_models, monkeypatch):
    monkeypatch.setenv(pretrained.URL_ENV, SAVED.as_uri())
    assert pretrained.resolve("mlp-0") == no_local_models / "mlp-0"
    assert pretrained.manifest_differences(no_local_models) == [f"{n}: in the manifest, not in saved_models/" for n in pretrained.list_pretrained() if n != "mlp-0"]


def _flip_a_byte(model_dir):
    data = bytearray((model_dir / "model.keras").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model_dir / "model.keras").write_bytes(bytes(data))


def test_corrupted_download_is_an_error_and_caches_nothing(no_local_models, tmp_path, monkeypatch):
    cache = no_local_models
    expected = pretrained.read_manifest()["models"][NAME]["files"]["model.keras"]["sha256"]
    served = _served_copy(tmp_path, _flip_a_byte)
    actual = hashlib.sha256((served / NAME / "model.keras").read_bytes()).hexdigest()
    with serve(served) as (url, _):
        monkeypatch.setenv(pretrained.URL_ENV, url)
        with pytest.raises(pretrained.ChecksumMismatchError, match=rf"{NAME}/model.keras.*expected {expected}, got {actual}"):
            pde_zoo.load(NAME)
    assert list(cache.iterdir()) == []  # card.json and history.csv came first: gone with the rest


def test_missing_file_on_the_server_caches_nothing(no_local_models, tmp_path, monkeypatch):
    cache = no_local_models
    served = _served_copy(tmp_path, lambda d: (d / "saved_model" / "saved_model.pb").unlink())
    with serve(served) as (url, _):
        monkeypatch.setenv(pretrained.URL_ENV, url)
        with pytest.raises(pretrained.DownloadError, match=rf"{url}/{NAME}/saved_model/saved_model.pb: HTTP 404"):
            pde_zoo.load(NAME)
    assert list(cache.iterdir()) == []


def test_models_env_comes_first(no_local_models, tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    shutil.copytree(SAVED / NAME, mine / NAME)
    monkeypatch.setenv(pretrained.MODELS_ENV, str(mine))
    monkeypatch.setattr(pretrained, "CHECKOUT_MODELS", SAVED)
    assert pretrained.resolve(NAME) == mine / NAME
    assert pretrained.resolve("pde2-50") == SAVED / "pde2-50"


def test_not_found_names_every_place(no_local_models, tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.MODELS_ENV, str(tmp_path / "mine"))
    with pytest.raises(pretrained.PretrainedNotFoundError) as info:
        pde_zoo.load("pde9-1")
    message = str(info.value)
    for needed in ("Unknown model 'pde9-1'", "$PDE_ZOO_MODELS", str(tmp_path / "mine"), "source checkout's saved_models/",
                   "not a source checkout", "$PDE_ZOO_CACHE/models", str(no_local_models), "$PDE_ZOO_MODELS_URL (not set)",
                   "Available pretrained models: " + ", ".join(sorted(pretrained.read_manifest()["models"]))):
        assert needed in message, message


def test_published_model_without_url_says_how_to_set_it(no_local_models):
    with pytest.raises(pretrained.PretrainedNotFoundError, match=f"{NAME!r} is in the package's manifest.*set PDE_ZOO_MODELS_URL"):
        pretrained.resolve(NAME)


def test_wheel_install_downloads_verifies_and_predicts(tmp_path):
    """From a wheel in a fresh venv, run from outside the checkout: a corrupted server is refused
    (nothing cached), a good one downloads pde2-5 and it predicts, an unknown name names the places."""
    python = build_wheel_venv(tmp_path)
    served_bad = _served_copy(tmp_path, _flip_a_byte)
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        """
        import json, os, sys
        from pathlib import Path
        import numpy as np
        import pde_zoo
        from pde_zoo import pretrained
        cache = Path(os.environ["PDE_ZOO_CACHE"]) / "models"
        out = {"file": pde_zoo.__file__, "checkout": str(pretrained.CHECKOUT_MODELS)}
        os.environ["PDE_ZOO_MODELS_URL"] = sys.argv[1]
        try:
            pde_zoo.load("pde2-5")
        except pretrained.ChecksumMismatchError as err:
            out["corrupt"] = str(err)
        out["cache_after_corrupt"] = sorted(p.name for p in cache.iterdir())
        os.environ["PDE_ZOO_MODELS_URL"] = sys.argv[2]
        out["probs"] = pde_zoo.load("pde2-5").predict(np.load("x.npy"), verbose=0).tolist()
        out["cache"] = sorted(p.name for p in cache.iterdir())
        try:
            pde_zoo.load("pde2-51")
        except ValueError as err:
            out["not_found"] = str(err)
        print("RESULT " + json.dumps(out))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", pretrained.MODELS_ENV, pretrained.URL_ENV)}
    # PDE_ZOO_NATIVE=0: standard TF ops (same numbers), no compile of the op library into the empty cache.
    env.update(PDE_ZOO_CACHE=str(tmp_path / "cache"), PDE_ZOO_NATIVE="0", no_proxy="127.0.0.1,localhost", TF_CPP_MIN_LOG_LEVEL="3")
    with serve(served_bad) as (bad_url, _), serve(SAVED) as (good_url, _):
        result = subprocess.run([str(python), "-c", script, bad_url, good_url], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert Path(out["file"]).is_relative_to(tmp_path / "venv") and not Path(out["checkout"]).is_dir()
    assert "pde2-5/model.keras" in out["corrupt"] and "expected" in out["corrupt"]
    assert out["cache_after_corrupt"] == [] and out["cache"] == [NAME]
    reference = pde_zoo.load(SAVED / NAME / "model.keras").predict(x, verbose=0)
    np.testing.assert_allclose(np.array(out["probs"]), reference, atol=1e-5)
    for needed in ("$PDE_ZOO_MODELS: not set", "not a source checkout", "$PDE_ZOO_CACHE/models", good_url):
        assert needed in out["not_found"], out["not_found"]


def test_a_shipped_file_that_fails_its_sha256_is_refused(tmp_path, monkeypatch):
    """A checkout's preset is verified against the manifest: a changed or missing file is refused, named."""
    checkout = tmp_path / "saved_models"
    shutil.copytree(SAVED / "mlp-0", checkout / "mlp-0")
    monkeypatch.setattr(pretrained, "CHECKOUT_MODELS", checkout)
    monkeypatch.delenv(pretrained.MODELS_ENV, raising=False)
    assert pde_zoo.load("mlp-0").name == "mlp-0"
    card = checkout / "mlp-0" / "card.json"
    card.write_text(card.read_text().replace('"seed": 0', '"seed": 1'))
    for call in (lambda: pde_zoo.load("mlp-0"), lambda: pde_zoo.pretrained_config("mlp-0"), lambda: pde_zoo.cards.read_card("mlp-0")):
        with pytest.raises(pretrained.ChecksumMismatchError, match=r"mlp-0/card.json does not match its sha256 .* is refused"):
            call()
    shutil.copy(SAVED / "mlp-0" / "card.json", card)
    (checkout / "mlp-0" / "saved_model" / "fingerprint.pb").unlink()
    with pytest.raises(pretrained.ChecksumMismatchError, match=r"mlp-0/saved_model/fingerprint.pb is missing"):
        pde_zoo.load("mlp-0")
    shutil.copy(SAVED / "mlp-0" / "saved_model" / "fingerprint.pb", checkout / "mlp-0" / "saved_model")
    (checkout / "mlp-0" / "model.keras").write_bytes(b"truncated")
    with pytest.raises(pretrained.ChecksumMismatchError, match=r"mlp-0/model.keras does not match its sha256"):
        pde_zoo.load("mlp-0")
