from __future__ import annotations

import pytest
import yaml

from ferlab.core.config import ConfigError, from_dict, load_config, save_config, to_dict


def test_bundled_configs_load():
    final = load_config("seed-final")
    assert final.model.args["filters_in_each_block"] == [64, 128, 256, 512]
    assert final.model.args["pool_size"] == 4 and final.train.batch_size == 256
    assert final.augment.enabled and final.train.epochs == 50
    base = load_config("configs/seed-baseline.yaml")
    assert base.train.batch_size == 512 and not base.augment.enabled


def test_overrides_by_dotted_path():
    cfg = load_config("seed-baseline", ["model.block_num=5", "train.epochs=3", "train.lr=1e-4",
                                        "augment.enabled=true", "model.filters_in_each_block=[8,16]"])
    assert cfg.model.args["block_num"] == 5 and cfg.train.epochs == 3
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.augment.enabled
    assert cfg.model.args["filters_in_each_block"] == [8, 16]


def test_switching_model_starts_from_its_defaults():
    cfg = load_config("seed-final", ["model.name=vgg", "model.depth=1"])
    assert cfg.model.name == "vgg" and cfg.model.args == {"depth": 1}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=ten", "train.epochs: expected an integer"),
        ("train.epoch=3", "train has no field 'epoch'"),
        ("trian.epochs=3", "unknown section 'trian'"),
        ("epochs", "expected SECTION.KEY=VALUE"),
        ("augment.enabled=maybe", "expected true or false"),
    ],
)
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config("seed-final", ["train.seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    back = from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert back == cfg and to_dict(back) == to_dict(cfg)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "x.yaml").write_text("optim:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="unknown section optim"):
        load_config(tmp_path / "x.yaml")


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size must be at least 1, got 0"),
    ("train.epochs=0", "train.epochs must be at least 1, got 0"),
    ("train.lr=-1", "train.lr must be a positive number"),
    ("augment.rotation=.nan", "augment.rotation must be 0 to 180 degrees, got nan"),
    ("data.train_split=PublicTest", "data.val_split and data.train_split are both 'PublicTest'"),
    ("data.holdout=1.5", "data.holdout must be in (0, 1), got 1.5"),
])
def test_out_of_range_settings_are_refused_before_any_data_is_read(tmp_path, override, message):
    from typer.testing import CliRunner

    from ferlab.cli import app

    out = tmp_path / "run"
    # The data source does not exist: the range check must come first, and write nothing.
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "absent.npz"), "--out", str(out),
                                      "--config", "vgg-fast", override, *(["data.val_split=PublicTest"]
                                      if "train_split" in override else [])])
    assert result.exit_code == 2
    assert f"error: {message}" in result.output, result.output
    assert not out.exists()


def test_cli_option_values_are_taken_literally_not_parsed_as_yaml():
    """`--data "exp #1/faces.npz"` is that path (YAML would cut it at the #), `--data 010` is
    "010" (not 8) and `--classes yes` is "yes" (not True); SECTION.KEY=VALUE stays YAML."""
    from ferlab.core.config import load_config

    cfg = load_config("seed-final", [("data.source", "exp #1/faces.npz"), ("data.classes", "yes"),
                                     ("train.init", "010"), "train.epochs=3"])
    assert (cfg.data.source, cfg.data.classes, cfg.train.init, cfg.train.epochs) == (
        "exp #1/faces.npz", "yes", "010", 3)
    assert load_config(None, ["data.source=exp #1/faces.npz"]).data.source == "exp"  # YAML comment


def test_train_cli_reads_the_data_path_it_was_given(tmp_path):
    from typer.testing import CliRunner

    from ferlab.cli import app

    (tmp_path / "exp").mkdir()
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "exp #1" / "faces.npz"),
                                 "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert r.exit_code == 2 and "exp #1" in r.output  # the path as typed, not the folder exp/


def test_yaml_aliases_and_huge_configs_are_refused_before_anything_grows(tmp_path):
    """A few hundred bytes of nested anchors and aliases stand for billions of values."""
    from ferlab.core.config import ConfigError, load_config

    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")
    assert bomb.stat().st_size < 600
    with pytest.raises(ConfigError, match="aliases"):
        load_config(bomb)
    with pytest.raises(ConfigError, match="aliases"):
        load_config(None, ["model.filters_in_each_block=&f [*f]"])
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="limit"):
        load_config(big)
    anchors = tmp_path / "anchors.yaml"  # an anchor without an alias is plain YAML
    anchors.write_text("train: &t\n  epochs: 2\n")
    assert load_config(anchors).train.epochs == 2
