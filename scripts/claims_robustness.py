"""Do the claims of ``tests/test_claims.py`` hold with margin under numerical perturbation?

Reruns every registered claim (``tests/test_claims.py``'s ``CLAIMS``: each gives its checks with value and
threshold) in a fresh process per environment, each environment changing one source of numerical difference from
the baseline: torch's CPU kernels (``ATEN_CPU_CAPABILITY``), MKL's GEMM code path (``MKL_CBWR``, torch's BLAS),
OpenBLAS's kernel set (``OPENBLAS_CORETYPE``: numpy, scipy and faiss), torch's thread count, and the data seed of
the synthetic mixture. Prints claim × environment → value, threshold, margin, and per check the worst margin,
which must reach ``--min-margin-nmi`` for NMI and ``--min-margin-cos2`` for cos² (exit status 1 otherwise).

With ``--digits ENV …`` it also runs the README's main job (``configs/default.yaml``) under the environments named
and prints the range of its headline numbers (the README quotes these ranges).

    python scripts/claims_robustness.py                       # the one-factor-at-a-time grid, ~10 runs
    python scripts/claims_robustness.py --grid full           # every combination (72 runs)
    python scripts/claims_robustness.py --digits baseline aten=default --json out.json
    python scripts/claims_robustness.py --claims an_ssl_trunk_learns_the_hidden_feature_a_supervised_one_does_not
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMERICS_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
MIN_MARGIN = {"nmi": 0.01, "cos2": 0.02}
"""The margin a check must clear in every environment: 0.01 for NMI, 0.02 for every share in [0, 1]: the cos²
metrics (``fisher_cos2``, ``means_cos2``, ``optimum_cos2``, …), the energies of the CLIP claims (``energy_shared``,
``energy_private``, …), retrieval's mean average precision, the per-label energies and hidden-layer probes
(``label_energy_*``, ``hidden_probe_*``); other metrics (effective rank) are reported only. A
share is at most 1, so a lower bound closer than 0.02 to 1 (the spectral closed form's 0.98) cannot be cleared by
0.02: there the required margin is half the room left, (1 − threshold)/2, i.e. the value must reach 0.99
(``required_margin``)."""


def required_margin(metric: str, threshold: float, at_least: bool) -> float:
    """The margin a check of ``metric`` must clear (``MIN_MARGIN``; for lower bounds on shares, at most half the room
    below 1)."""
    if metric == "nmi":
        return MIN_MARGIN["nmi"]
    if metric.endswith("cos2") or metric.startswith(("energy_", "retrieval_", "label_energy_", "hidden_probe_")):
        return min(MIN_MARGIN["cos2"], (1.0 - threshold) / 2) if at_least else MIN_MARGIN["cos2"]
    return 0.0
AXES = {
    "aten": ["default", "avx2", "avx512"],
    "mkl_cbwr": ["COMPATIBLE", "AVX2"],
    "openblas": ["Haswell", "SkylakeX"],
    "threads": [1, 2],
    "seed": [1, 2],
}
"""Perturbations; the baseline is the unset environment, 2 threads and data seed 0."""


@dataclass(frozen=True)
class Environment:
    """One numerical environment: variables set for a fresh process, torch threads and the mixture's data seed."""

    aten: str | None = None
    mkl_cbwr: str | None = None
    openblas: str | None = None
    threads: int = 2
    seed: int = 0

    @property
    def name(self) -> str:
        parts = [f"{k}={v}" for k, v in asdict(self).items() if v != getattr(BASELINE, k)]
        return ",".join(parts) or "baseline"

    def variables(self) -> dict[str, str]:
        """The process environment: the machine's own, with every numerics variable removed unless set here."""
        env = {k: v for k, v in os.environ.items() if k not in NUMERICS_VARIABLES}
        chosen = {"ATEN_CPU_CAPABILITY": self.aten, "MKL_CBWR": self.mkl_cbwr, "OPENBLAS_CORETYPE": self.openblas}
        env |= {k: v for k, v in chosen.items() if v is not None}
        env |= {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        return env | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0"}

    @classmethod
    def parse(cls, text: str) -> "Environment":
        """``baseline`` or ``aten=avx2,threads=1,…``."""
        if text == "baseline":
            return BASELINE
        values = dict(part.split("=", 1) for part in text.split(","))
        unknown = set(values) - set(AXES)
        if unknown:
            raise SystemExit(f"unknown environment axis {sorted(unknown)}; axes: {', '.join(AXES)}")
        return cls(**{k: int(v) if k in ("threads", "seed") else v for k, v in values.items()})


BASELINE = Environment()


def grid(kind: str) -> list[Environment]:
    """``oat``: the baseline and each axis value changed alone; ``full``: every combination. Environments this CPU
    cannot run (AVX-512 kernels without AVX-512: the worker dies at start) are left out, with a line saying so."""
    if kind == "full":
        values = {**AXES, "seed": [BASELINE.seed, *AXES["seed"]]}
        environments = [Environment(**dict(zip(values, combo))) for combo in itertools.product(*values.values())]
    else:
        environments = [BASELINE]
        for axis, values in AXES.items():
            environments += [Environment(**{axis: v}) for v in values if v != getattr(BASELINE, axis)]
    runnable = [env for env in environments if cpu_can_run(env)]
    if len(runnable) < len(environments):
        print(f"left out {len(environments) - len(runnable)} environment(s) with AVX-512 kernels: this CPU has no "
              "AVX-512", flush=True)
    return runnable


def cpu_can_run(env: Environment) -> bool:
    """Whether this CPU runs ``env``'s kernels: ``aten=avx512`` and ``openblas=SkylakeX`` need AVX-512 (Linux's
    /proc/cpuinfo flags; assumed present where it cannot be read)."""
    if env.aten != "avx512" and env.openblas != "SkylakeX":
        return True
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return True


def load_claims_module():
    spec = importlib.util.spec_from_file_location("claims_under_test", ROOT / "tests" / "test_claims.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def numerics_in_use() -> dict:
    """What the process actually runs: torch's ISA level and threads, each BLAS's kernel set."""
    from ssl_pipeline.reporting.provenance import blas_libraries, cpu_description

    cpu = cpu_description()
    blas = [f"{b['internal_api']} {b['version']} {b.get('architecture')}" for b in blas_libraries() if "architecture" in b]
    return {"torch_capability": cpu["torch_capability"], "torch_threads": cpu["torch_threads"], "blas": blas}


def worker(job: str, env: Environment, out: Path, only: list[str] | None = None) -> None:
    """Run one job in this process (its environment already set) and write its result as JSON; ``only``: the names
    of the claims to run (all when None)."""
    import torch

    torch.set_num_threads(env.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if job == "claims":
            claims = load_claims_module()
            runs = claims.LabRuns(Path(tmp), [f"--data.synthetic.seed={env.seed}"])
            result = {
                name: [asdict(check) for check in checks(runs)] for name, checks in claims.CLAIMS.items()
                if only is None or name in only
            }
        else:
            result = digits_numbers(Path(tmp), env)
        result = {"numerics": numerics_in_use(), "result": result}
    out.write_text(json.dumps(result))


def digits_numbers(run_dir: Path, env: Environment) -> dict:
    """The main job's headline numbers: mean over seeds per (method, δ) of NMI and fisher_cos2."""
    from rich.console import Console

    from ssl_pipeline import experiment
    from ssl_pipeline.cli import parse_command

    cache = ROOT / "data" / "features"
    argv = ["run", "--config", str(ROOT / "configs" / "default.yaml"), "--run_dir", str(run_dir),
            f"--data.extract.cache_root={cache}", f"--data.split_seed={env.seed}"]
    _, cfg, _ = parse_command(argv)
    records, _ = experiment.run("run", cfg, Console(quiet=True))
    numbers: dict[str, dict[str, float]] = {}
    for record in records:
        if record["data"] != "real" or record["nmi"] is None:
            continue
        label = record["method"] + (f" δ={record['delta']:g}" if record["delta"] is not None else "")
        for metric in ("nmi", "fisher_cos2", "probe_acc"):
            if record[metric] is not None:
                numbers.setdefault(f"{label} {metric}", []).append(record[metric])
    return {key: statistics.mean(values) for key, values in numbers.items()}


def run_environment(job: str, env: Environment, keep: Path | None = None, only: list[str] | None = None) -> dict:
    """``job`` in a fresh process under ``env``; with ``keep``, the result is saved there and a saved one reused
    (a long grid survives an interruption); ``only``: the claims to run."""
    saved = keep / f"{job}-{env.name}{'-' + '-'.join(only) if only else ''}.json" if keep else None
    if saved and saved.is_file():
        return json.loads(saved.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--worker", job, "--env", env.name, "--out", str(out),
                   *(["--claims", *only] if only else [])]
        start = time.perf_counter()
        done = subprocess.run(command, env=env.variables(), cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{job} under {env.name} failed:\n{done.stderr[-3000:]}")
        result = json.loads(out.read_text())
    result["seconds"] = time.perf_counter() - start
    if saved:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(result))
    return result


@dataclass
class Row:
    check: str
    metric: str
    threshold: float
    at_least: bool
    values: dict[str, float] = field(default_factory=dict)
    margins: dict[str, float] = field(default_factory=dict)


def claims_table(results: dict[str, dict]) -> list[Row]:
    rows: dict[str, Row] = {}
    for env_name, result in results.items():
        for claim_name, checks in result["result"].items():
            for check in checks:
                key = f"{claim_name}: {check['name']}"
                row = rows.setdefault(key, Row(key, check["metric"], check["threshold"], check["at_least"]))
                value, threshold = check["value"], check["threshold"]
                row.values[env_name] = value
                row.margins[env_name] = value - threshold if check["at_least"] else threshold - value
    return list(rows.values())


def print_claims(results: dict[str, dict], rows: list[Row]) -> bool:
    """Print the long table (claim × environment) and the worst case per check; True if every check clears its
    required margin everywhere."""
    print("environment → torch ISA, threads, BLAS kernel sets, seconds")
    for env_name, result in results.items():
        n = result["numerics"]
        print(f"  {env_name:28s} {n['torch_capability']:8s} {n['torch_threads']}  {'; '.join(n['blas'])}  {result['seconds']:.0f} s")
    w = max(len(row.check) for row in rows)
    print(f"\n{'claim: check':{w}s} {'environment':28s} {'value':>8s} {'threshold':>10s} {'margin':>8s}")
    for row in rows:
        for env_name, value in row.values.items():
            print(f"{row.check:{w}s} {env_name:28s} {value:8.4f} {'≥' if row.at_least else '≤'}{row.threshold:9.4f} {row.margins[env_name]:+8.4f}")
    print(f"\n{'claim: check':{w}s} {'worst environment':28s} {'worst margin':>12s} {'required':>9s}")
    ok = True
    for row in rows:
        worst = min(row.margins, key=row.margins.get)
        required = required_margin(row.metric, row.threshold, row.at_least)
        holds = row.margins[worst] >= required
        ok &= holds
        print(f"{row.check:{w}s} {worst:28s} {row.margins[worst]:+12.4f} {required:9.3f} {'ok' if holds else 'FAIL'}")
    return ok


def print_digits(results: dict[str, dict]) -> None:
    print("\nmain job (configs/default.yaml), mean over seeds: min – max across environments")
    keys = list(next(iter(results.values()))["result"])
    for key in keys:
        values = [result["result"][key] for result in results.values() if key in result["result"]]
        print(f"  {key:40s} {min(values):.3f} – {max(values):.3f}   ({', '.join(f'{v:.3f}' for v in values)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=["oat", "full"], default="oat", help="environments for the claims")
    parser.add_argument("--only", nargs="+", metavar="ENV", help="run the claims only under these environments")
    parser.add_argument("--skip-claims", action="store_true", help="only the --digits job")
    parser.add_argument("--claims", nargs="+", metavar="NAME", help="only these claims (tests/test_claims.py names "
                        "without test_), e.g. an_ssl_trunk_learns_the_hidden_feature_a_supervised_one_does_not")
    parser.add_argument("--digits", nargs="+", metavar="ENV", default=[], help="run the main job under these environments")
    parser.add_argument("--json", type=Path, help="also write every result to this JSON file")
    parser.add_argument("--keep", type=Path, help="keep each environment's result in this directory and reuse those found there")
    parser.add_argument("--worker", choices=["claims", "digits"], help=argparse.SUPPRESS)
    parser.add_argument("--env", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, Environment.parse(args.env), args.out, args.claims)
        return 0
    payload: dict = {}
    ok = True
    if not args.skip_claims:
        environments = [Environment.parse(e) for e in args.only] if args.only else grid(args.grid)
        results = {}
        for i, env in enumerate(environments, 1):
            results[env.name] = run_environment("claims", env, args.keep, args.claims)
            print(f"[{i}/{len(environments)}] claims under {env.name}: {results[env.name]['seconds']:.0f} s", flush=True)
        rows = claims_table(results)
        ok = print_claims(results, rows)
        payload["claims"] = {"environments": results, "rows": [asdict(row) for row in rows]}
    if args.digits:
        digits = {}
        for env in map(Environment.parse, args.digits):
            digits[env.name] = run_environment("digits", env, args.keep)
            print(f"main job under {env.name}: {digits[env.name]['seconds']:.0f} s", flush=True)
        print_digits(digits)
        payload["digits"] = digits
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
