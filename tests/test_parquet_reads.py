"""Which Ray Data reader reads a Parquet folder (coderl_ray.data.parquet): V1 for small local folders, Ray Data's
own choice otherwise, with the same rows either way."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coderl_ray.data.parquet import SMALL_BYTES_ENV, local_size, read_parquet


def _folder(path, rows: int, files: int = 2):
    path.mkdir(parents=True)
    for f in range(files):
        ids = list(range(f * rows, (f + 1) * rows))
        pq.write_table(pa.table({"sample_id": [f"s{i}" for i in ids], "token_ids": [[i, i + 1] for i in ids]}),
                       path / f"part-{f}.parquet")
    return path


def test_local_size_adds_up_files_and_gives_up_on_what_it_cannot_stat(tmp_path):
    a = _folder(tmp_path / "a", 10)
    b = _folder(tmp_path / "b", 10, files=1)
    sizes = [f.stat().st_size for f in [*a.iterdir(), *b.iterdir()]]
    assert local_size(str(a), 10**9) == sum(sizes[:2])
    assert local_size([str(a), str(b / "part-0.parquet")], 10**9) == sum(sizes)
    assert local_size([str(a), str(b)], 1) in sizes[:2]  # stops at the first file past the limit
    assert local_size(["s3://bucket/round_0001"], 10**9) is None
    assert local_size([str(a), str(tmp_path / "missing")], 10**9) is None


def _reader(ds) -> str:
    # The name of the read operator in the dataset's logical plan: "ReadParquet" (V1), "ReadFilesParquetV2" (V2).
    return ds._logical_plan.dag.name


@pytest.mark.parametrize("limit, expected", [(None, "ReadParquet"), ("0", "ReadFilesParquetV2"),
                                             ("100", "ReadFilesParquetV2")])
def test_small_local_folders_are_read_with_v1_and_the_rows_do_not_change(ray_cluster, tmp_path, monkeypatch, limit,
                                                                         expected):
    import ray.data

    folder = _folder(tmp_path / "round_0001", 50)  # ~2 KB: small by default, large for a 100-byte limit
    ctx = ray.data.DataContext.get_current()
    assert ctx.use_datasource_v2  # Ray Data's default; the tests' session keeps it
    if limit is None:
        monkeypatch.delenv(SMALL_BYTES_ENV, raising=False)
    else:
        monkeypatch.setenv(SMALL_BYTES_ENV, limit)
    ds = read_parquet(str(folder))
    assert _reader(ds) == expected
    assert ctx.use_datasource_v2  # switched for that read alone
    assert sorted(r["sample_id"] for r in ds.take_all()) == sorted(f"s{i}" for i in range(100))


def test_a_user_who_turned_v2_off_keeps_v1_for_every_read(ray_cluster, tmp_path, monkeypatch):
    import ray.data

    monkeypatch.setenv(SMALL_BYTES_ENV, "0")
    ctx = ray.data.DataContext.get_current()
    monkeypatch.setattr(ctx, "use_datasource_v2", False)
    assert _reader(read_parquet(str(_folder(tmp_path / "r", 5)))) == "ReadParquet"
    assert ctx.use_datasource_v2 is False
