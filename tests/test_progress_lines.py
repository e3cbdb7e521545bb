"""Progress where stdout is not a terminal: plain lines at a bounded rate (every tenth of the total or every 30 s,
and the final state) instead of a live bar that only shows at the end; a terminal keeps rich's bar."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from ssl_pipeline.records.progress import PlainProgress, progress_bar, rate_progress

ROOT = Path(__file__).resolve().parents[1]
PANCAKES = str(ROOT / "configs" / "synthetic" / "pancakes.yaml")
LINE = re.compile(
    r"^(?P<stage>.+?) (?P<done>\d+)/(?P<total>\d+) \(\d+%\) \| (?P<rate>\S+ (\S+/s|s/\S+)) "
    r"\| elapsed \d+:\d\d \| ETA (?P<eta>\d+:\d\d|\?)( \| .*)?$"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200), out


def lines_of(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if line.strip()]


def test_hundred_advances_print_at_most_eleven_lines_each_with_stage_counts_rate_and_eta():
    console, out = plain_console()
    clock = FakeClock()
    with progress_bar(console, "item", clock=clock) as progress:
        assert isinstance(progress, PlainProgress)
        task = progress.add_task("scoring", total=100, current="")
        for i in range(100):
            progress.update(task, current=f"item{i}")
            clock.now += 0.5
            progress.advance(task)
    lines = lines_of(out)
    assert 10 <= len(lines) <= 12, lines
    for line in lines:
        match = LINE.match(line)
        assert match, line
        assert match["stage"] == "scoring" and match["total"] == "100"
    done = [int(LINE.match(line)["done"]) for line in lines]
    assert done == sorted(done) and done[-1] == 100 and done[0] == 10
    assert lines[0] == "scoring 10/100 (10%) | 2.0 item/s | elapsed 0:05 | ETA 0:45 | item9"
    assert lines[-1] == "scoring 100/100 (100%) | 2.0 item/s | elapsed 0:50 | ETA 0:00 | item99"


def test_lines_come_every_thirty_seconds_between_tenths():
    console, out = plain_console()
    clock = FakeClock()
    progress = PlainProgress(console, "img", clock=clock)
    with progress:
        task = progress.add_task("extracting cifar100/train", total=10_000, rate="")
        for done in range(10, 501, 10):  # 500 images in 50 updates, 3 s apart: 150 s, never a tenth of the total
            clock.now += 3.0
            progress.update(task, completed=done, rate="ignored")
            if done == 100:
                assert len(lines_of(out)) == 1  # the 30 s line
            if done == 110:
                assert len(lines_of(out)) == 1  # 3 s later: nothing
        assert len(lines_of(out)) == 5  # at 30, 60, 90, 120, 150 s
    lines = lines_of(out)
    assert len(lines) == 5  # the last line already showed the final state
    assert lines[0] == "extracting cifar100/train 100/10000 (1%) | 3.3 img/s | elapsed 0:30 | ETA 49:30"
    assert lines[-1].startswith("extracting cifar100/train 500/10000 (5%) | 3.3 img/s | elapsed 2:30 | ETA ")


def test_final_line_when_the_block_ends_and_stopped_when_it_raised():
    console, out = plain_console()
    clock = FakeClock()
    with pytest.raises(KeyboardInterrupt):
        with progress_bar(console, "head", clock=clock) as progress:
            task = progress.add_task("fitting heads", total=30, current="")
            for i in range(30):
                clock.now += 20.0
                progress.update(task, advance=1, note=f"infonce_delta1_seed{i} (20.0 s, 30 epochs)")
                if i == 4:
                    raise KeyboardInterrupt
    lines = lines_of(out)
    # 2/30 comes 40 s after the start (time), 3/30 is the first tenth, 5/30 comes 40 s after it (time again);
    # the exit has nothing left to print.
    assert [LINE.match(line)["done"] for line in lines] == ["2", "3", "5"], lines
    assert lines[0] == "fitting heads 2/30 (7%) | 20.0 s/head | elapsed 0:40 | ETA 9:20 | infonce_delta1_seed1 (20.0 s, 30 epochs)"
    assert lines[-1].startswith("fitting heads 5/30 (17%) | 20.0 s/head")

    console, out = plain_console()
    with pytest.raises(KeyboardInterrupt):
        with progress_bar(console, "head", clock=clock) as progress:
            task = progress.add_task("fitting heads", total=30, current="")
            clock.now += 1.0
            progress.advance(task)
            raise KeyboardInterrupt
    assert lines_of(out) == ["fitting heads 1/30 (3%) | 1.0 head/s | elapsed 0:01 | ETA 0:29 | stopped"]


def test_a_terminal_keeps_the_rich_bar_and_prints_no_plain_line():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    for make in (progress_bar, rate_progress):
        progress = make(console)
        assert isinstance(progress, Progress)
    with progress_bar(console, "item") as progress:
        task = progress.add_task("scoring", total=100, current="")
        for _ in range(100):
            progress.advance(task)
    assert not any(LINE.match(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)) for line in out.getvalue().splitlines())
    assert "item/s" not in out.getvalue() and "ETA" not in out.getvalue()


def test_synthetic_run_prints_plain_progress_for_fitting_and_scoring(tmp_path, capsys, monkeypatch):
    from ssl_pipeline.cli import main

    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "JUPYTER_COLUMNS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    argv = [
        "synthetic", "--config", PANCAKES, "--heads.methods", "[infonce]", "--seeds", "0", "--deltas", "1",
        "--heads.epochs", "2", "--heads.per_delta", "[]", "--data.synthetic.d", "20", "--data.synthetic.k", "3",
        "--data.synthetic.n_train", "600", "--data.synthetic.n_val", "150", "--data.synthetic.n_test", "300",
        "--heads.r", "2", "--score.kmeans.nredo", "1", "--score.kmeans.niter", "20",
        "--score.probe.l2_grid", "[0.001]", "--score.baselines", "[lda,random]", "--wandb.mode", "disabled",
        "--run_dir", str(tmp_path / "run"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if LINE.match(line)]
    fitting = [line for line in lines if line.startswith("fitting 1 of 1 heads ")]
    scoring = [line for line in lines if line.startswith("scoring ")]
    assert fitting and scoring, out
    assert re.match(r"fitting 1 of 1 heads 1/2 \(50%\) \| .* \| epoch 1/2 · infonce -?\d\.\d+ \(1 head\)$", fitting[0]), fitting
    assert re.match(r"fitting 1 of 1 heads 2/2 \(100%\) \| .* \| ETA 0:00 \| epoch 2/2 · infonce -?\d\.\d+ \(1 head\) · "
                    r"saved infonce_delta1_seed0 \(\d+\.\d s, 2 epochs\)$", fitting[-1]), fitting
    assert LINE.match(scoring[-1])["done"] == LINE.match(scoring[-1])["total"] == "3", scoring
    assert "━" not in out  # no rich bar rendered into the log


def test_extraction_prints_plain_lines_with_images_per_second(tmp_path):
    from fake_datasets import write_image_folder

    from ssl_pipeline.config import BackboneConfig, DataConfig, DatasetConfig, ExtractConfig
    from ssl_pipeline.features.source import extract_all

    write_image_folder(tmp_path / "images", ["cat", "dog", "eel"], 8, 40, seed=0)
    data = DataConfig(
        source="images", dataset=DatasetConfig(name="imagefolder", root=str(tmp_path / "images")),
        backbone=BackboneConfig(kind="torchvision", name="resnet18", pretrained=None, image_size=32),
        extract=ExtractConfig(cache_root=str(tmp_path / "features"), batch_size=8, shard_size=8, num_workers=0),
    )
    console, out = plain_console()
    extract_all(data, console)
    lines = [line for line in lines_of(out) if line.startswith("extracting ")]
    train = [line for line in lines if line.startswith("extracting imagefolder/train ")]
    assert train and all(LINE.match(line) for line in lines), lines
    match = LINE.match(train[-1])
    assert match["done"] == match["total"] and match["rate"].endswith(" img/s") and match["eta"] == "0:00", train


def test_a_grid_epoch_that_saves_many_heads_names_how_many_and_the_first_and_last():
    from ssl_pipeline.fit_stage import saved_heads_note

    notes = [f"infonce_delta{d}_seed{s} (0.2 s, 60 epochs)" for d in (1, 0.5, 0) for s in (0, 1, 2)]
    assert saved_heads_note(notes[:4]) == ", ".join(notes[:4])
    assert saved_heads_note(notes) == ("9 heads: infonce_delta1_seed0 (0.2 s, 60 epochs), infonce_delta1_seed1 "
                                       "(0.2 s, 60 epochs), …, infonce_delta0_seed2 (0.2 s, 60 epochs)")
