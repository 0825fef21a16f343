"""train_all.sh on a tiny subset, the tuner, pretrained loading by name, figures."""

import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pde_zoo
from pde_zoo import figures, results, tuning

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # real training runs: train_all.sh (two models) and a tuner search


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    cmd = ["bash", str(ROOT / "scripts" / "train_all.sh"), "--models", "pde2 mlp", "--depths", "5", "--epochs", "1",
           "--train-limit", "600", "--test-limit", "200", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out, result.stdout


def test_train_all_writes_cards_and_results(tiny_sweep):
    out, log = tiny_sweep
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["mlp-0", "pde2-5"]
    for run in ("mlp-0", "pde2-5"):
        card = json.loads((out / run / "card.json").read_text())
        assert card["epochs_run"] == 1 and card["recipe"]["epochs"] == 1 and card["data"]["fit_examples"] == 600
        assert card["recipe_name"] == "thesis" and card["recipe"]["learning_rate"] == 1e-3
        assert {"model.keras", "saved_model", "history.csv", "train.log"} <= {p.name for p in (out / run).iterdir()}
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == results.RESULT_FIELDS
    assert [(r["model"], r["depth"], r["epochs"]) for r in rows] == [("mlp", "0", "1"), ("pde2", "5", "1")]
    assert all(0.0 < float(r["test_acc"]) <= 1.0 for r in rows)
    assert "sweep finished" in log


def test_train_all_skips_finished_models(tiny_sweep):
    out, _ = tiny_sweep
    before = (out / "pde2-5" / "card.json").read_text()
    cmd = ["bash", str(ROOT / "scripts" / "train_all.sh"), "--models", "pde2", "--depths", "5", "--epochs", "1",
           "--train-limit", "600", "--test-limit", "200", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "already trained" in (out / "pde2-5" / "train.log").read_text()
    assert (out / "pde2-5" / "card.json").read_text() == before


def test_pretrained_name_loads_and_unknown_lists(tiny_sweep, monkeypatch):
    out, _ = tiny_sweep
    monkeypatch.setenv("PDE_ZOO_MODELS", str(out))
    model = pde_zoo.load("pde2-5")
    assert model.name == "pde2-5"
    with pytest.raises(ValueError) as info:
        pde_zoo.load("pde2-51")
    assert f"$PDE_ZOO_MODELS: {out}: mlp-0, pde2-5\n" in str(info.value)


def test_figures_from_cards(tiny_sweep, tmp_path):
    out, _ = tiny_sweep
    for path in (figures.accuracy_vs_epoch(out, tmp_path / "a.png"), figures.accuracy_vs_depth(out, tmp_path / "b.png"),
                 figures.evolution(pde_zoo.load(out / "pde2-5"), np.zeros((28, 28, 1), np.float32), tmp_path / "c.png")):
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


def test_readme_table_is_generated(tiny_sweep, tmp_path):
    out, _ = tiny_sweep
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- results:start -->\nold\n<!-- results:end -->\n<!-- presets:start -->\n<!-- presets:end -->\ny\n")
    results.update_docs([readme], results.collect(out), out)
    text = readme.read_text()
    assert "old" not in text and "| pde2 | 5 |" in text and "**1** (recipe 50)" in text and text.endswith("y\n")
    assert "| `pde2-5` | pde2 | 5 |" in text and "| `mlp-0` | mlp | 0 |" in text
    (tmp_path / "empty.md").write_text("nothing generated here\n")
    with pytest.raises(ValueError, match="has none of the generated blocks"):
        results.update_docs([tmp_path / "empty.md"], [], out)
    with pytest.raises(ValueError, match="no generated block"):
        results.update_readme_block(tmp_path / "README.md", "performance", "t")


def test_tiny_tuner_search(tmp_path):
    result = tuning.tune("pde2", 1, max_epochs=2, train_limit=300, val_limit=200, directory=tmp_path / "tuner", overwrite=True, models_dir=tmp_path)
    assert tuning.LR_RANGE[0] <= result["learning_rate"] <= tuning.LR_RANGE[1]
    assert result["trials"] >= 2 and 0.0 <= result["best_val_accuracy"] <= 1.0
    assert tuning.tuned_learning_rate("pde2", 1, tmp_path) == result["learning_rate"]
    table = results.tuning_table(tmp_path)
    assert f"| pde2-1 | {result['learning_rate']:.2e} | {result['trials']} |" in table and "not trained" in table
    with pytest.raises(ValueError, match="run `pde-zoo tune pde1 --depth 7` first"):
        tuning.tuned_learning_rate("pde1", 7, tmp_path)
