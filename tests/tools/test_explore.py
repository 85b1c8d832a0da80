"""minigpt2/explore/: the page's numbers are the model's, a prompt cannot break out of it, it stays small, and it
works in a real browser. (The `minigpt2 explore` command line and its refusals: test_cli.py.)

The browser test drives Debian's chromium through Selenium and chromium-driver: the WebDriver API
reads console logs, moves a slider and picks from a <select> as a user does, with no protocol code here.
To refresh the README's screenshot: UPDATE_SCREENSHOT=1 python -m pytest tests/tools/test_explore.py -k browser
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT, read_page

from minigpt2 import Tokenizer
from minigpt2.explore import explore
from minigpt2.explore.page import PATTERN_LEVELS
from minigpt2.interp.attribution import direct_logit_attribution
from minigpt2.interp.sae import SAE, run_with_sae, top_features

PROMPT = "Once upon a time"
STEPS = 12
SCREENSHOT = ROOT / "docs" / "explore.png"


def write_sae(folder: Path, model, hook: str = "blocks.1.hook_resid_pre") -> Path:
    """A random standard SAE in SAELens's on-disk format, with features that fire at some positions."""
    from safetensors.torch import save_file

    d_in, d_sae = model.config.n_embd, 4 * model.config.n_embd
    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(d_sae, d_in, generator=g)
    weights = {"W_enc": W_dec.T.contiguous(), "b_enc": torch.randn(d_sae, generator=g) * 0.01, "W_dec": W_dec}
    folder.mkdir(parents=True, exist_ok=True)
    save_file({**weights, "b_dec": torch.zeros(d_in)}, folder / "sae_weights.safetensors")
    cfg = {"architecture": "standard", "d_in": d_in, "d_sae": d_sae, "metadata": {"hook_name": hook}}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture(scope="module")
def page(tiny, tmp_path_factory) -> Path:
    model, tokenizer = tiny
    folder = tmp_path_factory.mktemp("explore")
    sae = SAE.from_pretrained(write_sae(folder / "sae", model))
    path = folder / "page.html"
    explore(model, tokenizer, PROMPT, path, max_new_tokens=STEPS, model_name="tiny random checkpoint", sae=sae)
    assert path.is_file()  # output= writes the page
    return path


def test_the_pages_numbers_are_the_models(tiny, page):
    model, tokenizer = tiny
    data = read_page(page.read_text())
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    P = ids.size(1)
    expected = model.generate(ids, max_new_tokens=STEPS, eos_token_id=tokenizer.eos_token_id)[0].tolist()
    assert data["tokens"] == expected and data["prompt_len"] == P
    read = torch.tensor([expected[:-1]])
    T, L, H, K = read.size(1), model.config.n_layer, model.config.n_head, data["k"]
    with torch.no_grad():
        probs = model(read)[0, P - 1 :].softmax(dim=-1)  # [steps, V]: each step's next-token distribution
    best = probs.topk(K)

    ids_page = data["candidate_ids"].view(STEPS, K).long()
    assert torch.equal(ids_page, best.indices)
    candidates = (data["candidate_probs"].view(STEPS, K) - best.values).abs().max().item()
    picked = probs.gather(1, torch.tensor(expected[P:])[:, None])[:, 0]
    picked_deviation = (data["picked_probs"] - picked).abs().max().item()

    patterns = model.attention_patterns(read)[:, 0]  # [L, H, T, T]
    rows, cols = torch.tril_indices(T, T)
    packed = data["patterns"].view(L, H, -1).float() / PATTERN_LEVELS
    pattern_deviation = (packed - patterns[..., rows, cols]).abs().max().item()
    assert patterns.triu(1).abs().max() == 0  # what the packing leaves out is masked to zero

    lens = model.logit_lens(read)[:, 0].max(dim=-1)  # [L, T]
    assert torch.equal(data["lens_ids"].view(L, T).long(), lens.indices)
    lens_deviation = (data["lens_probs"].view(L, T) - lens.values).abs().max().item()

    attribution = data["attribution"].view(STEPS, -1)
    attribution_deviation = 0.0
    for i, token in enumerate(expected[P:]):
        dla = direct_logit_attribution(model, read[:, : P + i], token, heads=True)
        assert data["labels"] == dla.labels
        attribution_deviation = max(
            attribution_deviation, (attribution[i] - dla.contributions[:, 0]).abs().max().item()
        )
        assert abs(data["picked_logits"][i] - dla.logit[0]) < 1e-4
    total = attribution.sum(dim=1) + data["attribution_bias"]
    sums = (total - data["picked_logits"]).abs().max().item()

    print(
        f"\npage vs model: candidates {candidates:.1e}, picked {picked_deviation:.1e}, "
        f"patterns {pattern_deviation:.1e} "
        f"(stored in steps of 1/{PATTERN_LEVELS}), lens {lens_deviation:.1e}, attribution {attribution_deviation:.1e}, "
        f"pieces + bias vs logit {sums:.1e}"
    )
    assert candidates < 1e-5 and picked_deviation < 1e-5 and lens_deviation < 1e-5
    assert pattern_deviation <= 0.5 / PATTERN_LEVELS + 1e-6
    assert attribution_deviation < 1e-4 and sums < 1e-4
    assert attribution.abs().max() > 1e-2 and packed.max() > 0.1  # real numbers, not zeros
    assert data["texts"][-1] == tokenizer.decode(expected)


def test_the_sae_view_holds_the_saes_top_features(tiny, page):
    model, _ = tiny
    data = read_page(page.read_text())
    sae = SAE.from_pretrained(page.parent / "sae")
    read = torch.tensor([data["tokens"][:-1]])
    _, features = run_with_sae(model, read, sae, use_error_term=True)
    values, ids = top_features(features[0], data["sae"]["k"])
    got_ids, got_values = data["sae"]["ids"].view(ids.shape), data["sae"]["values"].view(values.shape)
    print(
        f"SAE view: {ids.size(0)} positions x top {ids.size(1)}; max difference {(got_values - values).abs().max():.1e}"
    )
    assert data["sae"]["hook"] == "blocks.1.hook_resid_pre" and values[:, 0].gt(0).all()
    assert torch.equal(got_ids, ids.to(torch.int32)) and torch.equal(got_values, values)
    plain = explore(model, tiny[1], PROMPT, max_new_tokens=2).html()
    assert '"sae"' not in read_page(plain) and '<section id="sae" hidden>' in plain
    wrong = SAE.from_pretrained(write_sae(page.parent / "wrong", model, hook="blocks.9.hook_resid_pre"))
    with pytest.raises(ValueError, match="the SAE reads blocks.9.hook_resid_pre, which this model does not have"):
        explore(model, tiny[1], PROMPT, max_new_tokens=2, sae=wrong)


def test_sampling_shows_what_the_loop_drew_from(tiny):
    model, tokenizer = tiny
    options = dict(max_new_tokens=8, do_sample=True, temperature=0.7, top_k=20, seed=3, repetition_penalty=1.3)
    exploration = explore(model, tokenizer, PROMPT, **options)
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    out = model.generate(ids, output_scores=True, eos_token_id=tokenizer.eos_token_id, **options)
    assert exploration.tokens == out.sequences[0].tolist()
    processed = torch.stack(out.scores)[:, 0].softmax(dim=-1)  # after the penalty, temperature and top-k
    best = processed.topk(exploration.candidate_ids.size(1))
    torch.testing.assert_close(exploration.candidate_probs, best.values, rtol=0, atol=1e-6)
    assert (exploration.candidate_probs[:, 20:] == 0).all()  # top-k=20 left nothing beyond the 20th
    picked = processed.gather(1, out.sequences[0, ids.size(1) :, None])[:, 0]
    torch.testing.assert_close(exploration.picked_probs, picked, rtol=0, atol=1e-6)


def test_minigpt2_explore_is_the_function(tiny):
    import minigpt2

    assert minigpt2.explore is explore and callable(minigpt2.explore)


def test_a_prompt_cannot_break_out_of_the_page(tiny):
    model, tokenizer = tiny
    prompt = "</script><script>alert(1)</script> <!-- \u2028"
    page = explore(model, tokenizer, prompt, max_new_tokens=2).html()
    assert page.count("</script>") == 2  # the data block's and page.js's own
    assert read_page(page)["prompt_text"] == tokenizer.decode(tokenizer.encode(prompt))


@pytest.mark.slow
def test_a_40_token_gpt2_medium_page_is_under_5_mb(medium, tiny_checkpoint, tmp_path):
    # the tiny checkpoint's tokenizer: its ids are the first of the medium vocabulary's
    (model, _), tokenizer = medium, Tokenizer.from_pretrained(str(tiny_checkpoint))
    size = explore(model, tokenizer, PROMPT, max_new_tokens=40, min_new_tokens=40).save(tmp_path / "page.html")
    print(f"\n40-token page, gpt2-medium shape: {size / 1e6:.2f} MB")
    assert size < 5e6


# ---- in a real browser ----


def _chromium():
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (apt install chromium chromium-driver; .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # this machine has no network: no background connections
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1600",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def test_the_page_in_a_real_browser(page, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser = _chromium()
    try:
        browser.get(page.as_uri())
        find = browser.find_element
        assert find(By.ID, "step-number").text == f"1 of {STEPS}"
        first = find(By.ID, "candidates").text
        find(By.ID, "step").send_keys(Keys.RIGHT, Keys.RIGHT, Keys.RIGHT)  # as a user moves the slider
        assert find(By.ID, "step-number").text == f"4 of {STEPS}"
        assert find(By.ID, "candidates").text != first

        heatmap = "return document.getElementById('heatmap').toDataURL()"
        mean = browser.execute_script(heatmap)
        Select(find(By.ID, "head")).select_by_value("1")
        head_1 = browser.execute_script(heatmap)
        Select(find(By.ID, "head")).select_by_value("2")
        assert len({mean, head_1, browser.execute_script(heatmap)}) == 3
        Select(find(By.ID, "layer")).select_by_value("1")
        assert browser.execute_script(heatmap) not in (mean, head_1)

        assert find(By.ID, "sae").is_displayed() and "blocks.1.hook_resid_pre" in find(By.ID, "sae").text
        features = find(By.ID, "sae-features").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "#sae-features .bar")) == 10
        find(By.ID, "step").send_keys(Keys.RIGHT)
        assert find(By.ID, "sae-features").text != features  # the next position's features
        find(By.ID, "step").send_keys(Keys.LEFT)

        lens_cells = len(browser.find_elements(By.CSS_SELECTOR, "#lens td"))
        assert lens_cells == 2 * (len(read_page(page.read_text())["tokens"]) - STEPS + 3)  # 2 layers x positions
        png = browser.get_screenshot_as_png()
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        browser.quit()
    assert errors == [], errors

    import matplotlib.image

    (tmp_path / "shot.png").write_bytes(png)
    pixels = matplotlib.image.imread(tmp_path / "shot.png")[..., :3]
    colours = torch.tensor(pixels).reshape(-1, 3).unique(dim=0).size(0)
    print(f"\nscreenshot: {pixels.shape[1]}x{pixels.shape[0]}, {colours} colours")
    assert colours > 50 and pixels.std() > 0.05  # a drawn page, not a blank one
    if os.environ.get("UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(png)
