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
    with pytest.warns(UserWarning, match="damaged cache file"):
        model = zoo.load("tiny-test")
    assert TRAINED["n"] == 2 and torch.all(model.weight == 0.5)
    zoo.read(file)  # the rewritten file verifies


def test_read_rejects_bytes_that_do_not_match_their_hash(tmp_path):
    zoo.save(tmp_path / "x.fmz", {"a": torch.ones(2)})
    data = (tmp_path / "x.fmz").read_bytes()
    (tmp_path / "x.fmz").write_bytes(data.replace(b"sha256=", b"sha256=0", 1))
    with pytest.raises(zoo.CorruptCacheError, match="sha256 mismatch"):
        zoo.read(tmp_path / "x.fmz")


def test_changed_config_retrains(monkeypatch):
    zoo.load("tiny-test")
    recipe = zoo.recipe("tiny-test")
    zoo.register(
        "tiny-test", config=lambda: {"width": 3, "value": 2.0}, build=recipe.build, train=recipe.train
    )
    with pytest.warns(UserWarning, match="another config"):
        model = zoo.load("tiny-test")
    assert torch.all(model.weight == 2.0)


def test_two_writers_leave_one_valid_file_and_no_temporaries(tmp_path):
    file = tmp_path / "zoo" / "race.fmz"
    errors = []

    def writer(value):
        try:
            for _ in range(20):
                zoo.save(file, {"w": torch.full((256, 256), float(value))})
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for _ in range(50):  # readers never see a half-written file
        if file.exists():
            assert zoo.read(file)["w"][0, 0].item() in (1.0, 2.0)
    for t in threads:
        t.join()
    assert not errors
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
    with pytest.raises(KeyError, match="unknown model 'nope'.*tiny-test"):
        zoo.load("nope")
    with pytest.raises(ValueError, match="without '/'"):
        zoo.register("a/b", config=dict, build=dict, train=dict)
    with pytest.raises(TypeError, match="build must be callable"):
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
