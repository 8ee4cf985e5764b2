import threading
import warnings

import pytest
import torch

from fmbook import zoo

TRAINED = {"n": 0}


@pytest.fixture(autouse=True)
def tiny_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path))
    monkeypatch.setenv("FMBOOK_DEVICE", "cpu")
    TRAINED["n"] = 0

    def train(model, config):
        TRAINED["n"] += 1
        with torch.no_grad():
            model.weight.fill_(config["value"])

    zoo.register(
        "tiny-test",
        config=lambda: {"width": 3, "value": 0.5},
        build=lambda c: torch.nn.Linear(c["width"], c["width"]),
        train=train,
    )
    yield
    zoo._RECIPES.pop("tiny-test", None)


def test_first_load_trains_and_caches_then_reloads_without_training():
    model = zoo.load("tiny-test")
    assert TRAINED["n"] == 1 and not model.training
    assert torch.all(model.weight == 0.5)
    file = zoo.path("tiny-test")
    assert file.name == "tiny-test-test.fmz" and file.read_bytes().startswith(zoo.MAGIC)
    again = zoo.load("tiny-test")
    assert TRAINED["n"] == 1
    torch.testing.assert_close(again.state_dict(), model.state_dict())


def test_cache_records_config_and_budget():
    zoo.load("tiny-test")
    payload = zoo.read(zoo.path("tiny-test"))
    assert payload["config"] == {"width": 3, "value": 0.5}
    assert payload["budget"] == "test" and payload["name"] == "tiny-test"


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:-10] + bytes(10),  # altered tail
        lambda b: b"garbage",  # not a zoo file
        lambda b: b"",  # empty
    ],
)
def test_damaged_file_is_never_loaded_and_is_retrained(damage):
    zoo.load("tiny-test")
    file = zoo.path("tiny-test")
    file.write_bytes(damage(file.read_bytes()))
    with pytest.warns(UserWarning, match="damaged"):
        model = zoo.load("tiny-test")
    assert TRAINED["n"] == 2 and torch.all(model.weight == 0.5)
    zoo.read(file)  # the rewritten file verifies


def test_read_rejects_bytes_that_do_not_match_their_hash(tmp_path):
    zoo.save(tmp_path / "x.fmz", {"a": torch.ones(2)})
    data = (tmp_path / "x.fmz").read_bytes()
    (tmp_path / "x.fmz").write_bytes(data.replace(b"sha256=", b"sha256=0", 1))
    with pytest.raises(zoo.CorruptCacheError, match="sha256"):
        zoo.read(tmp_path / "x.fmz")


def test_changed_config_retrains(monkeypatch):
    zoo.load("tiny-test")
    recipe = zoo.recipe("tiny-test")
    zoo.register(
        "tiny-test",
        config=lambda: {"width": 3, "value": 2.0},
        build=recipe.build,
        train=recipe.train,
    )
    with pytest.warns(UserWarning, match="config"):
        model = zoo.load("tiny-test")
    assert torch.all(model.weight == 2.0)


def test_readers_during_rewrites_see_whole_files_and_no_temporaries_are_left(tmp_path):
    """Two writers rewrite one file many times while a reader reads it over and over: every
    read is a whole, verified file (the old one or the new one), never a half-written one."""
    file = tmp_path / "zoo" / "race.fmz"
    writes, min_reads = 60, 20
    errors, reads, damaged = [], [], []
    enough = threading.Event()

    def writer(value):
        try:
            done = 0
            while done < writes or (not enough.is_set() and done < 50 * writes):
                zoo.save(file, {"w": torch.full((512, 512), float(value))})
                done += 1
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    while not file.exists() and any(t.is_alive() for t in threads):
        pass  # the reader starts once the first file is there, while the writers go on
    while any(t.is_alive() for t in threads):
        try:
            w = zoo.read(file)["w"]
        except zoo.CorruptCacheError as err:
            damaged.append(err)
            continue
        assert w.shape == (512, 512) and w.unique().tolist() in ([1.0], [2.0])
        reads.append(w[0, 0].item())
        if len(reads) >= min_reads:
            enough.set()
    for t in threads:
        t.join()
    assert not errors and not damaged, (errors, damaged[:3])
    assert len(reads) >= min_reads, f"the reader overlapped the writers only {len(reads)} times"
    assert zoo.read(file)["w"][0, 0].item() in (1.0, 2.0)
    assert [p.name for p in file.parent.iterdir()] == ["race.fmz"]


def test_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(zoo.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        zoo.save(tmp_path / "y.fmz", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_and_bad_registration():
    with pytest.raises(KeyError, match="unknown model"):
        zoo.load("nope")
    with pytest.raises(ValueError, match="name"):
        zoo.register("a/b", config=dict, build=dict, train=dict)
    with pytest.raises(TypeError, match="callable"):
        zoo.register("ok", config=dict, build=3, train=dict)


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("FMBOOK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert zoo.cache_dir() == tmp_path / "fmbook"


class Evil:
    """Any pickled class: weights_only loading must refuse it."""


def test_weights_only_load_refuses_arbitrary_objects(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zoo.save(tmp_path / "evil.fmz", {"x": Evil()})
    with pytest.raises(zoo.CorruptCacheError, match="cannot be read"):
        zoo.read(tmp_path / "evil.fmz")


def test_meta_is_saved_and_reloaded():
    recipe = zoo.recipe("tiny-test")

    def train(model, config):
        recipe.train(model, config)
        return {"history": [3.0, 2.0, 1.5]}

    zoo.register("tiny-test", config=recipe.config, build=recipe.build, train=train)
    _, meta = zoo.load("tiny-test", with_meta=True)
    assert meta == {"history": [3.0, 2.0, 1.5], "cached": False}
    _, meta = zoo.load("tiny-test", with_meta=True)
    assert meta == {"history": [3.0, 2.0, 1.5], "cached": True}


def test_a_model_is_the_same_whoever_trains_it_and_loading_leaves_the_callers_randomness_alone():
    def noisy(model, config):  # training that draws random numbers, like every real recipe
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))

    zoo.register(
        "noisy-test",
        config=lambda: {"width": 4, "seed": 3},
        build=lambda c: torch.nn.Linear(c["width"], c["width"]),
        train=noisy,
    )
    try:
        torch.manual_seed(1)
        first = zoo.load("noisy-test", quiet=True)
        after_training = torch.rand(3)
        zoo.path("noisy-test").unlink()
        torch.manual_seed(2)  # another notebook, another state
        second = zoo.load("noisy-test", quiet=True)
        torch.testing.assert_close(first.state_dict(), second.state_dict())
        torch.manual_seed(1)
        zoo.load("noisy-test", quiet=True)  # from the cache this time
        assert torch.equal(torch.rand(3), after_training)
    finally:
        zoo._RECIPES.pop("noisy-test", None)
