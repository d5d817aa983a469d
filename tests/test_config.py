"""Config layering, overrides and validation errors."""

import pytest
import yaml

from sefar_fast.config import Config, build_config, config_from_dict, parse_override, preset_names, resolve_key
from sefar_fast.errors import SefarError


def test_presets_shipped_and_class_counts():
    names = set(preset_names())
    assert {"synth", "gym99", "gym288", "gym-new", "finediving", "ucf101", "hmdb51", "ssv2"} <= names
    expected = {"gym99": 99, "gym288": 288, "gym-new": 40, "finediving": 52, "ucf101": 101, "hmdb51": 51, "ssv2": 174}
    for name, n in expected.items():
        assert build_config(name).data.num_classes == n


def test_layers_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"optim": {"epochs": 7, "batch_size": 3}, "method": {"perturb": "none", "warmup_epochs": 2}}))
    cfg = build_config("synth", str(f), {"optim.batch_size": 5}, ["perturb=all-reverse", "method.elements=[2,4]"])
    assert cfg.optim.epochs == 7  # file over preset
    assert cfg.optim.batch_size == 5  # flag over file
    assert cfg.method.perturb == "all-reverse"  # override over file
    assert cfg.method.elements == [2, 4]
    assert cfg.model.arch == "vit-pico"  # from the synth preset
    assert Config().model.arch == "vit-s"  # the default it replaced


def test_round_trip_through_dict():
    cfg = build_config("synth", None, {}, ["lr=0.02", "mix=false"])
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


def test_override_parsing_types():
    assert parse_override("compile=false") == ("compile", False)
    assert parse_override("elements=[2, 2, 6]") == ("elements", [2, 2, 6])
    assert parse_override("lr=1e-3") == ("lr", 1e-3)
    with pytest.raises(SefarError, match="key=value"):
        parse_override("perturb")


def test_typo_gets_suggestion():
    with pytest.raises(SefarError, match="did you mean 'perturb'"):
        build_config("synth", None, {}, ["pertrub=none"])
    with pytest.raises(SefarError, match="did you mean 'method.regulation'"):
        resolve_key("method.regulaton")


def test_ambiguous_bare_key():
    with pytest.raises(SefarError, match="ambiguous"):
        resolve_key("batch_size")  # optim.batch_size and eval.batch_size


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(data="gym100"), "unknown data preset 'gym100' \\(did you mean 'gym99'"),
        (dict(flags={"data.label_rate": 0.0}), "label_rate 0.0 must be in \\(0, 1\\]"),
        (dict(flags={"data.label_rate": 1.5}), "label_rate 1.5"),
        (dict(flags={"model.arch": "vit-h"}), "arch 'vit-h' is not one of"),
        (dict(overrides=["perturb=reverse"]), "perturb 'reverse' is not one of"),
        (dict(overrides=["epochs=ten"]), "optim.epochs must be an integer"),
        (dict(overrides=["elements=4"]), "must be a list"),
        (dict(overrides=["elements=[4,2]"]), "context"),
        (dict(overrides=["epochs=3", "warmup_epochs=5"]), "warmup_epochs 5 leaves no semi-supervised epoch"),
        (dict(overrides=["eval.views=5by3"]), "TxS"),
    ],
)
def test_validation_errors(args, message):
    with pytest.raises(SefarError, match=message):
        build_config(args.get("data", "synth"), None, args.get("flags"), args.get("overrides"))


def test_fixmatch_method_sets_baseline_keys():
    cfg = build_config("synth", None, {"method.name": "fixmatch"}, [])
    assert (cfg.method.elements, cfg.method.perturb, cfg.method.regulation) == ([8], "warp", "threshold")
    cfg = build_config("synth", None, {"method.name": "fixmatch"}, ["regulation=adaptive"])
    assert cfg.method.regulation == "adaptive"  # an explicit override still wins


def test_missing_config_file(tmp_path):
    with pytest.raises(SefarError, match="does not exist"):
        build_config("synth", str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed")
    with pytest.raises(SefarError, match="not valid YAML"):
        build_config("synth", str(bad))


def test_the_training_guide_documents_every_method_switch(monkeypatch, capsys):
    """Each key of the method section is a switch a user may flip: docs/training.md (where `sefar train
    --help` points) names all of them, and the help names the methods."""
    import dataclasses
    import sys
    from pathlib import Path

    from sefar_fast.cli.app import main
    from sefar_fast.config import MethodConfig

    guide = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    missing = [f.name for f in dataclasses.fields(MethodConfig) if f.name != "name" and f"method.{f.name}=" not in guide]
    assert not missing, f"docs/training.md does not name: {missing}"
    monkeypatch.setattr(sys, "argv", ["sefar", "train", "--help"])
    try:
        main()
    except SystemExit as stop:
        assert stop.code in (0, None)
    text = capsys.readouterr().out
    assert "sefar|supervised|fixmatch" in text and "docs/training.md" in text


def test_text_keys_keep_the_text_as_typed():
    """YAML would read 010 as 8, 0x3 as 3 and true as a boolean: a key that holds text keeps what was typed."""
    cfg = build_config("synth", None, {}, ["run.out=010", "data.root=true", "eval.views=2x1", "model.pretrained=1e3"])
    assert (cfg.run.out, cfg.data.root, cfg.model.pretrained) == ("010", "true", "1e3")
    with pytest.raises(SefarError, match="eval views '0x3' must look like TxS"):
        build_config("synth", None, {}, ["eval.views=0x3"])
    assert build_config("synth", None, {}, ["run.out=null"]).run.out is None  # null still means "none"
    assert build_config("synth", None, {}, ["optim.epochs=060"]).optim.epochs == 60  # decimal, not YAML 1.1 octal


def test_a_config_file_may_write_small_numbers_the_yaml_1_1_way(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 1e-3\n")  # YAML 1.1 reads this as the string '1e-3'
    assert build_config("synth", str(f)).optim.lr == 1e-3
