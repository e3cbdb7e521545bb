"""The summary table: readable on 80- and 120-column terminals, every number in full, every metric with --wide."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from ssl_pipeline.records.results import METRIC_FIELDS, TABLE_METRICS, make_record, summary_table

# (method, δ): per seed (nmi, probe_acc, fisher_cos2, effective_rank); the means ± stds below are exact
SETTINGS = {
    ("infonce", 1.0): [(0.874, 0.902, 0.23, 8.8), (0.884, 0.912, 0.24, 8.9), (0.894, 0.922, 0.25, 9.0)],
    ("simsiam", 0.125): [(0.82, 0.88, 0.37, 7.0), (0.836, 0.89, 0.39, 7.1), (0.852, 0.9, 0.41, 7.2)],
    ("raw", None): [(0.423, 0.951, 0.009, 1227.4)] * 3,
}
EXPECTED = {
    "infonce": ["0.884±0.010", "0.912±0.010", "0.240±0.010", "8.9±0.1"],
    "simsiam": ["0.836±0.016", "0.890±0.010", "0.390±0.020", "7.1±0.1"],
    "raw": ["0.423±0.000", "0.951±0.000", "0.009±0.000", "1227.4±0.0"],
}


def records() -> list[dict]:
    rows = []
    for (method, delta), seeds in SETTINGS.items():
        for seed, (nmi, probe, cos2, rank) in enumerate(seeds):
            rows.append(make_record(
                method=method, delta=delta, seed=seed, nmi=nmi, probe_acc=probe, fisher_cos2=cos2, effective_rank=rank,
                ari=0.5, acc=0.6, fisher_energy=0.7, fit_seconds=12.5, dataset="digits",
            ))
    rows.append(make_record(method="zeroshot", zeroshot_acc=0.815, dataset="digits"))
    return rows


def render(width: int, wide: bool = False) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(summary_table(records(), "digits (mean ± std over 3 seeds)", wide))
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 120])
def test_default_table_shows_every_number_in_full_within_the_terminal_width(width):
    text = render(width)
    lines = text.splitlines()
    assert "…" not in text
    assert max(len(line.rstrip()) for line in lines) <= width
    for method, numbers in EXPECTED.items():
        row = next(line for line in lines if line.split() and line.split()[0] == method)
        assert row.split()[-4:] == numbers, row  # one line per setting: no number folded or cut
    header = " ".join(lines[:4])
    assert all(metric in header for metric in ("method", "δ", "seeds", *TABLE_METRICS))
    assert "fisher_energy" not in text and "fit_seconds" not in text and "ari" not in header.split()


def test_wide_table_shows_every_metric():
    text = render(200, wide=True)
    assert "…" not in text
    present = [m for m in METRIC_FIELDS if any(r[m] is not None for r in records())]
    assert len(present) >= 8 and all(metric in text for metric in present)
    assert "energy_noise" not in text and "retrieval_map" not in text  # no record has them: no empty column
    zeroshot = next(line for line in text.splitlines() if line.split() and line.split()[0] == "zeroshot")
    assert "0.815±0.000" in zeroshot
    infonce = next(line for line in text.splitlines() if line.split() and line.split()[0] == "infonce")
    assert "0.700±0.000" in infonce and "12.500±0.000" in infonce  # fisher_energy, fit_seconds


def test_wide_table_folds_numbers_on_a_narrow_terminal_instead_of_eliding_them():
    assert "…" not in render(80, wide=True)
