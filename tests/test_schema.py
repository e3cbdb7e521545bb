"""The current results schema (3) reads schema-1 runs: the new fields are null, SimSiam records say which guard they
used."""

import json

from ssl_pipeline.records.results import METRIC_FIELDS, SCHEMA, SETTING_FIELDS, load_results, make_record, summary_table

NEW = ("regularizer", "loss_weights", "lr", "weight_decay", "predictor_lr_scale", "means_cos2", "pca_cos2",
       "optimum_cos2", "feature_rank")


def schema_one(record: dict) -> dict:
    return {**{k: v for k, v in record.items() if k not in NEW}, "schema": 1}


def test_schema_one_records_are_read_with_the_new_fields_null(tmp_path):
    current = [make_record(method="simsiam", delta=1.0, seed=s, nmi=0.8 + s / 100, means_cos2=0.5) for s in range(3)]
    current.append(make_record(method="lda", seed=0, nmi=0.9, fisher_cos2=1.0))
    assert SCHEMA == 3 and all(r["schema"] == 3 for r in current)
    path = tmp_path / "results.json"
    path.write_text(json.dumps([schema_one(r) for r in current]))
    records = load_results(path)
    assert all(set(r) == {"schema", *SETTING_FIELDS, *METRIC_FIELDS} and r["schema"] == 1 for r in records)
    assert [r["means_cos2"] for r in records] == [None] * 4
    assert [r["regularizer"] for r in records] == ["euclidean"] * 3 + [None]
    assert [r["nmi"] for r in records] == [r["nmi"] for r in current]


def test_schema_one_and_two_runs_share_a_table_with_the_guard_in_the_label(tmp_path):
    from io import StringIO

    from rich.console import Console

    old = [schema_one(make_record(method="simsiam", delta=1.0, seed=s, nmi=0.80)) for s in range(2)]
    new = [make_record(method="simsiam", regularizer="covariance", delta=1.0, seed=s, nmi=0.88) for s in range(2)]
    (tmp_path / "old.json").write_text(json.dumps(old))
    records = load_results(tmp_path / "old.json") + new
    out = StringIO()
    Console(file=out, width=100, color_system=None).print(summary_table(records, "mixed"))
    text = out.getvalue()
    assert "simsiam-euclidean" in text and "0.800±0.000" in text and "0.880±0.000" in text


def test_heads_differing_only_in_their_optimiser_are_kept_apart():
    """lr, weight decay and the predictor's rate are setting fields: two heads differing only there are two rows."""
    from ssl_pipeline.records.results import aggregate

    records = [make_record(method="simsiam", delta=1.0, seed=0, lr=lr, predictor_lr_scale=0.03, nmi=nmi)
               for lr, nmi in ((0.01, 0.9), (0.001, 0.7))]
    rows = aggregate(records)
    assert len(rows) == 2 and sorted(row["nmi"][0] for row in rows) == [0.7, 0.9]
