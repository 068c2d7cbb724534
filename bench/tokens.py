"""Content token for ambiguous listings: parquet footer digest vs full-file hash.

Writes parquet files of ~1 MB, ~50 MB and ~500 MB with polars (columns shaped like the demo's
sources: an int id, a timestamp, float features, a string cohort), then times, per file (page cache
warm, best of 3):

- ``footer``: SHA-256 of the last ``8 + metadata length`` bytes (Thrift footer + length + magic),
- ``sha256`` / ``blake2b``: a hash of the whole file in 1 MiB blocks,

and checks whether a same-size edit of values keeps the footer: two values of one column swapped
inside one row group (row-group min/max, null counts and sizes stay; only the data pages change).

    .venv/bin/python -m bench.tokens [--sizes 1,50,500] [--dir /tmp/tokens-bench]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROWS_PER_MB = 19_900  # ~ rows of this schema per MB with zstd (measured: 155,000 rows, 7.8 MB)


def frame(rows: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "customer_id": np.arange(rows, dtype=np.int64),
            "event_timestamp": pl.datetime_range(
                pl.datetime(2025, 1, 1), pl.datetime(2025, 1, 1) + pl.duration(seconds=rows - 1), "1s", eager=True
            ),
            **{f"f{i}": rng.normal(size=rows) for i in range(6)},
            "region": rng.choice(["east", "north", "south", "west"], size=rows),
        }
    )


def footer_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        fh.seek(-8, os.SEEK_END)
        tail = fh.read(8)
        assert tail[4:] == b"PAR1", f"{path} is not parquet"
        length = int.from_bytes(tail[:4], "little")
        fh.seek(-(8 + length), os.SEEK_END)
        return hashlib.sha256(fh.read(8 + length)).hexdigest()


def file_digest(path: Path, name: str) -> str:
    digest = hashlib.new(name)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def best_of(fn, *args, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


def swap_two_values(df: pl.DataFrame, column: str, i: int = 10, j: int = 11) -> pl.DataFrame:
    values = df[column].to_numpy().copy()
    values[i], values[j] = values[j], values[i]
    return df.with_columns(pl.Series(column, values))


def footer_blindness(workdir: Path, compression: str, rows: int = 100_000) -> tuple[bool, bool, bool]:
    """(same size, content differs, footer identical) after swapping two float values."""
    df = frame(rows, seed=1)
    a, b = workdir / f"a-{compression}.parquet", workdir / f"b-{compression}.parquet"
    df.write_parquet(a, compression=compression, statistics=True)
    swap_two_values(df, "f0").write_parquet(b, compression=compression, statistics=True)
    same_size = a.stat().st_size == b.stat().st_size
    differs = file_digest(a, "sha256") != file_digest(b, "sha256")
    return same_size, differs, same_size and footer_digest(a) == footer_digest(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,50,500", help="target file sizes in MB")
    parser.add_argument("--dir", default=None, help="folder for the files (default: a temp dir, removed)")
    args = parser.parse_args()
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="tokens-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print("| file | rows | footer bytes | footer digest | sha256 full | blake2b full |")
        print("|---|---:|---:|---:|---:|---:|")
        for mb in (int(s) for s in args.sizes.split(",")):
            path = workdir / f"f{mb}.parquet"
            rows = mb * ROWS_PER_MB
            frame(rows).write_parquet(path)  # polars defaults: zstd, statistics
            with open(path, "rb") as fh:
                fh.seek(-8, os.SEEK_END)
                footer = int.from_bytes(fh.read(4), "little") + 8
            file_digest(path, "sha256")  # warm the page cache
            print(
                f"| {path.stat().st_size / 1e6:.1f} MB | {rows:,} | {footer:,} | "
                f"{best_of(footer_digest, path) * 1e3:.3f} ms | {best_of(file_digest, path, 'sha256') * 1e3:.1f} ms | "
                f"{best_of(file_digest, path, 'blake2b') * 1e3:.1f} ms |"
            )
            path.unlink()
        print()
        print("| compression | two float values swapped in one row group: same size | content differs | footer identical |")
        print("|---|---|---|---|")
        for compression in ("uncompressed", "snappy", "lz4", "zstd"):
            same, differs, identical = footer_blindness(workdir, compression)
            print(f"| {compression} | {same} | {differs} | {identical} |")
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
