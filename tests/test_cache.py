"""Feature cache: sharded atomic writes, bit-identical resume, checksummed memory-mapped loads, locking."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from ssl_pipeline.errors import DataError
from ssl_pipeline.features.cache import FeatureCache, cache_key
from ssl_pipeline.features.shards import ShardWriter, open_writer
from ssl_pipeline.features.tables import entries_table

IDENTITY = {
    "backbone": {"name": "resnet18", "weights": "IMAGENET1K_V1"},
    "dataset": {"name": "cifar10", "split": "train", "num_items": 10},
    "preprocess": {"resize": 224, "crop": 224, "mean": [0.5, 0.5, 0.5]},
}
N, DIM, SHARD = 10, 6, 3  # shards cover [0,3) [3,6) [6,9) [9,10)


def _shard_arrays(writer: ShardWriter, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    start, stop = writer.shard_range(i)
    positions = np.arange(start, stop)
    features = (positions[:, None] * 10 + np.arange(DIM)).astype(np.float32) / 7
    return features, (positions % 3).astype(np.int64), positions.astype(np.int64)


def _write(writer: ShardWriter, shards: list[int]) -> None:
    for i in shards:
        writer.write_shard(i, *_shard_arrays(writer, i))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _complete(root: Path, identity: dict = IDENTITY) -> FeatureCache:
    cache = FeatureCache(root)
    with open_writer(cache, cache_key(identity), identity, N, SHARD) as writer:
        _write(writer, writer.pending())
        writer.finalize({"images_per_s": 12.5, "backbone": "torchvision:resnet18@IMAGENET1K_V1"})
    return cache


def test_finalized_entry_loads_exactly_the_written_arrays_memory_mapped(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    key = cache_key(IDENTITY)
    assert cache.get(key) is None
    with open_writer(cache, key, IDENTITY, N, SHARD) as writer:
        assert writer.num_shards == 4 and writer.shard_range(3) == (9, 10)
        written = [_shard_arrays(writer, i) for i in range(writer.num_shards)]
        for i in reversed(range(writer.num_shards)):
            writer.write_shard(i, *written[i])
        writer.finalize({"images_per_s": 12.5, "class_names": ["a", "b", "c"]})
    entry = cache.get(key)
    assert entry is not None
    features, labels, indices = entry.load()
    assert isinstance(features, np.memmap) and features.dtype == np.float32 and not features.flags.writeable
    assert np.array_equal(features, np.concatenate([w[0] for w in written]))
    assert np.array_equal(labels, np.concatenate([w[1] for w in written])) and labels.dtype == np.int64
    assert np.array_equal(indices, np.arange(N))
    manifest = json.loads((entry.path / "manifest.json").read_text())
    assert manifest["num_items"] == N and manifest["dim"] == DIM and manifest["identity"] == IDENTITY
    assert manifest["images_per_s"] == 12.5 and manifest["class_names"] == ["a", "b", "c"]
    for name, info in manifest["files"].items():
        assert info["sha256"] == _sha(entry.path / name)
    assert not (entry.path / "shards").exists() and not (entry.path / "progress.json").exists()


def test_resume_after_kill_keeps_finished_shards_and_is_bit_identical(tmp_path: Path) -> None:
    reference = _complete(tmp_path / "uninterrupted").get(cache_key(IDENTITY))
    cache = FeatureCache(tmp_path / "resumed")
    key = cache_key(IDENTITY)
    writer = open_writer(cache, key, IDENTITY, N, SHARD)
    _write(writer, [0, 1])
    writer.close()  # killed: never finalized
    shard0 = cache.root / key / "shards" / "shard-00000.npz"
    mtime = shard0.stat().st_mtime_ns
    (shard0.parent / "shard-00002.npz.tmp").write_bytes(b"half a shard")
    with open_writer(cache, key, IDENTITY, N, SHARD) as writer:
        assert writer.pending() == [2, 3]
        assert not list(shard0.parent.glob("*.tmp")) and shard0.stat().st_mtime_ns == mtime
        _write(writer, writer.pending())
        entry = writer.finalize({"images_per_s": 12.5})
    for name in ("features.npy", "labels.npy", "indices.npy"):
        assert _sha(entry.path / name) == _sha(reference.path / name)


def test_sigkilled_writer_releases_lock_and_leaves_finished_shards(tmp_path: Path) -> None:
    script = f"""
import json, os, signal
import numpy as np
from ssl_pipeline.features.cache import FeatureCache, cache_key
from ssl_pipeline.features.shards import open_writer
identity = json.loads({json.dumps(IDENTITY)!r})
writer = open_writer(FeatureCache({str(tmp_path)!r}), cache_key(identity), identity, {N}, {SHARD})
for i in (0, 2):
    writer.write_shard(i, np.ones(({SHARD}, {DIM}), np.float32), np.zeros({SHARD}, np.int64), np.arange({SHARD}))
os.kill(os.getpid(), signal.SIGKILL)
"""
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == -9
    with open_writer(FeatureCache(tmp_path), cache_key(IDENTITY), IDENTITY, N, SHARD) as writer:
        assert writer.pending() == [1, 3]


def test_lock_of_a_sigkilled_writer_does_not_live_on_in_the_children_it_forked(tmp_path: Path) -> None:
    """As DataLoader workers do: the writer forks a child that outlives it. The child, still alive, must not hold
    the lock (a flock, shared through fork, did until the child exited)."""
    script = f"""
import json, os, signal, time
from ssl_pipeline.features.cache import FeatureCache, cache_key
from ssl_pipeline.features.shards import open_writer
identity = json.loads({json.dumps(IDENTITY)!r})
writer = open_writer(FeatureCache({str(tmp_path)!r}), cache_key(identity), identity, {N}, {SHARD})
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as killed:
        child = int(killed.stdout.readline())  # the pipe stays open in the child: read one line, not to EOF
        assert killed.wait() == -9
    try:
        os.kill(child, 0)  # the forked child is still running
        with open_writer(FeatureCache(tmp_path), cache_key(IDENTITY), IDENTITY, N, SHARD) as writer:
            assert writer.pending() == [0, 1, 2, 3]
        os.kill(child, 0)
    finally:
        os.kill(child, signal.SIGKILL)


def test_recorded_shard_corrupted_on_disk_is_pending_again(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    key = cache_key(IDENTITY)
    with open_writer(cache, key, IDENTITY, N, SHARD) as writer:
        _write(writer, [0, 1, 2])
        shard1 = cache.root / key / "shards" / "shard-00001.npz"
        shard1.write_bytes(shard1.read_bytes()[:-5] + b"XXXXX")
        (cache.root / key / "shards" / "shard-00002.npz").unlink()
        assert writer.pending() == [1, 2, 3]
        assert not shard1.exists()
        with pytest.raises(ValueError, match=r"shards \[1, 2, 3\] are not written"):
            writer.finalize({})


def test_flipped_byte_fails_checksum_and_truncation_fails_even_without_verify(tmp_path: Path) -> None:
    entry = _complete(tmp_path).get(cache_key(IDENTITY))
    features_path = entry.path / "features.npy"
    data = bytearray(features_path.read_bytes())
    data[-3] ^= 0x01
    features_path.write_bytes(bytes(data))
    entry.load(verify=False)  # same size and shape: only the checksum can tell
    with pytest.raises(DataError) as error:
        entry.load(verify=True)
    message = str(error.value)
    assert str(features_path) in message and "--data.extract.force true" in message and "\n" not in message
    assert f"ssl-pipeline cache clean {entry.key}" in message

    labels_path = entry.path / "labels.npy"
    labels_path.write_bytes(labels_path.read_bytes()[:-8])
    with pytest.raises(DataError, match=r"labels\.npy is corrupt or truncated"):
        entry.load(verify=False)


def test_corrupt_entry_message_suggests_a_clean_command_that_removes_it_from_its_own_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry lives under a non-default root with a space in its name; the suggested command, run as printed
    from a directory that has its own default root holding the same key, removes this entry and only it."""
    from ssl_pipeline.cli import main

    elsewhere = tmp_path / "shared disk" / "features"
    entry = _complete(elsewhere).get(cache_key(IDENTITY))
    monkeypatch.chdir(tmp_path)
    bystander = _complete(tmp_path / "data" / "features").get(cache_key(IDENTITY))
    (entry.path / "features.npy").write_bytes(b"\x93NUMPY cut short")
    with pytest.raises(DataError) as error:
        entry.load(verify=False)
    suggestion = re.search(r"remove it with `(ssl-pipeline cache clean [^`]*)`", str(error.value))
    assert suggestion is not None
    argv = shlex.split(suggestion.group(1))
    assert argv[:4] == ["ssl-pipeline", "cache", "clean", entry.key] and argv[4:] == ["--root", str(elsewhere)]
    assert main(argv[1:]) == 0
    assert not entry.path.exists() and FeatureCache(elsewhere).entries() == []
    assert bystander.path.is_dir() and bystander.load()[0].shape == (N, DIM)


def test_cache_key_changes_with_any_identity_field_and_ignores_dict_order() -> None:
    reordered = dict(reversed(list(IDENTITY.items())))
    assert cache_key(reordered) == cache_key(IDENTITY)
    assert len(cache_key(IDENTITY)) == 20
    variants = [
        {**IDENTITY, "dataset": {**IDENTITY["dataset"], "split": "test"}},
        {**IDENTITY, "backbone": {"name": "resnet18", "weights": "IMAGENET1K_V2"}},
        {**IDENTITY, "preprocess": {**IDENTITY["preprocess"], "resize": 256}},
    ]
    assert len({cache_key(v) for v in variants} | {cache_key(IDENTITY)}) == 4


def test_resume_works_when_identity_holds_tuples(tmp_path: Path) -> None:
    identity = {**IDENTITY, "preprocess": {"mean": (0.5, 0.5, 0.5)}}
    cache = FeatureCache(tmp_path)
    with open_writer(cache, cache_key(identity), identity, N, SHARD) as writer:
        _write(writer, [0])
    with open_writer(cache, cache_key(identity), identity, N, SHARD) as writer:
        assert writer.pending() == [1, 2, 3]


def test_partial_entry_with_other_layout_starts_over(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    key = cache_key(IDENTITY)
    with open_writer(cache, key, IDENTITY, N, SHARD) as writer:
        _write(writer, [0, 1])
    with open_writer(cache, key, {**IDENTITY, "note": "other"}, N, SHARD) as writer:
        assert writer.pending() == [0, 1, 2, 3]
    with open_writer(cache, key, {**IDENTITY, "note": "other"}, N, 5) as writer:
        assert writer.pending() == [0, 1]


def test_force_rebuilds_complete_entry_and_get_ignores_partial(tmp_path: Path) -> None:
    cache = _complete(tmp_path)
    key = cache_key(IDENTITY)
    with pytest.raises(DataError, match="already complete"):
        open_writer(cache, key, IDENTITY, N, SHARD)
    with open_writer(cache, key, IDENTITY, N, SHARD, force=True) as writer:
        assert writer.pending() == [0, 1, 2, 3]
        assert cache.get(key) is None
        _write(writer, [0])
        assert cache.get(key) is None
        _write(writer, [1, 2, 3])
        writer.finalize({})
    assert cache.get(key).manifest["num_items"] == N


def test_second_writer_for_same_key_is_refused_while_first_holds_lock(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    key = cache_key(IDENTITY)
    with open_writer(cache, key, IDENTITY, N, SHARD):
        with pytest.raises(DataError, match=f"cache entry {key} is being written by another process"):
            open_writer(cache, key, IDENTITY, N, SHARD)
        assert cache.clean() == []  # locked entries are not removed
    with open_writer(cache, key, IDENTITY, N, SHARD) as writer:
        assert writer.num_shards == 4


def test_entries_verify_and_clean(tmp_path: Path) -> None:
    cache = _complete(tmp_path)
    done = cache_key(IDENTITY)
    partial_identity = {**IDENTITY, "dataset": {**IDENTITY["dataset"], "split": "test"}}
    partial = cache_key(partial_identity)
    with open_writer(cache, partial, partial_identity, N, SHARD) as writer:
        _write(writer, [0])
    rows = {row["key"]: row for row in cache.entries()}
    assert rows[done]["complete"] and rows[done]["n"] == N and rows[done]["dim"] == DIM
    assert rows[done]["backbone"] == "torchvision:resnet18@IMAGENET1K_V1" and rows[done]["dataset"] == "cifar10"
    assert rows[done]["bytes"] == sum(f.stat().st_size for f in (cache.root / done).iterdir())
    assert not rows[partial]["complete"] and (rows[partial]["shards_done"], rows[partial]["num_shards"]) == (1, 4)
    assert (rows[partial]["split"], rows[partial]["backbone"]) == ("test", "resnet18")
    assert entries_table(cache.entries()).row_count == 2

    assert cache.verify() == [(done, True, "3 files ok")]
    (cache.root / done / "indices.npy").write_bytes(b"\x93NUMPY garbage")
    [(key, ok, message)] = cache.verify([done])
    assert key == done and not ok and "indices.npy" in message
    assert cache.verify([partial])[0][1] is False

    assert cache.clean(partial_only=True) == [partial]
    assert [row["key"] for row in cache.entries()] == [done]
    with pytest.raises(DataError, match="no cache entry"):
        cache.clean([partial])
    assert cache.clean() == [done] and cache.entries() == []


def test_finalize_streams_shards_instead_of_holding_them_all(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    num_shards, rows, dim = 16, 512, 1024  # 2 MiB of features per shard, 32 MiB in all
    identity = {**IDENTITY, "dataset": {"name": "big"}}
    with open_writer(cache, cache_key(identity), identity, num_shards * rows, rows) as writer:
        block = np.ones((rows, dim), dtype=np.float32)
        for i in range(num_shards):
            writer.write_shard(i, block * i, np.zeros(rows, np.int64), np.arange(*writer.shard_range(i)))
        tracemalloc.start()
        entry = writer.finalize({})
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 16 << 20  # one shard plus the 8 MiB hashing buffer, well under the 32 MiB total
    features, _, indices = entry.load(verify=False)
    assert features[rows * 5, 0] == 5 and np.array_equal(indices, np.arange(num_shards * rows))


def test_write_shard_rejects_wrong_shapes_and_dimension_changes(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    with open_writer(cache, cache_key(IDENTITY), IDENTITY, N, SHARD) as writer:
        features, labels, indices = _shard_arrays(writer, 0)
        with pytest.raises(ValueError, match="float32"):
            writer.write_shard(0, features.astype(np.float64), labels, indices)
        with pytest.raises(ValueError, match="got 4 rows"):
            writer.write_shard(0, np.zeros((4, DIM), np.float32), np.zeros(4, np.int64), np.zeros(4, np.int64))
        writer.write_shard(0, features[:2], labels[:2], indices[:2])  # one item skipped as unreadable
        with pytest.raises(ValueError, match="dimension 5"):
            writer.write_shard(1, np.zeros((3, 5), np.float32), labels, indices)
        assert writer.pending() == [1, 2, 3]


HOLD_LOCK = """
import json, sys
from pathlib import Path
from ssl_pipeline.features.cache import FeatureCache, cache_key
from ssl_pipeline.features.shards import open_writer
identity = json.loads(sys.argv[2])
writer = open_writer(FeatureCache(sys.argv[1]), cache_key(identity), identity, 10, 3, holder="rank 0 of 2")
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_writer_or_rank_refused_by_another_writers_lock_names_the_lock_file_and_its_holder(tmp_path: Path) -> None:
    """Another process holds the entry (as rank 0 of a job). A second writer, and a rank of another job asking for
    its block of shards, are each refused in one line naming the lock file, the holder's pid and host; nothing of
    the entry is touched."""
    import socket

    from ssl_pipeline.features.shards import join_writer

    cache, key = FeatureCache(tmp_path), cache_key(IDENTITY)
    with subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path), json.dumps(IDENTITY)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout.readline().strip() == "locked"
            before = sorted(p.name for p in (tmp_path / key).rglob("*"))
            lock = tmp_path / key / ".lock"
            who = f"pid {holder.pid} on host {socket.gethostname()} (rank 0 of 2, since "
            with pytest.raises(DataError) as error:
                open_writer(cache, key, IDENTITY, N, SHARD)
            message = str(error.value)
            assert message.startswith(f"cache entry {key} is being written by another process (lock {lock} held by "
                                       f"{who}") and "\n" not in message
            with pytest.raises(DataError) as error:  # its probe of byte 0 is refused, as it should be; its block too
                join_writer(cache, key, IDENTITY, N, SHARD, [1, 2], "float32", "rank 1 of 3", socket.gethostname())
            message = str(error.value)
            assert message.startswith(f"cache entry {key}: rank 1 of 3 cannot lock its shards 1–2: lock {lock} is "
                                      f"held by {who}") and "\n" not in message
            assert sorted(p.name for p in (tmp_path / key).rglob("*")) == before
        finally:
            holder.stdin.close()
    with open_writer(cache, key, IDENTITY, N, SHARD) as writer:  # the holder is gone, and so is its lock
        assert writer.pending() == [0, 1, 2, 3]


def test_ranks_write_their_own_blocks_and_rank_zero_consolidates_every_shard(tmp_path: Path) -> None:
    """The shard protocol of ranks in one process standing for three (the other ranks' block locks are left out:
    record locks never conflict within a process): rank 0 keeps the entry locked while the others write, refuses
    to consolidate while a shard is missing, and makes the entry a single writer makes."""
    from ssl_pipeline.features.locks import lock_entry
    from ssl_pipeline.features.shards import ShardWriter

    reference = _complete(tmp_path / "single").get(cache_key(IDENTITY))
    cache, key = FeatureCache(tmp_path / "ranks"), cache_key(IDENTITY)
    leader = open_writer(cache, key, IDENTITY, N, SHARD, holder="rank 0 of 3")
    assert leader.pending() == [0, 1, 2, 3]
    leader.hand_over([0])
    assert lock_entry(cache.entry_dir(key)) is None  # the entry's byte stays locked
    others = [ShardWriter(key, cache.entry_dir(key), IDENTITY, N, SHARD, None, leader=False) for _ in range(2)]
    _write(others[1], [2, 3])
    _write(leader, [0])
    with pytest.raises(ValueError, match=r"shards \[1\] are not written"):
        leader.finalize({})
    _write(others[0], [1])
    leader.reclaim()
    entry = leader.finalize({"images_per_s": 12.5})
    leader.close()
    for name in ("features.npy", "labels.npy", "indices.npy"):
        assert _sha(entry.path / name) == _sha(reference.path / name)


def test_a_shard_changed_on_disk_before_consolidation_is_refused_and_redone(tmp_path: Path) -> None:
    cache, key = FeatureCache(tmp_path), cache_key(IDENTITY)
    with open_writer(cache, key, IDENTITY, N, SHARD) as writer:
        _write(writer, writer.pending())
        shard = tmp_path / key / "shards" / "shard-00002.npz"
        shard.write_bytes(shard.read_bytes()[:-1] + b"X")
        with pytest.raises(DataError, match="shard-00002.npz changed on disk during extraction"):
            writer.finalize({})
    with open_writer(cache, key, IDENTITY, N, SHARD) as writer:
        assert writer.pending() == [2]


def test_partial_entry_of_the_previous_format_resumes_from_its_recorded_shards(tmp_path: Path) -> None:
    """Before shards had records of their own, progress.json listed them: such an entry resumes, not restarts."""
    reference = _complete(tmp_path / "reference").get(cache_key(IDENTITY))
    cache, key = FeatureCache(tmp_path / "old"), cache_key(IDENTITY)
    with open_writer(cache, key, IDENTITY, N, SHARD) as writer:
        _write(writer, [0, 1])
    shards = tmp_path / "old" / key / "shards"
    progress = json.loads((tmp_path / "old" / key / "progress.json").read_text())
    progress |= {"dim": DIM, "shards": {str(i): {"sha256": _sha(shards / f"shard-0000{i}.npz"), "rows": SHARD}
                                        for i in (0, 1)}}
    (tmp_path / "old" / key / "progress.json").write_text(json.dumps(progress))
    for record in shards.glob("*.json"):
        record.unlink()
    with open_writer(cache, key, IDENTITY, N, SHARD) as writer:
        assert writer.pending() == [2, 3]
        _write(writer, [2, 3])
        entry = writer.finalize({})
    assert _sha(entry.path / "features.npy") == _sha(reference.path / "features.npy")


def test_float16_entry_stores_half_the_bytes_and_says_its_dtype(tmp_path: Path) -> None:
    cache, key = FeatureCache(tmp_path), cache_key({**IDENTITY, "dtype": "float16"})
    with open_writer(cache, key, IDENTITY, N, SHARD, dtype="float16") as writer:
        with pytest.raises(ValueError, match="features must be float16"):
            writer.write_shard(0, *_shard_arrays(writer, 0))
        for i in writer.pending():
            features, labels, indices = _shard_arrays(writer, i)
            writer.write_shard(i, features.astype(np.float16), labels, indices)
        entry = writer.finalize({})
    features, _, _ = entry.load()
    assert features.dtype == np.float16 and entry.manifest["dtype"] == "float16"
    assert features.nbytes == N * DIM * 2
    expected = np.concatenate([_shard_arrays(writer, i)[0] for i in range(4)]).astype(np.float16)
    assert np.array_equal(features, expected)


def test_file_systems_without_working_locks_are_named_in_one_line(tmp_path: Path, monkeypatch) -> None:
    """Locks refused as unsupported (NFS with nolock: ENOLCK), locks another process can take although this one
    holds them, node-local locks read from the mount options, and ranks that find rank 0's lock not enforced."""
    import errno
    import fcntl
    import socket

    from ssl_pipeline.features import locks
    from ssl_pipeline.features.shards import join_writer

    cache, key = FeatureCache(tmp_path), cache_key(IDENTITY)
    unlocked = open(tmp_path / "not-locked", "ab")  # noqa: SIM115
    try:
        assert not locks.locks_enforced(unlocked)  # a child takes byte 0 of a file nobody locked
    finally:
        unlocked.close()
    with open_writer(cache, key, IDENTITY, N, SHARD) as writer:
        assert locks.locks_enforced(writer._lock)
    with pytest.raises(DataError) as error:  # nobody holds the entry: as if rank 0's lock did not reach this node
        join_writer(cache, key, IDENTITY, N, SHARD, [2, 3], "float32", "rank 1 of 2", "node-a")
    assert str(error.value).startswith(f"locks on {tmp_path / key / '.lock'} are not enforced across nodes (")
    assert f"{socket.gethostname()} and node-a): rank 1 of 2 took the lock rank 0 holds" in str(error.value)

    mountinfo = textwrap.dedent("""\
        22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
        40 22 0:35 / /shared rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2,local_lock=all,addr=10.0.0.1
        41 22 0:36 / /lustre rw,relatime shared:21 - lustre 10.0.0.2@tcp:/fs rw,localflock
        42 22 0:37 / /shared/scratch rw,relatime shared:22 - nfs4 server:/scratch rw,vers=4.2,local_lock=none
        """)
    assert locks.node_local_locks(Path("/shared/features"), mountinfo) == "nfs4 mount /shared with local_lock=all"
    assert locks.node_local_locks(Path("/lustre/x"), mountinfo) == "lustre mount /lustre with localflock"
    assert locks.node_local_locks(Path("/shared/scratch/f"), mountinfo) is None
    assert locks.node_local_locks(Path("/home/me"), mountinfo) is None

    def no_locks(*args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    with pytest.raises(DataError) as error:
        open_writer(cache, cache_key({**IDENTITY, "note": "other"}), IDENTITY, N, SHARD)
    assert "(No locks available): the file system of the cache root does not support POSIX record locks" in str(
        error.value) and "\n" not in str(error.value)
