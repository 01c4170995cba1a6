"""egot2.config: defaults, strict merging with precedence, _BASE_, validation, freezing, CLI and run records."""
import json
import re
from pathlib import Path

import pytest
import yaml

from egot2 import config
from egot2.config import (
    REPO_ROOT,
    CfgNode,
    ConfigError,
    cfg_from_args,
    default_argument_parser,
    get_cfg,
    load_cfg,
    register_validator,
    repo_path,
    resolve_data_root,
    write_run_info,
)


def _write_yaml(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def add_toy_config(cfg):
    """A task extension as the task packages write them."""
    cfg.TOY = CfgNode()
    cfg.TOY.WIDTH = 16
    cfg.TOY.NAME = "toy"


def test_every_default_key_has_a_comment():
    lines = Path(config.__file__).read_text().splitlines()
    assignments = [i for i, line in enumerate(lines) if re.match(r"^_C\.[A-Z_.]+ = ", line)]
    assert len(assignments) > 40
    uncommented = [lines[i] for i in assignments if not lines[i - 1].startswith("#")]
    assert not uncommented


def test_get_cfg_returns_independent_copies_with_the_promised_keys():
    first = get_cfg()
    first.SOLVER.BASE_LR = 123.0
    second = get_cfg()
    assert second.SOLVER.BASE_LR == 0.1
    for key in ("DATA.ROOT", "OUTPUT_DIR", "RNG_SEED", "DETERMINISTIC", "NUM_GPUS", "NUM_SHARDS", "ACCELERATOR",
                "STRATEGY", "PRECISION", "FAST_DEV_RUN", "TRAIN.ENABLE", "TRAIN.BATCH_SIZE", "TEST.ENABLE",
                "TEST.BATCH_SIZE", "SOLVER.BASE_LR", "SOLVER.OPTIMIZING_METHOD", "SOLVER.MOMENTUM", "SOLVER.NESTEROV",
                "SOLVER.DAMPENING", "SOLVER.WEIGHT_DECAY", "SOLVER.LR_POLICY", "SOLVER.WARMUP_STEPS",
                "SOLVER.LR_DECAY", "SOLVER.MAX_EPOCH", "BN.WEIGHT_DECAY", "DATA_LOADER.NUM_WORKERS",
                "DATA_LOADER.PIN_MEMORY", "CHECKPOINT.MONITOR", "CHECKPOINT.MODE", "CHECKPOINT.SAVE_TOP_K",
                "CHECKPOINT.RESUME"):
        node = second
        for part in key.split("."):
            assert part in node, key
            node = node[part]


def test_precedence_defaults_file_opts_data_dir(tmp_path):
    cfg_file = _write_yaml(tmp_path / "run.yaml", {
        "SOLVER": {"BASE_LR": 0.01, "MAX_EPOCH": 7},
        "TRAIN": {"BATCH_SIZE": 32},
        "DATA": {"ROOT": "from_file"},
        "TOY": {"WIDTH": 64},
    })
    cfg = load_cfg(cfg_file, opts=["SOLVER.BASE_LR", "0.5", "TOY.NAME", "override"], extensions=[add_toy_config],
                   data_dir="from_flag")
    assert cfg.SOLVER.MAX_EPOCH == 7  # file over default
    assert cfg.TRAIN.BATCH_SIZE == 32
    assert cfg.SOLVER.BASE_LR == 0.5  # opts over file
    assert cfg.TOY.WIDTH == 64 and cfg.TOY.NAME == "override"  # extension keys merge like base keys
    assert cfg.DATA.ROOT == "from_flag"  # --data_dir over everything
    assert cfg.SOLVER.WEIGHT_DECAY == 1e-4  # untouched default


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("EGO4D_DATA", raising=False)
    assert resolve_data_root() == REPO_ROOT / "data"
    monkeypatch.setenv("EGO4D_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    cfg = load_cfg(opts=["DATA.ROOT", "cfg_root"])
    assert resolve_data_root(cfg=cfg) == REPO_ROOT / "cfg_root"
    assert resolve_data_root("flag_root", cfg) == REPO_ROOT / "flag_root"
    assert resolve_data_root(tmp_path / "abs", cfg) == tmp_path / "abs"
    monkeypatch.setenv("EGO4D_DATA", "relative_env")
    assert resolve_data_root() == REPO_ROOT / "relative_env"


def test_relative_paths_are_taken_from_the_repo_root_not_the_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert repo_path("configs/x.yaml") == REPO_ROOT / "configs" / "x.yaml"
    assert repo_path(tmp_path / "a") == tmp_path / "a"
    assert (REPO_ROOT / "egot2" / "config.py").is_file()


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    cfg_file = _write_yaml(tmp_path / "bad.yaml", {"SOLVER": {"BASE_LRR": 0.1}})
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown config key SOLVER\.BASE_LRR.*SOLVER\.BASE_LR"):
        load_cfg(cfg_file)
    section_file = _write_yaml(tmp_path / "section.yaml", {"NOPE": {"A": 1}})
    with pytest.raises(ConfigError, match=r"section\.yaml: unknown config key NOPE"):
        load_cfg(section_file)
    # A task key is unknown unless its extension is loaded.
    task_file = _write_yaml(tmp_path / "task.yaml", {"TOY": {"WIDTH": 3}})
    with pytest.raises(ConfigError, match="unknown config key TOY"):
        load_cfg(task_file)
    assert load_cfg(task_file, extensions=[add_toy_config]).TOY.WIDTH == 3


def test_unknown_or_malformed_opts_name_the_command_line():
    with pytest.raises(ConfigError, match=r"command line: unknown config key TRAIN\.BATCHSIZE"):
        load_cfg(opts=["TRAIN.BATCHSIZE", "4"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_cfg(opts=["TRAIN.BATCH_SIZE"])
    with pytest.raises(ConfigError, match="is a section"):
        load_cfg(opts=["SOLVER", "1"])


def test_values_are_type_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"TRAIN\.BATCH_SIZE expects int.*got bool"):
        load_cfg(opts=["TRAIN.BATCH_SIZE", "True"])
    with pytest.raises(ConfigError, match=r"typed\.yaml: config key SOLVER\.BASE_LR expects float.*got str"):
        load_cfg(_write_yaml(tmp_path / "typed.yaml", {"SOLVER": {"BASE_LR": "fast"}}))
    cfg = load_cfg(opts=["SOLVER.BASE_LR", "1", "OUTPUT_DIR", "2024", "SOLVER.BETAS", "(0.8, 0.9)",
                         "TRAIN.LIMIT_TRAIN_BATCHES", "5"])
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)  # int is fine for a float key
    assert cfg.OUTPUT_DIR == "2024"  # a string key keeps the text
    assert cfg.SOLVER.BETAS == [0.8, 0.9]
    assert cfg.TRAIN.LIMIT_TRAIN_BATCHES == 5  # a batch count, not a fraction


def test_base_inheritance_relative_to_the_including_file(tmp_path):
    _write_yaml(tmp_path / "common" / "root.yaml", {"SOLVER": {"BASE_LR": 0.2, "MAX_EPOCH": 3}, "RNG_SEED": 5})
    _write_yaml(tmp_path / "common" / "mid.yaml", {"_BASE_": "root.yaml", "SOLVER": {"MAX_EPOCH": 9}})
    child = _write_yaml(tmp_path / "tasks" / "child.yaml", {"_BASE_": "../common/mid.yaml", "RNG_SEED": 11})
    cfg = load_cfg(child)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_EPOCH, cfg.RNG_SEED) == (0.2, 9, 11)
    # An unknown key inside a base file is blamed on that base file.
    _write_yaml(tmp_path / "common" / "broken.yaml", {"SOLVER": {"LR": 1.0}})
    bad_child = _write_yaml(tmp_path / "tasks" / "bad_child.yaml", {"_BASE_": "../common/broken.yaml"})
    with pytest.raises(ConfigError, match=r"broken\.yaml: unknown config key SOLVER\.LR"):
        load_cfg(bad_child)
    missing = _write_yaml(tmp_path / "missing.yaml", {"_BASE_": "nowhere.yaml"})
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_cfg(missing)
    _write_yaml(tmp_path / "a.yaml", {"_BASE_": "b.yaml"})
    _write_yaml(tmp_path / "b.yaml", {"_BASE_": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_cfg(tmp_path / "a.yaml")


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        load_cfg(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=r"list\.yaml: a config file must hold a mapping"):
        load_cfg(_write_yaml(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_cfg(_write_yaml(tmp_path / "broken.yaml", "SOLVER: {BASE_LR: [\n"))
    assert load_cfg(_write_yaml(tmp_path / "empty.yaml", "")).SOLVER.BASE_LR == 0.1


def test_validation_errors_name_key_and_file(tmp_path):
    cfg_file = _write_yaml(tmp_path / "invalid.yaml", {
        "TRAIN": {"BATCH_SIZE": 0},
        "SOLVER": {"OPTIMIZING_METHOD": "rmsprop", "LR_POLICY": "cyclic"},
        "CHECKPOINT": {"MODE": "best"},
    })
    with pytest.raises(ConfigError) as info:
        load_cfg(cfg_file, opts=["TEST.BATCH_SIZE", "-2"])
    message = str(info.value)
    assert re.search(r"TRAIN\.BATCH_SIZE = 0 \(from .*invalid\.yaml\): must be a positive integer", message)
    assert re.search(r"TEST\.BATCH_SIZE = -2 \(from command line\)", message)
    for key in ("SOLVER.OPTIMIZING_METHOD", "SOLVER.LR_POLICY", "CHECKPOINT.MODE"):
        assert key in message
    with pytest.raises(ConfigError, match="Nesterov"):
        load_cfg(opts=["SOLVER.MOMENTUM", "0.0"])
    assert load_cfg(opts=["SOLVER.MOMENTUM", "0.0", "SOLVER.NESTEROV", "False"]).SOLVER.MOMENTUM == 0.0


def test_registered_validators_run_only_for_their_section():
    calls = []

    @register_validator(section="TOY")
    def check_toy(cfg):
        calls.append(cfg.TOY.WIDTH)
        if cfg.TOY.WIDTH % 8:
            yield ("TOY.WIDTH", "must be a multiple of 8")

    try:
        load_cfg()  # no TOY section: the check is skipped
        assert calls == []
        assert load_cfg(extensions=[add_toy_config]).TOY.WIDTH == 16
        with pytest.raises(ConfigError, match=r"TOY\.WIDTH = 12 \(from command line\): must be a multiple of 8"):
            load_cfg(opts=["TOY.WIDTH", "12"], extensions=[add_toy_config])
        assert calls == [16, 12]
        register_validator(check_toy, section="TOY")  # registering twice does not run it twice
        load_cfg(extensions=[add_toy_config])
        assert calls == [16, 12, 16]
    finally:
        config._VALIDATORS.remove((check_toy, "TOY"))


def test_config_is_frozen_unless_asked():
    cfg = load_cfg()
    assert cfg.is_frozen()
    with pytest.raises(AttributeError):
        cfg.SOLVER.BASE_LR = 1.0
    assert not load_cfg(freeze=False).is_frozen()


def test_run_info_round_trips(tmp_path):
    cfg = load_cfg(opts=["SOLVER.BASE_LR", "0.003", "TRAIN.BATCH_SIZE", "2"], extensions=[add_toy_config])
    run_dir = write_run_info(cfg, tmp_path / "run" / "nested")
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "versions.json"]
    reloaded = load_cfg(run_dir / "config.yaml", extensions=[add_toy_config])
    assert reloaded == cfg
    versions = json.loads((run_dir / "versions.json").read_text())
    for key in ("python", "torch", "torchvision", "pytorch_lightning", "numpy", "pytorchvideo", "av", "platform",
                "git_commit"):
        assert key in versions
    assert versions["torch"] and versions["python"].count(".") == 2
    plain_dir = write_run_info({"lr": 0.1, "tasks": ("lam", "ttm"), "ckpt": Path("a/b.pth")}, tmp_path / "plain")
    assert yaml.safe_load((plain_dir / "config.yaml").read_text()) == {"lr": 0.1, "tasks": ["lam", "ttm"],
                                                                       "ckpt": "a/b.pth"}


def test_argument_parser_maps_flags_onto_keys(tmp_path):
    cfg_file = _write_yaml(tmp_path / "cli.yaml", {"OUTPUT_DIR": "from_file", "TRAIN": {"BATCH_SIZE": 6}})
    parser = default_argument_parser("toy")
    args = parser.parse_args(["--cfg", str(cfg_file), "--data_dir", "d", "--output_dir", "logs/toy", "--resume",
                              "--eval", "--fast_dev_run", "--num_gpus", "0", "--num_shards", "2",
                              "TRAIN.BATCH_SIZE", "3"])
    cfg = cfg_from_args(args)
    assert cfg.OUTPUT_DIR == "logs/toy" and cfg.DATA.ROOT == "d"
    assert cfg.CHECKPOINT.RESUME == "last"
    assert (cfg.TRAIN.ENABLE, cfg.TEST.ENABLE, cfg.TEST.SUBMIT) == (False, True, False)
    assert cfg.FAST_DEV_RUN and cfg.NUM_GPUS == 0 and cfg.NUM_SHARDS == 2
    assert cfg.TRAIN.BATCH_SIZE == 3  # trailing opts over file
    submit = cfg_from_args(parser.parse_args(["--submit", "--resume", "a.ckpt"]))
    assert (submit.TEST.SUBMIT, submit.TRAIN.ENABLE, submit.CHECKPOINT.RESUME) == (True, False, "a.ckpt")
    plain = cfg_from_args(parser.parse_args([]))
    assert plain == load_cfg()
    # Scripts may redefine a flag without argparse complaining.
    parser.add_argument("--eval", type=int, default=0)
    assert parser.parse_args(["--eval", "2"]).eval == 2
    with pytest.raises(ConfigError, match="command line: unknown config key NOPE"):
        cfg_from_args(parser.parse_args(["NOPE", "1"]))


def test_resume_without_a_path_gives_back_a_config_key():
    from egot2.config import default_argument_parser

    parser = default_argument_parser("t")
    args = parser.parse_args(["--resume", "SOLVER.MAX_EPOCH", "3"])
    assert args.resume == "last" and args.opts == ["SOLVER.MAX_EPOCH", "3"]
    args = parser.parse_args(["--resume", "runs/a/last.ckpt", "SOLVER.MAX_EPOCH", "3"])
    assert args.resume == "runs/a/last.ckpt" and args.opts == ["SOLVER.MAX_EPOCH", "3"]
