"""The HTML comparison report (``reporting/html.py``) on two real synthetic runs, checked as text and in a real
headless browser (Debian's chromium + chromedriver, driven by selenium, offline)."""

from __future__ import annotations

import base64
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from rich.console import Console

from ssl_pipeline import experiment
from ssl_pipeline.cli import parse_command
from ssl_pipeline.errors import DataError
from ssl_pipeline.records.results import aggregate, load_results, make_record, write_json_atomic
from ssl_pipeline.reporting.figures import write_png
from ssl_pipeline.reporting.html import build_report, resolve_runs
from ssl_pipeline.reporting.plots import plot_delta_sweep
from ssl_pipeline.scoring.projection_sample import load_projection_sample, save_projection_sample, stratified_subsample
from ssl_pipeline.scoring.projections import baseline_projection

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "pancakes.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SMALL = [
    "--seeds", "0,1", "--deltas", "1,0.5", "--data.synthetic.d", "20", "--data.synthetic.k", "3",
    "--data.synthetic.n_train", "1500", "--data.synthetic.n_val", "300", "--data.synthetic.n_test", "600",
    "--heads.r", "2", "--heads.epochs", "5", "--heads.per_delta", "[]", "--wandb.mode", "disabled",
    "--score.kmeans.nredo", "1", "--score.kmeans.niter", "20", "--score.probe.l2_grid", "[0.001]",
    "--score.baselines", "[lda,pca,random,raw]",
]


def small_run(run_dir: Path, name: str, *extra: str) -> None:
    _, cfg, _ = parse_command(["synthetic", "--config", str(CONFIG), *SMALL, "--name", name, "--run_dir", str(run_dir), *extra])
    experiment.run("synthetic", cfg, Console(quiet=True))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two runs on the same small pancakes (one with InfoNCE heads only; ``score_run`` writes each one's
    ``projections.npz``), GMM checks in the first, and the report of both."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "disabled")  # the environment wins over the config's wandb.mode
        small_run(root / "both", "both-heads")
        small_run(root / "infonce", "infonce-only", "--heads.methods", "[infonce]")
    (root / "both" / "checks").mkdir()
    checks = [
        {"statistic": "tied_vs_full_bic", "real": 1.5, "surrogate": 0.5, "gap": 1.0},
        {"statistic": "nmi_em", "real": 0.9, "surrogate": 0.95, "gap": -0.05},
    ]
    write_json_atomic(root / "both" / "checks.json", checks)
    figure = Figure(figsize=(3, 2))
    figure.subplots().plot([0, 1], [1, 0])
    write_png(figure, root / "both" / "checks" / "bic.png")
    runs = resolve_runs([str(root / "*"), str(root / "both")])
    artifacts = build_report(runs, root / "report", title="Pancakes <small> comparison")
    records = load_results(root / "both" / "results.json") + load_results(root / "infonce" / "results.json")
    return artifacts, records, root


class Elements(HTMLParser):
    """Tables (id → rows of (text, attributes) cells), figures and every src/href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, dict]]]] = {}
        self.figures: list[str] = []
        self.images: list[dict] = []
        self.links: list[str] = []
        self.table: str | None = None
        self.cell: tuple[list[str], dict] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        self.links += [attributes[a] for a in ("src", "href") if a in attributes]
        if "data-figure" in attributes:
            self.figures.append(attributes["data-figure"])
        if tag == "img":
            self.images.append(attributes)
        elif tag == "table":
            self.table = attributes["id"]
            self.tables[self.table] = []
        elif tag == "tr" and self.table:
            self.tables[self.table].append([])
        elif tag in ("td", "th"):
            self.cell = ([], attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.tables[self.table][-1].append(("".join(self.cell[0]), self.cell[1]))
            self.cell = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell[0].append(data)


def parse(path: Path) -> Elements:
    elements = Elements()
    elements.feed(path.read_text())
    return elements


def test_report_has_every_table_and_figure(report):
    artifacts, _, _ = report
    page = parse(artifacts.html)
    assert set(page.tables) == {"runs", "table-gmm-pancakes", "checks-both"} == set(artifacts.tables)
    assert [row[0][0] for row in page.tables["runs"][1:]] == ["both", "infonce"]
    metrics = ("nmi", "probe_acc", "fisher_cos2", "means_cos2", "pca_cos2", "minor_cos2")
    per_delta = [f"gmm-pancakes-{m}-vs-delta" for m in metrics]
    bars = [f"backbones-{m}" for m in metrics]
    assert page.figures == [*per_delta, *bars, "projections-both", "projections-infonce", "checks-both-bic"]
    assert set(artifacts.figures) == set(page.figures)
    assert len(page.images) == len(page.figures)
    for image, key in zip(page.images, page.figures):
        assert image["alt"]
        data = base64.b64decode(image["src"].removeprefix("data:image/png;base64,"), validate=True)
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
        assert artifacts.figures[key].read_bytes() == data
    assert [row[0][0] for row in page.tables["checks-both"][1:]] == ["tied_vs_full_bic", "nmi_em"]
    assert not [link for link in page.links if re.match(r"\s*(https?:)?//", link)]
    assert not re.search(r"https?://", artifacts.html.read_text())


def test_table_cells_are_the_aggregates_of_each_run(report):
    artifacts, _, root = report
    rows = parse(artifacts.html).tables["table-gmm-pancakes"]
    header = [text for text, _ in rows[0]]
    cells = {(row[0][0], row[1][0], row[header.index("run")][0]): row for row in rows[1:]}
    for run in ("both", "infonce"):
        infonce = cells[("infonce", "1", run)]
        own = load_results(root / run / "results.json")
        expected = next(r for r in aggregate(own) if r["method"] == "infonce" and r["delta"] == 1.0)
        assert expected["seeds"] == int(infonce[header.index("n seeds")][0]) == 2
        text, attributes = infonce[header.index("nmi")]
        mean, std = expected["nmi"]
        assert float(attributes["data-mean"]) == mean and float(attributes["data-std"]) == std
        assert text == f"{mean:.3f} ± {std:.3f}"
    assert ("simsiam", "0.5", "both") in cells and ("simsiam", "0.5", "infonce") not in cells
    assert cells[("lda", "–", "both")][header.index("zeroshot_acc")][0] == "–"
    # run "both": InfoNCE and SimSiam at two δ and four baselines; run "infonce": InfoNCE at two δ and four baselines
    assert len(rows) - 1 == len(artifacts.tables["table-gmm-pancakes"]) == (2 + 2 + 4) + (2 + 4)


def test_repeated_runs_of_one_setting_get_a_row_each_with_their_own_spread(tmp_path):
    """Two run directories with the same setting and seeds 0, 1, 2 (a rerun): two rows of 3 seeds, each with its own
    run's std, not one row of "6 seeds" whose std mixes both runs."""
    nmi = {"first": [0.50, 0.52, 0.54], "rerun": [0.70, 0.75, 0.80]}
    for run, values in nmi.items():
        (tmp_path / run).mkdir()
        records = [make_record(method="infonce", dataset="digits", backbone="b", features="img-1", delta=1.0, r=9,
                               seed=seed, nmi=value) for seed, value in enumerate(values)]
        write_json_atomic(tmp_path / run / "results.json", records)
    artifacts = build_report(resolve_runs([str(tmp_path / "*")]), tmp_path / "out")
    rows = parse(artifacts.html).tables["table-digits-b"]
    header = [text for text, _ in rows[0]]
    assert [[row[header.index(c)][0] for c in ("method", "δ", "n seeds", "run")] for row in rows[1:]] == [
        ["infonce", "1", "3", "first"], ["infonce", "1", "3", "rerun"]
    ]
    for row, values in zip(rows[1:], nmi.values()):
        attributes = row[header.index("nmi")][1]
        assert float(attributes["data-mean"]) == pytest.approx(np.mean(values))
        assert float(attributes["data-std"]) == pytest.approx(np.std(values, ddof=1))
    assert [row["run"] for row in artifacts.tables["table-digits-b"]] == ["first", "rerun"]


def test_runs_with_the_same_directory_name_are_labelled_by_their_parents(tmp_path):
    for parent in ("cluster-a", "cluster-b"):
        (tmp_path / parent / "run").mkdir(parents=True)
        write_json_atomic(tmp_path / parent / "run" / "results.json", [make_record(method="lda", seed=0, nmi=0.5)])
    artifacts = build_report(resolve_runs([str(tmp_path / "*" / "run")]), tmp_path / "out")
    assert [row["run"] for row in artifacts.tables["runs"]] == ["cluster-a/run", "cluster-b/run"]
    assert [row["run"] for row in artifacts.tables["table-none"]] == ["cluster-a/run", "cluster-b/run"]


def test_report_opens_in_headless_chromium_without_errors(report):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never download a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    artifacts, _, _ = report
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(artifacts.html.resolve().as_uri())
        assert driver.title == "Pancakes <small> comparison"
        assert driver.execute_script("return document.querySelector('h1').textContent") == "Pancakes <small> comparison"
        widths = driver.execute_script("return Array.from(document.images, i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) == len(artifacts.figures) == 15 and min(widths) > 0
        assert [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"] == []
        for width in (1400, 800):  # the desktop width, and a narrow window where every table must scroll
            driver.set_window_size(width, 900)
            layout = driver.execute_script(OVERFLOW_SCRIPT)
            viewport = layout["viewport"]
            assert layout["page"] <= viewport, f"the page is {layout['page']} px wide in a {viewport} px window"
            assert [t for t in layout["tables"] if t["right"] > viewport + 0.5] == []  # a table's box stays inside
            assert [f for f in layout["figures"] if f["right"] > viewport + 0.5] == []
            # figures take the page's width (the body's content box), not a third of it
            assert min(f["width"] for f in layout["figures"]) >= 0.95 * layout["content"]
            if width == 800:  # the method × metric tables are wider than the page there: they scroll inside it
                assert any(t["scrolls"] for t in layout["tables"])
    finally:
        driver.quit()


OVERFLOW_SCRIPT = """
const box = element => element.getBoundingClientRect();
const body = getComputedStyle(document.body);
return {
  viewport: document.documentElement.clientWidth,
  page: document.documentElement.scrollWidth,
  content: box(document.body).width - parseFloat(body.paddingLeft) - parseFloat(body.paddingRight),
  tables: Array.from(document.querySelectorAll('table'), table => {
    const frame = table.closest('.scroll') || table;
    return {id: table.id, right: box(frame).right, scrolls: frame.scrollWidth > frame.clientWidth};
  }),
  figures: Array.from(document.images, image => ({right: box(image).right, width: box(image).width})),
};
"""


def test_text_from_results_is_escaped_and_headless_groups_skip_delta_figures(tmp_path):
    run = tmp_path / "handmade"
    run.mkdir()
    evil = "<script>alert(1)</script>"
    records = [make_record(method=m, dataset="digits & co", backbone="b<1>", seed=s, nmi=0.5 + s / 10, fisher_cos2=0.3)
               for m in ("lda", evil) for s in (0, 1)]
    write_json_atomic(run / "results.json", records)
    artifacts = build_report(resolve_runs([str(run)]), tmp_path / "out")
    text = artifacts.html.read_text()
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "digits &amp; co / b&lt;1&gt;" in text
    assert parse(artifacts.html).figures == ["backbones-nmi", "backbones-fisher_cos2"]  # no head, no δ


def test_resolve_runs_names_the_patterns_when_nothing_matches(tmp_path):
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(DataError) as error:
        resolve_runs([str(tmp_path / "*"), "missing/*"])
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "*") in message and "missing/*" in message
    assert "results.json" in message and "ssl-pipeline run" in message


def test_projection_sample_round_trip_is_plain_stratified_and_normalised(tmp_path, rng):
    x_train, y_train = rng.standard_normal((300, 5)).astype(np.float32), np.repeat([0, 1], 150)
    x_test, y_test = rng.standard_normal((400, 5)).astype(np.float32), np.repeat([0, 1], [300, 100])
    pca = baseline_projection("pca", x_train, y_train, 3, 0, None)
    lda = baseline_projection("lda", x_train, y_train, 3, 0, None)  # one component for two classes
    cosine = baseline_projection("random", x_train, y_train, 3, 0, None)
    cosine.normalized = True
    path = save_projection_sample(tmp_path / "p.npz", x_test, y_test, {"pca": pca, "lda": lda, "cos": cosine}, ["a", "<b>"], max_points=100)
    with np.load(path, allow_pickle=False) as archive:
        assert all(archive[key].dtype != object for key in archive.files)
    sample = load_projection_sample(path)
    assert sample["class_names"] == ["a", "<b>"] and np.bincount(sample["labels"]).tolist() == [75, 25]
    assert sample["projections"]["lda"].shape == (100, 1) and sample["projections"]["pca"].shape == (100, 2)
    assert sample["normalized"] == {"pca": False, "lda": False, "cos": True}
    chosen = stratified_subsample(y_test, 100, 0)
    assert y_test[chosen].tolist() == sample["labels"].tolist()
    np.testing.assert_allclose(sample["projections"]["pca"], pca.transform(x_test[chosen])[:, :2], rtol=1e-5)
    z = cosine.transform(x_test[chosen])
    np.testing.assert_allclose(sample["projections"]["cos"], (z / np.linalg.norm(z, axis=1, keepdims=True))[:, :2], rtol=1e-5)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable projection sample"):
        load_projection_sample(tmp_path / "bad.npz")


def test_plot_delta_sweep_still_writes_a_png(report, tmp_path):
    _, records, _ = report
    path = plot_delta_sweep(records, tmp_path / "delta_sweep.png")
    assert path == tmp_path / "delta_sweep.png" and path.read_bytes().startswith(PNG_MAGIC)
    assert not list(tmp_path.glob("*.tmp"))


TOWER_METRICS = ("energy_shared", "energy_private", "energy_noise", "fisher_cos2", "retrieval_p1", "retrieval_p10",
                 "retrieval_map", "zeroshot_acc", "logit_scale")


def clip_records(**settings) -> list[dict]:
    """A CLIP run's records made up: both towers at δ ∈ {1, 0.5, 0.2, 0}, three seeds, every tower metric distinct
    per tower, δ and seed (zero-shot for tower 1 only); LDA and PCA with their energies."""
    common = dict(data="synthetic", dataset="gmm-clip-shared", features="gmm-clip", split="test", split_seed=0, r=4,
                  target="shared", **settings)
    records = []
    for seed in (0, 1, 2):
        for delta in (1.0, 0.5, 0.2, 0.0):
            for tower in (1, 2):
                shared = 0.9 * delta + 0.05 * tower + 0.01 * seed
                records.append(make_record(
                    **common, method="clip", delta=delta, tau=0.2, tower=tower, normalized=True, seed=seed,
                    nmi=0.6 * delta + 0.1 * tower + 0.01 * seed, probe_acc=0.5 + 0.4 * delta - 0.02 * tower,
                    fisher_cos2=0.8 * delta + 0.03 * tower + 0.02 * seed, energy_shared=shared,
                    energy_private=0.02 * tower, energy_noise=1 - shared - 0.02 * tower,
                    retrieval_p1=0.2 + 0.7 * delta + 0.01 * tower + 0.01 * seed, retrieval_p10=0.2 + 0.6 * delta + 0.01 * tower,
                    retrieval_map=0.2 + 0.5 * delta + 0.02 * tower + 0.003 * seed, logit_scale=5.0 + tower + seed,
                    zeroshot_acc=0.2 + 0.7 * delta + 0.01 * seed if tower == 1 else None,
                ))
        records.append(make_record(**common, method="lda", seed=seed, nmi=0.99, probe_acc=1.0, fisher_cos2=1.0,
                                   energy_shared=0.999, energy_private=0.0005, energy_noise=0.0005))
        records.append(make_record(**common, method="pca", seed=seed, nmi=0.01, probe_acc=0.2, fisher_cos2=0.0,
                                   energy_shared=0.001, energy_private=0.0, energy_noise=0.999))
    return records


def unimodal_records() -> list[dict]:
    return [make_record(method=m, dataset="gmm-pancakes", features="gmm-p", delta=d, r=2, seed=s, nmi=0.5 * (d or 1) + s / 10,
                        probe_acc=0.7, fisher_cos2=0.8 * (d or 1))
            for s in (0, 1) for m, deltas in (("infonce", (1.0, 0.5)), ("lda", (None,))) for d in deltas]


def tower_means(records: list[dict], metric: str, delta: float, tower: int) -> tuple[float, float]:
    values = [r[metric] for r in records if r["tower"] == tower and r["delta"] == delta]
    return float(np.mean(values)), float(np.std(values, ddof=1))


def test_delta_sweep_draws_each_clip_tower_and_adds_energy_and_retrieval_panels(tmp_path):
    from ssl_pipeline.reporting.figures import delta_sweep
    from ssl_pipeline.reporting.plots import DELTA_SWEEP_METRICS

    records = clip_records()
    figure = delta_sweep(aggregate(records), DELTA_SWEEP_METRICS)
    axes = [axis for axis in figure.axes if axis.get_title()]
    assert [axis.get_title() for axis in axes] == ["fisher_cos2", "nmi", "probe_acc", "energy_shared", "retrieval_map"]
    for axis in axes:
        curves = {container.get_label(): container.lines[0] for container in axis.containers}
        assert set(curves) == {"clip tower 1", "clip tower 2"}  # one curve per tower, never one pooled "clip"
        for tower in (1, 2):
            line = curves[f"clip tower {tower}"]
            assert sorted(line.get_xdata()) == [0.0, 0.2, 0.5, 1.0]
            expected = {d: tower_means(records, axis.get_title(), d, tower)[0] for d in (0.0, 0.2, 0.5, 1.0)}
            assert dict(zip(line.get_xdata(), line.get_ydata())) == pytest.approx(expected)
    energy = next(axis for axis in axes if axis.get_title() == "energy_shared")
    assert {line.get_label() for line in energy.lines if line.get_label() in ("lda", "pca")} == {"lda", "pca"}
    path = plot_delta_sweep(records, tmp_path / "delta_sweep.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    # a unimodal run keeps its three panels
    unimodal = delta_sweep(aggregate(unimodal_records()), DELTA_SWEEP_METRICS)
    assert [axis.get_title() for axis in unimodal.axes if axis.get_title()] == ["fisher_cos2", "nmi", "probe_acc"]


def test_report_has_a_two_towers_section_per_run_delta_and_tower(tmp_path):
    runs = {"first": clip_records(), "rerun": [{**r, "nmi": r["nmi"] + 0.05} for r in clip_records()]}
    for name, records in runs.items():
        (tmp_path / name).mkdir()
        write_json_atomic(tmp_path / name / "results.json", records)
    artifacts = build_report(resolve_runs([str(tmp_path / "*")]), tmp_path / "out")
    page = parse(artifacts.html)
    text = artifacts.html.read_text()
    assert set(page.tables) == {"runs", "table-gmm-clip-shared", "towers-gmm-clip-shared"} == set(artifacts.tables)
    assert text.count("<h3>Two towers</h3>") == 1 and 'id="paired-gmm-clip-shared"' in text
    rows = page.tables["towers-gmm-clip-shared"]
    header = [cell for cell, _ in rows[0]]
    assert header == ["method", "δ", "tower", "target", "r", "n seeds", "run", *TOWER_METRICS]
    settings = [[row[header.index(c)][0] for c in ("method", "δ", "tower", "run")] for row in rows[1:]]
    assert settings == [
        *([f"clip tower {t}", f"{d:g}", str(t), run] for d in (1.0, 0.5, 0.2, 0.0) for run in runs for t in (1, 2)),
        *([m, "–", "–", run] for m in ("lda", "pca") for run in runs),
    ]
    for row in rows[1:]:
        method, delta, tower, run = (row[header.index(c)][0] for c in ("method", "δ", "tower", "run"))
        assert row[header.index("n seeds")][0] == "3" and row[header.index("target")][0] == "shared"
        if not method.startswith("clip"):
            assert row[header.index("retrieval_map")][0] == "–" and row[header.index("energy_noise")][1]
            continue
        for metric in TOWER_METRICS:
            text_cell, attributes = row[header.index(metric)]
            if metric == "zeroshot_acc" and tower == "2":
                assert text_cell == "–"
                continue
            mean, std = tower_means(runs[run], metric, float(delta), int(tower))
            assert float(attributes["data-mean"]) == pytest.approx(mean, abs=1e-12)
            assert float(attributes["data-std"]) == pytest.approx(std, abs=1e-12)
            assert text_cell == f"{float(attributes['data-mean']):.3f} ± {float(attributes['data-std']):.3f}"
    flat = artifacts.tables["towers-gmm-clip-shared"]
    assert flat[0]["method"] == "clip tower 1" and flat[0]["tower"] == 1 and flat[0]["delta"] == 1.0
    assert flat[0]["logit_scale_mean"] == pytest.approx(7.0) and flat[1]["zeroshot_acc_mean"] is None
    # the main table and the figures keep the towers apart too
    main = page.tables["table-gmm-clip-shared"]
    assert sum(row[0][0] == "clip tower 1" for row in main[1:]) == sum(row[0][0] == "clip tower 2" for row in main[1:]) == 8
    slug = "gmm-clip-shared"
    assert page.figures[:2] == [f"{slug}-energy_shared-vs-delta", f"{slug}-retrieval_map-vs-delta"]
    assert f"{slug}-nmi-vs-delta" in page.figures and set(artifacts.figures) == set(page.figures)


def test_bars_of_several_runs_keep_the_clip_towers_apart():
    from ssl_pipeline.reporting.figures import _bar_values

    rows = [{**row, "run": run} for run in ("first", "rerun") for row in aggregate(clip_records())]
    values = _bar_values(rows, "nmi")
    assert [label for label in values if label.startswith("clip")] == [
        "clip tower 1 δ=1 [first]", "clip tower 2 δ=1 [first]", "clip tower 1 δ=1 [rerun]", "clip tower 2 δ=1 [rerun]",
    ]
    assert values["clip tower 2 δ=1 [first]"][0] == pytest.approx(tower_means(clip_records(), "nmi", 1.0, 2)[0])


def test_unimodal_report_has_no_paired_section(tmp_path):
    (tmp_path / "run").mkdir()
    write_json_atomic(tmp_path / "run" / "results.json", unimodal_records())
    artifacts = build_report(resolve_runs([str(tmp_path / "run")]), tmp_path / "out")
    text = artifacts.html.read_text()
    assert set(artifacts.tables) == {"runs", "table-gmm-pancakes"}
    assert "Two towers" not in text and "paired-" not in text and "energy_shared" not in text
    assert parse(artifacts.html).figures == [
        *(f"gmm-pancakes-{m}-vs-delta" for m in ("nmi", "probe_acc", "fisher_cos2")),
        *(f"backbones-{m}" for m in ("nmi", "probe_acc", "fisher_cos2")),
    ]
