"""egot2.jobs: ordered parallel jobs, errors that name the item, idempotent and resumable output steps."""
import os

import pytest

from egot2 import jobs


def _square(value):
    return value * value


def _fail_on_three(value):
    if value == 3:
        raise FileNotFoundError(f"input {value} is missing")
    return value


def test_run_jobs_keeps_order_inline_and_in_a_pool():
    items = list(range(7))
    assert jobs.run_jobs(_square, items, workers=1, progress=False) == [i * i for i in items]
    assert jobs.run_jobs(_square, items, workers=2, progress=False) == [i * i for i in items]


@pytest.mark.parametrize("workers", [1, 2])
def test_run_jobs_reraises_the_first_error_with_its_type_and_item(workers):
    with pytest.raises(FileNotFoundError, match="input 3 is missing") as info:
        jobs.run_jobs(_fail_on_three, range(6), workers=workers, desc="unit", progress=False)
    assert any("unit: failed on item 3" in note for note in getattr(info.value, "__notes__", []))


def test_build_once_skips_complete_output_and_rebuilds_incomplete(tmp_path):
    target = tmp_path / "frames" / "clip"
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "a.txt").write_text("a")

    assert jobs.build_once(target, "fp1", build) is True
    assert (target / "a.txt").read_text() == "a" and jobs.is_done(target, "fp1")
    assert not any(".staging-" in p.name for p in target.parent.iterdir())
    mtime = (target / "a.txt").stat().st_mtime_ns
    assert jobs.build_once(target, "fp1", build) is False and len(calls) == 1
    assert (target / "a.txt").stat().st_mtime_ns == mtime
    # New inputs (another fingerprint) or a lost marker mean the folder is not trusted: rebuilt from scratch.
    (target / "stale.txt").write_text("old")
    assert jobs.build_once(target, "fp2", build) is True and not (target / "stale.txt").exists()
    jobs.clear_done(target)
    assert not jobs.is_done(target) and jobs.build_once(target, "fp2", build) is True and len(calls) == 3
    # Output folders are readable by others (mkdtemp alone would leave them private).
    assert oct(target.stat().st_mode & 0o777) != oct(0o700)


def test_failed_build_leaves_previous_output_and_no_staging(tmp_path):
    target = tmp_path / "out"
    jobs.build_once(target, "fp1", lambda folder: (folder / "ok.txt").write_text("ok"))

    def broken(folder):
        (folder / "half.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        jobs.build_once(target, "fp2", broken)
    assert (target / "ok.txt").exists() and not (target / "half.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if ".staging-" in p.name] == []
    assert not jobs.is_done(target, "fp2")


def test_remove_stale_staging(tmp_path):
    (tmp_path / ".clip.staging-abc").mkdir()
    (tmp_path / ".clip.staging-abc" / "img_00001.jpg").write_bytes(b"x")
    (tmp_path / "clip").mkdir()
    assert jobs.remove_stale_staging(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]
    assert jobs.remove_stale_staging(tmp_path / "missing") == 0


def test_atomic_writes_are_no_ops_when_unchanged(tmp_path):
    path = tmp_path / "sub" / "x.json"
    assert jobs.write_json_atomic(path, {"b": 1, "a": [1, 2]}, sort_keys=True) is True
    assert path.read_text() == '{"a": [1, 2], "b": 1}'
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert jobs.write_json_atomic(path, {"a": [1, 2], "b": 1}, sort_keys=True) is False
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert jobs.write_text_atomic(path, "new") is True and path.read_text() == "new"
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_fingerprint_and_file_identity(tmp_path):
    assert jobs.fingerprint("a", 1) == jobs.fingerprint("a", 1) != jobs.fingerprint("a", 2)
    path = tmp_path / "v.mp4"
    path.write_bytes(b"abc")
    assert jobs.file_identity(path)[:2] == ["v.mp4", 3]
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        jobs.file_identity(tmp_path / "nope.mp4")


def test_relative_symlink(tmp_path):
    target = tmp_path / "social" / "video_imgs"
    target.mkdir(parents=True)
    link = tmp_path / "lam" / "video_imgs"
    assert jobs.relative_symlink(link, target) is True
    assert os.readlink(link) == os.path.join("..", "social", "video_imgs") and link.resolve() == target.resolve()
    assert jobs.relative_symlink(link, target) is False
    real = tmp_path / "ttm" / "video_imgs"
    real.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="ttm/video_imgs"):
        jobs.relative_symlink(real, target)
