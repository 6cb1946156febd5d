"""Registered versions, their tags, the champion/challenger aliases, lookup by alias and by version, and the
`registry list/show/promote` commands (run in-process through the CLI's `main`)."""

from __future__ import annotations

import pytest

from pipeline.cli import main
from pipeline.registry import (
    CHALLENGER,
    CHAMPION,
    PromotionRefused,
    RegistryError,
    decide_promotion,
    get_version,
    parse_model_ref,
    promote,
)
from pipeline.registry.registry import aliases_by_version, client


def test_champion_moves_only_to_a_better_version(registry):
    first, worse, better = registry.registrations
    assert [r.version for r in registry.registrations] == ["1", "2", "3"]
    assert first.aliases == (CHAMPION,) and first.decision.promote
    assert worse.aliases == (CHALLENGER,) and not worse.decision.promote
    assert "does not beat" in worse.decision.reason
    assert better.aliases == (CHAMPION,) and better.decision.promote
    # aliases are unique per model in MLflow: champion on v3, challenger on v2, v1 retired
    assert aliases_by_version(registry.uri, registry.name) == {"3": [CHAMPION], "2": [CHALLENGER]}


def test_lookup_by_alias_and_by_version(registry):
    champion = get_version(registry.uri, f"models:/{registry.name}@champion")
    assert str(champion.version) == "3"
    assert str(get_version(registry.uri, registry.name).version) == "3"  # a bare name means the champion
    assert str(get_version(registry.uri, f"{registry.name}@challenger").version) == "2"
    for version, ap in registry.aps.items():
        mv = get_version(registry.uri, f"models:/{registry.name}/{version}")
        assert str(mv.version) == version and float(mv.tags["val_AP"]) == pytest.approx(ap)
    with pytest.raises(RegistryError, match=r"no version 9; versions: \[1, 2, 3\]"):
        get_version(registry.uri, f"{registry.name}/9")
    with pytest.raises(RegistryError, match="no alias 'production'"):
        get_version(registry.uri, f"{registry.name}@production")
    with pytest.raises(RegistryError, match=r"no registered model 'nope'.*\['shapes'\]"):
        get_version(registry.uri, "nope@champion")


def test_a_version_logged_into_a_training_run_links_to_it(registry):
    c = client(registry.uri)
    linked = get_version(registry.uri, f"{registry.name}/2")
    assert linked.run_id == registry.training_run and linked.tags["run_id"] == registry.training_run
    # the SQL store keeps the logged model id in the version's source (models:/<model id>), not in model_id
    logged_model = c.get_logged_model(linked.model_id or linked.source.removeprefix("models:/"))
    assert logged_model.source_run_id == registry.training_run
    assert logged_model.experiment_id == c.get_run(registry.training_run).info.experiment_id
    assert c.get_run(registry.training_run).info.status == "RUNNING"  # registering does not end training's run
    assert get_version(registry.uri, f"{registry.name}/3").run_id in (None, "")


def test_version_tags_describe_the_model(registry):
    tags = get_version(registry.uri, f"{registry.name}/1").tags
    assert tags["variant"] == "lite0" and tags["backbone"] == "tf_efficientnet_lite0"
    assert (tags["image_size"], tags["fpn_channels"], tags["fpn_repeats"], tags["head_repeats"]) == (
        "128x128",
        "32",
        "1",
        "1",
    )
    assert int(tags["params"]) > 1_000_000 and int(tags["flops"]) > 10_000_000
    assert 0 < float(tags["latency_ms_min"]) <= float(tags["latency_ms"]) and tags["latency_device"]
    assert tags["dataset_fingerprint"] == registry.fingerprint
    assert float(tags["val_AP50"]) == pytest.approx(2 * registry.aps["1"])
    assert tags["code_version"] != "" and tags["source_epoch"] == "2"
    assert "latency_ms" not in get_version(registry.uri, f"{registry.name}/2").tags  # measure_latency=False


def test_promote_guards_champion_and_force_overrides(registry):
    with pytest.raises(PromotionRefused, match="does not beat"):
        promote(registry.uri, registry.name, "2")
    assert str(get_version(registry.uri, f"{registry.name}@champion").version) == "3"
    try:
        was_challenger = "challenger" in get_version(registry.uri, f"{registry.name}/2").aliases
        assert promote(registry.uri, registry.name, "2", force=True).reason == "forced"
        promoted = get_version(registry.uri, f"{registry.name}@champion")
        assert str(promoted.version) == "2" and "challenger" not in promoted.aliases
        assert was_challenger  # so the line above shows the alias moving, not one that was never there
    finally:  # v3 beats v2 on the same dataset, so it may take the alias back without force
        assert promote(registry.uri, registry.name, "3").promote
        client(registry.uri).set_registered_model_alias(registry.name, "challenger", "2")  # shared fixture state
    assert str(get_version(registry.uri, f"{registry.name}@champion").version) == "3"


def test_decide_promotion_compares_only_the_same_dataset():
    champion = {"val_AP": "0.3", "dataset_fingerprint": "aaa"}
    assert decide_promotion({"val_AP": "0.4", "dataset_fingerprint": "aaa"}, champion).promote
    assert not decide_promotion({"val_AP": "0.3", "dataset_fingerprint": "aaa"}, champion).promote  # a tie
    other_data = decide_promotion({"val_AP": "0.9", "dataset_fingerprint": "bbb"}, champion)
    assert not other_data.promote and "different dataset" in other_data.reason
    assert decide_promotion({"val_AP": "0.9", "dataset_fingerprint": "bbb"}, champion, force=True).promote
    assert not decide_promotion({"dataset_fingerprint": "aaa"}, champion).promote
    assert decide_promotion({"val_AP": "0.0"}, None).promote  # the first version always becomes champion


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("models:/m@champion", ("m", "champion", None)),
        ("models:/m/12", ("m", None, "12")),
        ("m@staging", ("m", "staging", None)),
        ("m", ("m", "champion", None)),
    ],
)
def test_parse_model_ref(ref, expected):
    assert parse_model_ref(ref) == expected


def test_parse_model_ref_rejects_garbage():
    with pytest.raises(ValueError, match="not understood"):
        parse_model_ref("models:/m/x/y")


def test_registry_cli_list_show_promote(registry, capsys):
    assert main(["registry", "list", "--tracking-uri", registry.uri]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("shapes", "3", "champion"),
        ("shapes", "2", "challenger"),
        ("shapes", "1", "-"),
    ]
    assert main(["registry", "show", f"{registry.name}@champion", "--tracking-uri", registry.uri]) == 0
    out = capsys.readouterr().out
    assert (
        "version:  3" in out and "aliases:  champion" in out and f"dataset_fingerprint  {registry.fingerprint}" in out
    )
    assert main(["registry", "promote", registry.name, "1", "--tracking-uri", registry.uri]) == 1
    assert "refused" in capsys.readouterr().err
    assert main(["registry", "show", f"{registry.name}/7", "--tracking-uri", registry.uri]) == 1
    assert "no version 7" in capsys.readouterr().err
    # an unguarded alias moves freely
    assert main(["registry", "promote", registry.name, "1", "--alias", "baseline", "--tracking-uri", registry.uri]) == 0
    assert str(get_version(registry.uri, f"{registry.name}@baseline").version) == "1"
    client(registry.uri).delete_registered_model_alias(registry.name, "baseline")


_RACER = """
import os, sys, time
from pathlib import Path

import torch

from effdet_core import create_model
from pipeline.data import LabelMap
from pipeline.registry import registry

uri, fingerprint, ap, role, signals = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
decide, lock = registry.decide_promotion, registry.promotion_lock


def lock_announced(tracking_uri, name):
    (signals / f"{role}-at-lock").write_text(str(os.getpid()))  # about to take the lock (or to block on it)
    return lock(tracking_uri, name)


def blocked_on_a_lock(pid):  # the kernel lists pid as waiting for an flock: a "->" line of /proc/locks
    waiting = [line.split()[2:7] for line in Path("/proc/locks").read_text().splitlines() if " -> " in line]
    return ["FLOCK", "ADVISORY", "WRITE", pid] in [fields[:4] for fields in waiting]


def decide_in_the_race(candidate, champion, force=False):
    # the race made certain: "second" decides only after "first" has read the champion, and then slowly
    if role == "first":
        (signals / "first-decided").touch()
    else:
        # Holding the lock, it would wait in vain: it goes on once the kernel shows first blocked on the lock.
        # Without a lock, first is never blocked, and decides after its read of the champion.
        give_up = time.monotonic() + 120  # first crashed: its exit code fails the test
        while not (signals / "first-decided").exists() and time.monotonic() < give_up:
            at_lock = signals / "first-at-lock"
            first_pid = at_lock.read_text() if at_lock.exists() else ""
            if first_pid and blocked_on_a_lock(first_pid):
                break
            time.sleep(0.05)
        time.sleep(1.0)
    return decide(candidate, champion, force)


registry.decide_promotion, registry.promotion_lock = decide_in_the_race, lock_announced
torch.manual_seed(int(ap * 100))
model = create_model("lite0", num_classes=3, image_size=128, fpn_channels=32, fpn_repeats=1, head_repeats=1)
labels = LabelMap((1, 2, 3), ("circle", "square", "triangle"))
metrics = {"val_AP": ap, "val_AP50": ap}
options = {"measure_latency": False, "onnx": False}  # the race is about aliases, not the serving graph
registered = registry.register_model(model, labels, "race", uri, metrics, fingerprint, **options)
print(registered.aliases)
"""


@pytest.mark.slow
def test_two_concurrent_registrations_leave_the_better_one_champion(registry, tmp_path):
    """Two processes register versions of a new model at once; the better one (AP 0.9) reads the champion and moves
    the alias while the worse one (0.8) is between its own read and its move. Unless "read, decide, move" is one
    step per store, the worse one moves the alias last and stays champion."""
    import subprocess
    import sys
    from pathlib import Path

    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, registry.uri, registry.fingerprint, ap, role, str(tmp_path)],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ap, role in (("0.9", "first"), ("0.8", "second"))
    ]
    outputs = [racer.communicate(timeout=300) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], [err[-2000:] for _, err in outputs]
    assert float(get_version(registry.uri, "race@champion").tags["val_AP"]) == pytest.approx(0.9)
