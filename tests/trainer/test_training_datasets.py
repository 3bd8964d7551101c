"""The datasets the booking form offers: data.yaml files under TRAINING_DATA_ROOTS, found by a
bounded walk."""

import pytest
import time_machine

from trainer import selectors
from trainer.selectors import training_datasets


def dataset(root, folder):
    path = root / folder / "data.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("path: .\n")
    return str(path)


@pytest.fixture
def roots(tmp_path, settings):
    first, second = (tmp_path / "shared").resolve(), (tmp_path / "scratch").resolve()
    first.mkdir()
    second.mkdir()
    settings.TRAINING_DATA_ROOTS = [first, second]
    return first, second


def test_each_roots_demo_dataset_comes_first_then_the_others_by_path(roots):
    first, second = roots
    others = [dataset(first, "coco"), dataset(second, "alpha"), dataset(first, "team/parts/v2")]
    demos = [dataset(second, "demo"), dataset(first, "demo")]

    assert training_datasets() == sorted(demos) + sorted(others)


def test_a_datasets_own_folders_hidden_folders_and_deep_folders_are_not_searched(roots):
    first, _ = roots
    found = dataset(first, "demo")
    dataset(first, "demo/images/train")
    dataset(first, ".cache/old")
    dataset(first, "a/b/c/too-deep")

    assert training_datasets() == [found]


def test_symlinks_are_not_followed(roots, tmp_path):
    first, _ = roots
    outside = tmp_path / "outside"
    dataset(outside, "secret")
    (first / "linked").symlink_to(outside / "secret")
    (first / "loop").symlink_to(first)
    (first / "file-link").mkdir()
    (first / "file-link" / "data.yaml").symlink_to(outside / "secret" / "data.yaml")

    assert training_datasets() == []


def test_the_walk_stops_at_its_budget_of_folders(roots, monkeypatch):
    first, _ = roots
    for i in range(10):
        dataset(first, f"set{i:02d}")
    monkeypatch.setattr(selectors, "DATASET_FOLDERS", 4)  # the root and three of its folders

    assert training_datasets() == [str(first / f"set{i:02d}" / "data.yaml") for i in range(3)]


def test_the_walk_stops_at_its_budget_of_entries(roots, monkeypatch):
    first, _ = roots
    crowded = first / "crowded"
    crowded.mkdir()
    for i in range(50):
        (crowded / f"image{i:03d}.jpg").write_bytes(b"")
    dataset(first, "zzz")
    monkeypatch.setattr(selectors, "DATASET_ENTRIES", 20)

    assert training_datasets() == []


def test_at_most_a_screenful_is_offered(roots, monkeypatch):
    first, _ = roots
    for i in range(5):
        dataset(first, f"set{i}")
    monkeypatch.setattr(selectors, "DATASETS_SHOWN", 2)

    assert training_datasets() == [str(first / "set0" / "data.yaml"), str(first / "set1" / "data.yaml")]


def test_a_missing_root_offers_nothing_and_does_not_fail(settings, tmp_path):
    settings.TRAINING_DATA_ROOTS = [(tmp_path / "not-mounted").resolve()]

    assert training_datasets() == []


def test_the_walk_is_kept_a_minute_then_done_again(roots):
    first, _ = roots
    demo = dataset(first, "demo")

    with time_machine.travel("2030-01-07 09:00Z", tick=False) as clock:
        assert training_datasets() == [demo]
        added = dataset(first, "coco")
        kept = training_datasets()
        clock.shift(selectors.DATASETS_CACHE_SECONDS + 1)
        walked_again = training_datasets()

    assert kept == [demo]
    assert walked_again == [demo, added]
