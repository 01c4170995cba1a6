#!/usr/bin/env python
"""Looking-At-Me stage I: train, evaluate (--eval --ckpt) or write the challenge file (--submit --ckpt).

    python scripts/run_lam.py --model BaselineLSTM --output_dir ts_model                  # train 40 epochs
    python scripts/run_lam.py --model BaselineLSTM --eval --ckpt logs/lam/ts_model/checkpoints/last.ckpt
    python scripts/run_lam.py --model BaselineLSTM --submit --ckpt pretrained_models/ts_lam.pth

Data: the prepared layout under --data_dir / $EGO4D_DATA / data/ (``lam/video_imgs``, ``lam/json_original``,
``lam/result_LAM``, ``lam/split``, ``lam/videos_challenge``); --source_path etc. override single folders. Logs and
checkpoints go to ./logs/lam/<output_dir>; training ends by exporting the best model as
./logs/lam/<output_dir>/ts_lam.pth (official {epoch, state_dict, mAP} container).
"""
import sys

from egot2.media import MediaError
from HHI.cli import SHARED_FLAG_KEYS, run_social_task, social_argument_parser, social_cfg
from HHI.config import add_lam_config, lam_run_defaults
from HHI.tasks.lam import lam_run

DEFAULTS = {"model": "BaselineLSTM", "epochs": 40, "batch_size": 64, "lr": 5e-4, "wd": 0.0, "num_workers": 10,
            "weights": [0.136, 0.864], "face_size": 224, "dropout": 0.1, "num_layers": 3, "num_heads": 4,
            "hidden_dim": 256, "hidden_dim2": 512}

FLAG_KEYS = {
    **SHARED_FLAG_KEYS,
    "batch_size": "TRAIN.BATCH_SIZE",
    "weights": "LAM.CLASS_WEIGHTS",
    "source_path": "LAM.SOURCE_PATH",
    "json_path": "LAM.JSON_PATH",
    "gt_path": "LAM.GT_PATH",
    "test_path": "LAM.TEST_PATH",
    "train_file": "LAM.TRAIN_FILE",
    "val_file": "LAM.VAL_FILE",
    "train_stride": "LAM.TRAIN_STRIDE",
    "val_stride": "LAM.VAL_STRIDE",
    "test_stride": "LAM.TEST_STRIDE",
}

PATH_FLAGS = ("source_path", "json_path", "gt_path", "test_path", "train_file", "val_file")


def parse_args(argv=None):
    parser = social_argument_parser("lam", "Ego4D Looking At Me (stage I)", defaults=DEFAULTS)
    parser.add_argument("--source_path", default=None, help="frames folder (default: <data>/lam/video_imgs)")
    parser.add_argument("--json_path", default=None, help="face tracks (default: <data>/lam/json_original)")
    parser.add_argument("--gt_path", default=None, help="ground truth (default: <data>/lam/result_LAM)")
    parser.add_argument("--test_path", default=None, help="challenge release (default: <data>/lam/videos_challenge)")
    parser.add_argument("--train_file", default=None, help="train list (default: <data>/lam/split/train.list)")
    parser.add_argument("--val_file", default=None, help="val list (default: <data>/lam/split/val.list)")
    parser.add_argument("--train_stride", type=int, default=None, help="train key-frame stride (default: 13)")
    parser.add_argument("--val_stride", type=int, default=None, help="val key-frame stride (default: 13)")
    parser.add_argument("--test_stride", type=int, default=None, help="test stride (default: 1)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = social_cfg(args, "lam", extensions=(add_lam_config, lam_run_defaults), flag_keys=FLAG_KEYS,
                         path_flags=PATH_FLAGS)
    except ValueError as err:  # egot2.config.ConfigError names the key and where its value came from
        print(f"run_lam.py: error: {err}", file=sys.stderr)
        return 2
    try:
        return run_social_task(cfg, lam_run(cfg))
    except (ValueError, FileNotFoundError, MediaError) as err:  # bad input: say what and where, no traceback
        print(f"run_lam.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
