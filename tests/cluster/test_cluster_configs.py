"""The cluster definitions validate (Ray's own launcher validation; the KubeRay CRD schema) and keep the properties
the pipeline relies on (the head's `train_driver` resource, autoscaling GPU workers); a planted mistake in each is
caught. Also the job-submission pieces that need no cluster: runtime env, pinned requirements, address, CLI checks."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.cluster import submission

from .conftest import ROOT

CLUSTER = ROOT / "cluster"
SCHEMA = yaml.safe_load((Path(__file__).parent / "kuberay_crd_subset.yaml").read_text())


# ------------------------------------------------------------------------------------------ cluster launcher


def launcher_errors(config: dict) -> str | None:
    """Ray's own check of a cluster launcher config (private helpers: ray is pinned to 2.60.* in pyproject)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except (ValueError, jsonschema.ValidationError) as e:
        return str(e)
    return None


def aws() -> dict:
    return yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())


def test_cluster_launcher_yaml_validates_with_an_autoscaling_gpu_pool_and_the_driver_resource():
    config = aws()
    assert launcher_errors(config) is None
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["train_driver"] >= 1  # the Tune trial drivers run with {"CPU": 0, "train_driver": 1}
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert any(t["resources"].get("GPU", 0) >= 1 and t["min_workers"] < t["max_workers"] for t in workers)


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        (lambda c: c["available_node_types"]["gpu_worker"].update(max_worker=8), "'max_worker' was unexpected"),
        (lambda c: c.update(head_node_type="ray.head"), "head_node_type` must be one of"),
        (lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"), "'node_config' is a required"),
        (lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU="1"), "'1' is not of type"),
    ],
)
def test_a_planted_mistake_in_the_cluster_yaml_is_caught(mistake, expected):
    config = aws()
    mistake(config)
    errors = launcher_errors(config)
    assert errors is not None and expected in errors


# ------------------------------------------------------------------------------------------ KubeRay


def crd_errors(manifest: dict) -> list[str]:
    """Every violation of the RayCluster / RayJob CRD schema (vendored subset), as `path: message`."""
    schema = {"$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"], **SCHEMA[manifest["kind"]]}
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def manifest(name: str) -> dict:
    return yaml.safe_load((CLUSTER / "kuberay" / name).read_text())


def cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifests_validate_and_give_the_head_the_driver_resource(name):
    doc = manifest(name)
    assert crd_errors(doc) == []
    spec = cluster_spec(doc)
    # KubeRay passes rayStartParams verbatim to `ray start --resources`: a quoted JSON object
    resources = json.loads(json.loads(spec["headGroupSpec"]["rayStartParams"]["resources"]))
    assert resources["train_driver"] >= 1
    [gpu] = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 < gpu["maxReplicas"] and spec["enableInTreeAutoscaling"] is True
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    if doc["kind"] == "RayJob":
        assert doc["spec"]["entrypoint"].startswith("python run_pipeline.py ")
        assert yaml.safe_load(doc["spec"]["runtimeEnvYAML"])["working_dir"]


def _set_int_start_param(doc):
    cluster_spec(doc)["workerGroupSpecs"][0]["rayStartParams"]["num-cpus"] = 4  # must be the string "4"


def _misspell_worker_groups(doc):
    spec = cluster_spec(doc)
    spec["workerGroupSpec"] = spec.pop("workerGroupSpecs")


def _bad_submission_mode(doc):
    doc["spec"]["submissionMode"] = "K8sJob"


def _no_group_name(doc):
    del cluster_spec(doc)["workerGroupSpecs"][0]["groupName"]


@pytest.mark.parametrize(
    ("name", "mistake", "expected"),
    [
        ("raycluster.yaml", _set_int_start_param, "rayStartParams/num-cpus: 4 is not of type 'string'"),
        ("raycluster.yaml", _misspell_worker_groups, "'workerGroupSpec' was unexpected"),
        ("rayjob.yaml", _bad_submission_mode, "submissionMode: 'K8sJob' is not one of"),
        ("rayjob.yaml", _no_group_name, "'groupName' is a required property"),
    ],
)
def test_a_planted_mistake_in_a_kuberay_manifest_is_caught(name, mistake, expected):
    doc = manifest(name)
    mistake(doc)
    errors = crd_errors(doc)
    assert any(expected in error for error in errors), errors


# ------------------------------------------------------------------------------------------ submission pieces


def test_requirements_are_pinned_to_this_environment_without_ray():
    import importlib.metadata

    pinned = submission.pinned_requirements()
    assert f"torch=={importlib.metadata.version('torch')}" in pinned
    assert f"mlflow=={importlib.metadata.version('mlflow')}" in pinned
    assert not [r for r in pinned if r.startswith("ray")]  # the cluster's own Ray runs the job
    assert submission.runtime_env(install=True)["uv"]["packages"] == pinned
    assert "uv" not in submission.runtime_env(install=False)  # --no-install: the image has the environment


def test_working_dir_package_holds_the_code_but_no_venv_data_or_stores(tmp_path):
    from ray._private.runtime_env.packaging import create_package

    env = submission.runtime_env(install=False)
    package = tmp_path / "wd.zip"
    create_package(env["working_dir"], package, include_gitignore=True, excludes=env["excludes"])
    names = set(zipfile.ZipFile(package).namelist())
    for kept in ("run_pipeline.py", "pyproject.toml", "pipeline/data/loader.py", "configs/smoke.yaml"):
        assert kept in names, kept
    tops = {name.split("/")[0] for name in names}
    assert not tops & {".venv", ".git", "data", "outputs", "mlruns", "mlflow.db", "ray_results"}, tops
    assert package.stat().st_size < 5 * 2**20  # uploaded with every new version of the code


def test_address_comes_from_the_flag_or_rays_environment(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:8265")
    assert submission.resolve_address(None) == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://ray.example.com/")
    assert submission.resolve_address(None) == "https://ray.example.com"
    assert submission.resolve_address("http://h:8265") == "http://h:8265"
    with pytest.raises(submission.JobsError, match="not a Jobs API address"):
        submission.resolve_address("ray://h:10001")
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(submission.JobsError, match="no cluster address"):
        submission.resolve_address(None)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--", "trian"], "'trian' is not a pipeline command"),
        (["--", "train", "--set", "train.epochs=0"], "train.epochs=0: must be >= 1"),
        (["--", "train", "--epochs", "3"], "the arguments of `train` are not valid"),
        ([], "nothing to submit"),
    ],
)
def test_a_bad_command_is_refused_before_contacting_the_cluster(args, expected, capsys):
    from pipeline.cli import main

    # nothing listens on port 9: a connection attempt would fail with another message
    assert main(["submit", "--address", "http://127.0.0.1:9", *args]) == 1
    assert expected in capsys.readouterr().err


def test_relative_outputs_of_a_job_are_pointed_out(tmp_path):
    from pipeline.cli.submit import job_path_notes
    from pipeline.config import load_config

    notes = job_path_notes(load_config(ROOT / "configs" / "smoke.yaml"))
    assert [note.split("=")[0].split(" ")[0] for note in notes] == [
        "ray.storage_path",
        "train.output_dir",
        "mlflow.tracking_uri",
    ]
    remote = load_config(
        ROOT / "configs" / "smoke.yaml",
        [
            "ray.storage_path=s3://bucket/effdet",
            f"train.output_dir={tmp_path}",
            "mlflow.tracking_uri=http://mlflow:5000",
        ],
    )
    assert job_path_notes(remote) == []
