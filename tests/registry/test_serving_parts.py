"""The serving app's parts without a server: its settings, the request checks and the alias follower (a real
SQLite registry whose versions point nowhere: the follower's loader is injected, so no model loads)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from pipeline.registry.registry import client
from pipeline.serving.follow import ModelFollower
from pipeline.serving.options import IMPORT_PATH, ServeOptions, parse_replicas
from pipeline.serving.requests import RequestRefused, decode, parse_params

URI = "sqlite:///x.db"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "1 <= MIN <= MAX, got 3-2"),
        ({"max_batch_size": 0}, "max_batch_size must be positive"),
        ({"backend": "tensorrt"}, "backend 'tensorrt'"),
        ({"slice": "big"}, "big"),
        ({"model": "models:/a/b/c"}, "model reference 'models:/a/b/c' not understood"),
        ({"port": 70000}, "port must be in 1-65535"),
    ],
)
def test_bad_settings_are_named(changes, message):
    with pytest.raises(ValueError, match="") as caught:
        ServeOptions(**{"model": "models:/m@champion", "tracking_uri": URI, **changes})
    assert message in str(caught.value)


def test_a_config_file_carries_the_options_and_builds_the_same_application(tmp_path, cli):
    out = tmp_path / "serve.yaml"
    done = cli("serve", "models:/shapes@champion", "--replicas", "1-4", "--tracking-uri", URI, "--write-config", out)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(config)  # what `serve deploy` checks first
    app = config["applications"][0]
    assert (app["name"], app["import_path"], app["route_prefix"]) == ("effdet-shapes", IMPORT_PATH, "/")
    options = ServeOptions.from_dict(app["args"])  # what `serve deploy` hands the builder
    assert (options.min_replicas, options.max_replicas, options.model) == (1, 4, "models:/shapes@champion")
    assert options.deployment_options()["autoscaling_config"]["max_replicas"] == 4
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8000, "request_timeout_s": 60.0}
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['replicas'\]"):
        ServeOptions.from_dict({**app["args"], "replicas": 2})


def test_replica_ranges():
    assert parse_replicas("2") == (2, 2) and parse_replicas("1-4") == (1, 4)
    with pytest.raises(ValueError, match="expected N or MIN-MAX"):
        parse_replicas("one")


def test_request_parameters():
    assert parse_params({}).score_threshold == 0.3 and parse_params({}).max_detections is None
    params = parse_params({"score_threshold": "0.5", "max_detections": "7"})
    assert (params.score_threshold, params.max_detections) == (0.5, 7)
    for query in ({"score_threshold": "nan"}, {"max_detections": "-1"}, {"max_detections": "1.5"}):
        with pytest.raises(RequestRefused) as caught:
            parse_params(query)
        assert caught.value.status == 422 and next(iter(query)) in caught.value.message


def test_a_truncated_image_is_unsupported_media_not_a_crash(dataset):
    image = next((dataset / "images").iterdir()).read_bytes()
    assert decode(image, 10**8).shape[2] == 3
    with pytest.raises(RequestRefused) as caught:
        decode(image[: len(image) // 3], 10**8)
    assert caught.value.status == 415 and "cannot decode" in caught.value.message


@pytest.fixture
def store(tmp_path):
    """A registry with model `m`: versions 1-3 (sources that hold nothing; the loader below never reads them)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = client(uri)
    c.create_registered_model("m")
    for _ in range(3):
        c.create_model_version("m", str(tmp_path))
    c.set_registered_model_alias("m", "live", "1")
    return SimpleNamespace(uri=uri, client=c)


def _follower(store, ref: str, broken: set[str]):
    loads, logs = [], []

    def load(name: str, version: str):
        loads.append(version)
        if version in broken:
            raise OSError(f"version {version}: model files missing")
        return SimpleNamespace(name=name, version=version)

    return ModelFollower(store.uri, ref, load, log=logs.append), loads, logs


def test_the_follower_moves_with_the_alias_and_keeps_serving_through_a_version_that_fails(store):
    follower, loads, logs = _follower(store, "models:/m@live", broken={"2"})
    assert follower.current.version == "1" and follower.check()["action"] == "unchanged"
    store.client.set_registered_model_alias("m", "live", "2")
    for _ in range(3):  # the interval's checks: tried once, logged once, then skipped
        result = follower.check()
    assert result == {"action": "skipped", "version": "1", "target": "2"}
    assert loads == ["1", "2"] and len(logs) == 1 and "version 2 not served: OSError" in logs[0]
    assert follower.check(retry_failed=True)["action"] == "failed" and loads == ["1", "2", "2"]  # on demand: again
    store.client.set_registered_model_alias("m", "live", "3")
    assert follower.check() == {"action": "moved", "version": "3", "previous": "1"}
    assert follower.current.version == "3" and "moved from version 1 to 3" in logs[-1]


def test_a_pinned_version_never_moves(store):
    follower, loads, _ = _follower(store, "models:/m/2", broken=set())
    store.client.set_registered_model_alias("m", "live", "3")
    assert follower.check() == {"action": "pinned", "version": "2"} and loads == ["2"]


def test_a_deleted_alias_keeps_the_version_serving(store):
    follower, _, logs = _follower(store, "models:/m@live", broken=set())
    store.client.delete_registered_model_alias("m", "live")
    result = follower.check()
    assert (result["action"], result["version"]) == ("failed", "1") and "has no alias 'live'" in result["error"]


def test_serve_refuses_an_unknown_model_before_ray_starts(store, cli):
    done = cli("serve", "models:/nothing@champion", "--tracking-uri", store.uri, timeout=120)
    assert done.returncode == 1 and "no registered model 'nothing'" in done.stderr and "['m']" in done.stderr
    assert "Ray" not in done.stdout + done.stderr  # refused from the registry alone
