"""`pde-zoo explore`: the JSON API and server (bad input, loopback only, no file outside its
assets), and the page in a real browser (Playwright driving the Debian `chromium` package):
no console errors, no request leaving loopback, ψ under the slider equal to the model's own
intermediate states, a drawing changes the prediction, a screenshot per view (docs/explore/).

The browser tests skip, saying why, when playwright or /usr/bin/chromium is missing
(`pip install -e .[test]` and `bash scripts/install_browser.sh` install them).
"""

import base64
import http.client
import json
import os
import shutil
import re
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, build_wheel_venv

from pde_zoo.explore import add_parser
from pde_zoo.explore.server import make_server, serve_in_thread, static_file

CHROMIUM = os.environ.get("PDE_ZOO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Screenshots and timings go to a scratch directory, or, to regenerate the docs' copies, to
# PDE_ZOO_EXPLORE_SHOTS=docs/explore (docs/explore.md says how).
DOCS = Path(os.environ.get("PDE_ZOO_EXPLORE_SHOTS") or tempfile.mkdtemp(prefix="pde_zoo-explore-"))
TIMED = ("pde2-50", "pdenet-16")


def _get(url, data=None, headers=None):
    request = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _decode(b64):
    return np.frombuffer(base64.b64decode(b64), dtype="<f4")


@pytest.fixture(scope="module")
def server():
    log = []
    srv, url = serve_in_thread(port=0, log=log)  # every preset offered, loaded on first use
    yield srv, url, log
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def mnist_test():
    from pde_zoo import data

    images, labels, _ = data.load_arrays("test")
    return np.asarray(images).reshape(-1, 28, 28), labels


# ------------------------------------------------------------------------------ server and API


def test_cli_parser_and_bad_host():
    import argparse

    parser = argparse.ArgumentParser(prog="pde-zoo")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["explore", "pde2-50", "--port", "0", "--no-browser"])
    assert args.models == ["pde2-50"] and args.port == 0 and args.no_browser and args.host == "127.0.0.1"
    with pytest.raises(ValueError, match="not a loopback address.*--allow-remote"):
        make_server(host="0.0.0.0", port=0)
    with pytest.raises(ValueError, match=r"Unknown model\(s\) \['no-such-model'\]"):
        make_server(port=0, models=["no-such-model"])


def test_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ValueError, match=f"Port {taken.getsockname()[1]} on 127.0.0.1 is in use.*--port"):
            make_server(port=taken.getsockname()[1], models=["mlp-0"])


def test_static_files_only(server):
    _, url, _ = server
    assert static_file("/") is not None and static_file("/static/app.js") is not None
    for bad in ["/static/../views.py", "/static/..%2fviews.py", "/static/%2e%2e/server.py", "/static/.%2e/__init__.py",
                "/../../../../etc/passwd", "/static//etc/passwd", "/static/%00app.js", "/views.py", "/static/"]:
        assert static_file(bad) is None, bad
    host, port = url.split("//")[1].strip("/").split(":")
    for raw in ["/static/../views.py", "/static/..%2f..%2fcli.py", "/../../etc/passwd", "/static/%2e%2e/server.py"]:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", raw)  # sent as is, not normalised by a client
        response = conn.getresponse()
        body = response.read()
        assert response.status == 404, raw
        assert b"import" not in body and b"root:" not in body
        conn.close()


def test_api_errors_are_4xx_with_a_message(server):
    _, url, _ = server
    cases = [
        ("api/model?name=no-such-model", 404, "Unknown model 'no-such-model'"),
        ("api/block?name=pde2-5&block=6", 404, "has blocks 1..5"),
        ("api/block?name=pde2-5&block=0", 404, "has blocks 1..5"),
        ("api/block?name=pde2-5&block=x", 400, "must be an integer"),
        ("api/block?name=mlp-0&block=1", 404, "no blocks"),
        ("api/forward?name=pde2-5&index=10000", 400, "'index' must be in [0, 9999]"),
        ("api/forward?name=pde2-5&index=0&channel=x", 400, "'channel'"),
        ("api/forward?name=pde2-5", 400, "Give one input"),
        ("api/nothing", 404, "Unknown API route"),
    ]
    for path, status, message in cases:
        code, body = _get(url + path)
        assert code == status and message in body["error"], (path, code, body)
        assert "Traceback" not in body["error"]
    code, body = _get(url + "api/forward", {"name": "pde2-5", "pixels": [0.0] * 784})
    assert code == 400 and "The drawn image is empty" in body["error"]
    code, body = _get(url + "api/forward", {"name": "pde2-5", "pixels": [0.5] * 10})
    assert code == 400 and "784" in body["error"]
    code, body = _get(url + "api/models", headers={"Host": "attacker.example"})
    assert code == 403  # DNS rebinding: a loopback server answers loopback names only


def test_forward_equals_the_models_trajectory(server, mnist_test):
    import pde_zoo

    _, url, _ = server
    code, body = _get(url + "api/forward?name=pde2-5&index=3")
    assert code == 200
    image = mnist_test[0][3].astype("float32")[None, ..., None] / 255
    model = pde_zoo.load("pde2-5", compile=False)
    states = model.get_layer("blocks").trajectory(image)
    assert len(body["states"]) == len(states) == 6
    for s, psi in zip(body["states"], states):
        np.testing.assert_allclose(_decode(s["data"]).reshape(28, 28), psi[0, ..., 0], atol=1e-5)
    np.testing.assert_allclose(body["probabilities"], pde_zoo.predict(model, image)[0], atol=1e-5)
    code, phys = _get(url + "api/block?name=pde2-5&block=2")
    from pde_zoo import physics

    block = model.get_layer("blocks").blocks[1]
    np.testing.assert_allclose(phys["stencil"], physics.stencil(block), atol=1e-12)
    assert phys["channel_entry"]["max_abs_G"] == pytest.approx(physics.max_amplification(block), abs=1e-12)
    np.testing.assert_allclose(_decode(phys["propagator"]["data"]).reshape(5, 5),
                               physics.propagator(model.get_layer("blocks").blocks[:2]), atol=1e-6)


# ------------------------------------------------------------------------------ the browser


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_explore_from_a_wheel_serves_its_own_assets_offline(tmp_path):
    """`pde-zoo explore` from a wheel installed in a fresh venv, run outside the checkout: the page and
    every asset it references come from the installed package (byte for byte), and the API answers a
    drawn image (no dataset, no network)."""
    python = build_wheel_venv(tmp_path)
    installed = Path(subprocess.run([str(python), "-c", "import pde_zoo.explore as e; print(e.__file__)"], check=True,
                                    capture_output=True, text=True, cwd=tmp_path).stdout.strip()).parent
    assert installed.is_relative_to(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PDE_ZOO_MODELS=str(ROOT / "saved_models"), PDE_ZOO_CACHE=str(tmp_path / "cache"), PDE_ZOO_NATIVE="0",
               TF_CPP_MIN_LOG_LEVEL="3", no_proxy="127.0.0.1,localhost")
    proc = subprocess.Popen([str(python), "-m", "pde_zoo.cli", "explore", "mlp-0", "--no-browser", "--port", "0"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not (url := re.search(r"(http://127\.0\.0\.1:\d+/)", "".join(lines))) and len(lines) < 100:
            line = proc.stdout.readline()
            assert line, f"pde-zoo explore exited {proc.poll()}: {''.join(lines)[-2000:]}"
            lines.append(line)
        url = url.group(1)
        raw = lambda u: urllib.request.urlopen(u, timeout=120).read()  # noqa: E731
        page = raw(url).decode()
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
        assert {"/static/app.js", "/static/style.css"} <= set(assets)
        for asset in assets:
            assert raw(url.rstrip("/") + asset) == (installed / asset.lstrip("/")).read_bytes(), asset
        assert [m["name"] for m in _get(url + "api/models")[1]["models"]] == ["mlp-0"]
        pixels = np.zeros((28, 28), "float32")
        pixels[6:22, 13:15] = 1.0  # a stroke: a "1"
        status, body = _get(url + "api/forward", {"name": "mlp-0", "pixels": pixels.ravel().tolist()}, {"Content-Type": "application/json"})
        assert status == 200, body
        assert 0 <= body["prediction"] <= 9 and abs(sum(body["probabilities"]) - 1) < 1e-5
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _browser_missing():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e .[test])"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (bash scripts/install_browser.sh installs Debian's chromium)"
    return None


@pytest.fixture(scope="module")
def page(server):
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="pde-zoo-explore-chromium-")
    events = {"console_errors": [], "requests": [], "blocked": [], "page_errors": []}
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport={"width": 1420, "height": 900},
        )
        p = context.pages[0] if context.pages else context.new_page()

        def route(r):
            host = r.request.url.split("//", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
            if r.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost", "[::1]"):
                return r.continue_()
            events["blocked"].append(r.request.url)
            return r.abort()

        context.route("**/*", route)
        p.on("console", lambda m: m.type == "error" and events["console_errors"].append(m.text))
        p.on("pageerror", lambda e: events["page_errors"].append(str(e)))
        p.on("request", lambda r: events["requests"].append(r.url))
        p.set_default_timeout(90_000)
        p.events = events
        yield p
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def _wait_idle(page, state_index=None):
    page.wait_for_function("() => window.explore && explore.busy === 0 && explore.forward && explore.physics !== undefined")
    if state_index is not None:
        page.wait_for_function(f"() => explore.index === {state_index} && explore.busy === 0")


def _select(page, name, timeout=None):
    """Pick model `name`; `timeout` (ms) for a model whose first load is long (a solver's compile on a busy CPU)."""
    page.select_option("#model", name)
    page.wait_for_function(f"() => explore.model === '{name}' && explore.forward && explore.forward.model === '{name}' && explore.busy === 0",
                           timeout=timeout)


def _slide(page, i):
    page.fill("#depth-slider", str(i))
    _wait_idle(page, i)


def _timings(page, what, since):
    return [t["ms"] for t in page.evaluate("() => explore.timings")[since:] if t["what"] == what]


def _shot(page, name):
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)


def test_page_thesis_model(page, server, mnist_test):
    import pde_zoo

    _, url, _ = server
    page.goto(url)
    page.wait_for_function("() => explore.model === 'pde2-50' && explore.forward && explore.physics && explore.busy === 0")
    options = page.eval_on_selector_all("#model option", "els => els.map(e => e.value)")
    assert options == pde_zoo.list_pretrained()  # the picker holds every preset
    model = pde_zoo.load("pde2-50", compile=False)
    image = mnist_test[0][0].astype("float32")[None, ..., None] / 255
    states = model.get_layer("blocks").trajectory(image)
    assert page.evaluate("() => explore.states.length") == 51
    _slide(page, 0)
    first = np.array(page.evaluate("() => explore.shownValues()"))
    for t in (10, 37, 50):
        _slide(page, t)
        shown = np.array(page.evaluate("() => explore.shownValues()"))
        assert not np.allclose(shown, first)  # moving the slider changes ψ
        np.testing.assert_allclose(shown.reshape(28, 28), states[t][0, ..., 0], atol=1e-5)
        assert page.evaluate("() => explore.physics.block") == t
    assert page.evaluate("() => explore.forward.prediction") == int(np.argmax(pde_zoo.predict(model, image)[0]))
    _slide(page, 25)
    _shot(page, "thesis-pde2-50")
    # interaction times: a new test image (uncached forward) and a block's physics
    since = len(page.evaluate("() => explore.timings"))
    for i in range(1, 6):
        page.fill("#image-index", str(i))
        page.dispatch_event("#image-index", "change")
        page.wait_for_function(f"() => explore.forward.input.index === {i} && explore.busy === 0")
    for t in (5, 15, 30, 45):
        _slide(page, t)
    _record_timings("pde2-50", _timings(page, "forward", since), _timings(page, "block", since))


def test_page_pdenet_channels(page, server, mnist_test):
    import keras

    import pde_zoo
    from pde_zoo import physics

    _select(page, "pdenet-16")
    model = pde_zoo.load("pdenet-16", compile=False)
    index = page.evaluate("() => explore.forward.input.index")  # the test image the page shows
    image = mnist_test[0][index].astype("float32")[None, ..., None] / 255
    stage = model.get_layer("stage_2")
    psi0 = keras.Model(model.input, stage.input)(image)
    states = stage.trajectory(psi0)
    page.fill("#channel", "5")
    page.dispatch_event("#channel", "change")
    page.wait_for_function("() => explore.forward.channel === 5 && explore.busy === 0")
    labels = page.evaluate("() => explore.forward.states.map(s => [s.stage, s.step])")
    assert len(labels) == 16 + 3
    for step in (0, 3, 5):
        i = labels.index([2, step])
        _slide(page, i)
        shown = np.array(page.evaluate("() => explore.shownValues()")).reshape(14, 14)
        np.testing.assert_allclose(shown, states[step][0, ..., 5], atol=1e-5)
    assert page.evaluate("() => explore.physics.channels") == 64
    assert page.evaluate("() => explore.physics.mixing.shape") == [64, 64]
    _shot(page, "staged-pdenet-16")
    page.check("#grid-toggle")
    page.wait_for_function("() => explore.forward.channel === 'all' && explore.busy === 0")
    _slide(page, labels.index([1, 6]))
    assert page.evaluate("() => explore.shownValues().length") == 28 * 28 * 32
    _shot(page, "staged-pdenet-16-grid")
    page.uncheck("#grid-toggle")
    page.wait_for_function("() => explore.forward.channel !== 'all' && explore.busy === 0")
    since = len(page.evaluate("() => explore.timings"))
    for i in range(1, 6):
        page.fill("#image-index", str(i))
        page.dispatch_event("#image-index", "change")
        page.wait_for_function(f"() => explore.forward.input.index === {i} && explore.busy === 0")
    for t in (2, 9, 13, 17):
        _slide(page, t)
    _record_timings("pdenet-16", _timings(page, "forward", since), _timings(page, "block", since))
    # free against stable=True, side by side: the counterpart's ψ is its own model's state, block for block
    assert page.evaluate("() => explore.summary.counterpart") == "pdenet-16.stable"
    page.check("#compare-toggle")
    page.wait_for_function("() => explore.compare.forward !== null && explore.compare.physics !== null && explore.busy === 0")
    stable = pde_zoo.load("pdenet-16.stable", compile=False)
    index = page.evaluate("() => explore.forward.input.index")
    image = mnist_test[0][index].astype("float32")[None, ..., None] / 255
    stage = stable.get_layer("stage_2")
    stable_states = stage.trajectory(keras.Model(stable.input, stage.input)(image))
    channel = page.evaluate("() => explore.forward.channel")
    for step in (0, 4):
        _slide(page, labels.index([2, step]))
        page.wait_for_function("() => explore.compare.physics !== null && explore.busy === 0")
        shown = np.array(page.evaluate("() => explore.compareValues()")).reshape(14, 14)
        np.testing.assert_allclose(shown, stable_states[step][0, ..., channel], atol=1e-5)
    block = page.evaluate("() => explore.compare.physics.block")
    assert page.evaluate("() => explore.compare.physics.stability.block_max_abs_G") <= 1 + 1e-6  # the stable bound
    assert page.evaluate("() => explore.compare.physics.name") == physics.blocks_of(stable)[block - 1].name
    _shot(page, "staged-pdenet-16-free-vs-stable")
    page.uncheck("#compare-toggle")
    page.wait_for_function("() => explore.compare.forward === null && explore.busy === 0")


@pytest.mark.slow  # the adaptive solver of pde2ode-5 compiles and solves at 8 output times per segment (~45 s)
def test_page_continuous_model(page, server, mnist_test):
    import pde_zoo
    from pde_zoo.ode import odeint

    _select(page, "pde2ode-5", timeout=300_000)
    model = pde_zoo.load("pde2ode-5", compile=False)
    ode = model.get_layer("ode")
    image = mnist_test[0][5].astype("float32")[None, ..., None] / 255
    page.fill("#image-index", "5")
    page.dispatch_event("#image-index", "change")
    page.wait_for_function("() => explore.forward.input.index === 5 && explore.busy === 0")
    times = page.evaluate("() => explore.forward.states.map(s => s.time)")
    assert times[0] == 0 and times[-1] == 5
    # the solver the model uses (method, tolerances), on the model's field, over piece 1, at the page's output times
    ts = [t for t in times if t <= 1]
    ys = np.asarray(odeint(ode.field.on_segment(0.0, 1.0), image, ts, method=ode.method, rtol=ode.rtol, atol=ode.atol,
                           max_steps=ode.max_steps, compile=False))
    for k, t in enumerate(ts):
        _slide(page, times.index(t))
        shown = np.array(page.evaluate("() => explore.shownValues()")).reshape(28, 28)
        np.testing.assert_allclose(shown, ys[k][0, ..., 0], atol=1e-5)
    assert page.evaluate("() => explore.physics.block") == 1  # piece 1 under the slider
    stats = page.evaluate("() => explore.forward.ode[0]")
    assert stats["nfe"] > 0 and stats["model_forward_stats"]["nfe"] > 0
    # the accepted step sizes of the model's own solve: they tile each segment, and there are as many as
    # the model's compiled forward pass counted
    for seg in stats["segments"]:
        own = seg["own_steps"]
        assert own["starts"][0] == pytest.approx(seg["t0"], abs=1e-6)
        assert sum(own["sizes"]) == pytest.approx(seg["t1"] - seg["t0"], abs=1e-6)  # float32 times
    accepted = sum(len(seg["own_steps"]["sizes"]) for seg in stats["segments"])
    assert accepted == stats["model_forward_stats"]["steps"]
    assert page.get_attribute("#ode-info svg.step-sizes", "data-accepted") == str(accepted)
    _shot(page, "continuous-pde2ode-5")


def _stroke(page, points):
    box = page.locator("#draw-canvas").bounding_box()
    x0, y0, s = box["x"], box["y"], box["width"] / 28
    page.mouse.move(x0 + points[0][0] * s, y0 + points[0][1] * s)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x0 + x * s, y0 + y * s, steps=3)
    page.mouse.up()


def test_page_drawing_changes_the_prediction(page, server):
    import pde_zoo

    _select(page, "pde2-50")
    page.click("#tab-draw")
    page.click("#clear-drawing")
    _stroke(page, [(14, 4), (14, 14), (14, 24)])  # a "1"
    page.wait_for_function("() => explore.forward.input.source === 'drawing' && explore.busy === 0")
    one = page.evaluate("() => [explore.forward.prediction, explore.input.pixels]")
    page.click("#clear-drawing")
    ring = [(14 + 6 * np.sin(a), 14 - 8 * np.cos(a)) for a in np.linspace(0, 2 * np.pi, 24)]
    _stroke(page, ring)  # a "0"
    page.wait_for_function(f"() => explore.forward.input.sha256 && explore.busy === 0 && explore.input.pixels[14*28+14-8*28] !== undefined")
    page.wait_for_function("() => explore.busy === 0")
    zero = page.evaluate("() => [explore.forward.prediction, explore.input.pixels]")
    assert one[0] != zero[0], (one[0], zero[0])
    model = pde_zoo.load("pde2-50", compile=False)
    for prediction, pixels in (one, zero):
        image = np.asarray(pixels, "float32").reshape(1, 28, 28, 1)
        assert prediction == int(np.argmax(pde_zoo.predict(model, image)[0]))
    _shot(page, "drawing-pde2-50")


def test_page_has_no_errors_and_stays_on_loopback(page, server):
    _, url, log = server
    events = page.events
    assert events["console_errors"] == [] and events["page_errors"] == []
    assert events["blocked"] == []
    assert events["requests"] and all(r.startswith(url) or r.startswith("data:") for r in events["requests"])
    assert all(status < 500 for _, _, status, _ in log)
    _write_timings()


# ------------------------------------------------------------------------------ timings

_TIMINGS = {}


def _record_timings(name, forward_ms, block_ms):
    _TIMINGS[name] = {"forward_ms": [round(x, 1) for x in forward_ms], "block_ms": [round(x, 1) for x in block_ms]}
    print(f"\nexplore timings {name}: new test image (forward, browser round trip) median "
          f"{np.median(forward_ms):.1f} ms max {max(forward_ms):.1f} ms; block physics median {np.median(block_ms):.1f} ms "
          f"max {max(block_ms):.1f} ms")


def _write_timings():
    if not _TIMINGS:
        return
    from pde_zoo import info

    cpu = "; ".join(info.cpu())
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "timings.json").write_text(json.dumps({"cpu": cpu, "cores": os.cpu_count(), "when": time.strftime("%Y-%m-%d"),
                                                   "models": _TIMINGS}, indent=1) + "\n")
