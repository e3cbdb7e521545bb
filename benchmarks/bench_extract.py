"""Extraction throughput vs the backbone's forward-only throughput, at CIFAR resolution.

Goal: images/s of ``ssl-pipeline``'s extraction (dataset read through torchvision's CIFAR loader, preprocessing,
DataLoader, encode, shards written atomically, checksums, consolidation into the cache) ≥ 0.9 × the images/s of a
bare loop that only runs ``normalize`` + the backbone on tensors already in memory, same batch size and device.

Data: CIFAR-10-format pickles generated here (``tests/fake_datasets.py``; md5s registered on torchvision's class as
the tests do), 32 × 32 images; backbone: the packaged EfficientNet-Lite0 at ``image_size`` 32 (its CIFAR-resolution
use). Each side is timed ``--repeats`` times; best and median reported. A fresh cache root per extraction repeat.

    .venv/bin/python benchmarks/bench_extract.py                 # 10k images, batch 256
    .venv/bin/python benchmarks/bench_extract.py --quick         # 2k images
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

GOAL = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=-1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "extract.json")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats = 2000, 2

    from ssl_pipeline.allocator import configure_malloc

    # The allocator setting ssl-pipeline makes at start-up (ssl_pipeline/allocator.py), made here before torch
    # allocates. Both sides run in this one process, so they share it: the forward-only baseline no longer pays
    # the page faults the extraction is spared (or, with SSL_PIPELINE_MALLOC=off, both pay them).
    allocator = configure_malloc()
    import numpy as np
    import torch
    import torchvision
    from _machine import LoadMeter, write_results
    from fake_datasets import write_cifar10
    from rich.console import Console

    from ssl_pipeline.backbones import describe_backbone, load_backbone
    from ssl_pipeline.config import BackboneConfig, DatasetConfig, ExtractConfig
    from ssl_pipeline.data.images import load_split
    from ssl_pipeline.features.cache import FeatureCache
    from ssl_pipeline.features.extract import extract_split

    work = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    md5s = write_cifar10(work / "cifar", args.n, 100, seed=0)
    cls = torchvision.datasets.CIFAR10
    cls.train_list = [[name, md5s[name]] for name, _ in cls.train_list]
    cls.test_list = [[name, md5s[name]] for name, _ in cls.test_list]
    cls.meta = {**cls.meta, "md5": md5s[cls.meta["filename"]]}

    backbone_cfg = BackboneConfig(image_size=args.image_size)
    info = describe_backbone(backbone_cfg)
    backbone = load_backbone(backbone_cfg, info)
    dataset = DatasetConfig(name="cifar10", root=str(work / "cifar"))

    split = load_split(dataset, "train", 0)
    geometry = info.preprocess.geometry()
    preloaded = torch.stack([geometry(split[i][0]) for i in range(len(split))])

    def forward_only() -> float:
        start = time.perf_counter()
        for i in range(0, len(preloaded), args.batch_size):
            backbone.encode_images(info.preprocess.normalize(preloaded[i:i + args.batch_size].to(backbone.device)))
        return time.perf_counter() - start

    def extraction(repeat: int) -> float:
        root = work / f"cache{repeat}"
        cfg = ExtractConfig(cache_root=str(root), batch_size=args.batch_size, num_workers=args.num_workers)
        start = time.perf_counter()
        entry = extract_split(load_split(dataset, "train", 0), info, lambda: backbone, FeatureCache(root), cfg,
                              Console(quiet=True))
        seconds = time.perf_counter() - start
        assert entry.manifest["num_items"] == args.n
        shutil.rmtree(root)
        return seconds

    forward_only()  # warm-up (allocator, oneDNN kernels)
    load = LoadMeter().start()
    times = {"forward_only": [], "extraction": []}
    for repeat in range(args.repeats):  # interleaved, so drifting machine load hits both sides alike
        times["forward_only"].append(forward_only())
        times["extraction"].append(extraction(repeat))
    load.stop()
    shutil.rmtree(work)

    results = {name: {"best_s": min(t), "median_s": statistics.median(t), "times_s": t,
                      "images_per_s_best": args.n / min(t)} for name, t in times.items()}
    ratio = results["forward_only"]["best_s"] / results["extraction"]["best_s"]
    ratio_median = results["forward_only"]["median_s"] / results["extraction"]["median_s"]
    met = ratio >= GOAL
    for name, res in results.items():
        print(f"{name:<14} best {res['best_s']:.2f} s  median {res['median_s']:.2f} s  {res['images_per_s_best']:.0f} img/s")
    print(f"extraction / forward-only throughput: {ratio:.2f} (best), {ratio_median:.2f} (median); "
          f"goal ≥ {GOAL}: {'met' if met else 'MISSED'}")
    print(load.line())
    print(f"allocator: {allocator['status']} {allocator.get('applied', '')}")
    payload = {
        "benchmark": "extract", "goal": f"extraction images/s >= {GOAL} x forward-only images/s",
        "n": args.n, "batch_size": args.batch_size, "image_size": args.image_size, "backbone": info.identity,
        "num_workers": args.num_workers, "threads": torch.get_num_threads(), "device": str(backbone.device),
        "repeats": args.repeats, "machine": platform.platform(), "numpy": np.__version__, "torch": torch.__version__,
        "load": load.summary(), "allocator": allocator, "ratio_best": ratio, "ratio_median": ratio_median,
        "goal_met": met, "results": results,
    }
    write_results(args.out, payload)


if __name__ == "__main__":
    main()
