#!/usr/bin/env python
"""Talking-To-Me stage I: train, evaluate (--eval --ckpt) or write the challenge file (--submit --ckpt).

    python scripts/run_ttm.py --model BaselineLSTM --output_dir ts_model                  # train 40 epochs
    python scripts/run_ttm.py --model BaselineLSTM --eval --ckpt logs/ttm/ts_model/checkpoints/last.ckpt
    python scripts/run_ttm.py --model BaselineLSTM --submit --ckpt pretrained_models/ts_ttm.pth

Data: the prepared layout under --data_dir / $EGO4D_DATA / data/ (``ttm/video_imgs``, ``ttm/wave``,
``ttm/json_original``, ``ttm/result_TTM``, ``ttm/split``, ``ttm/final_test_data``, ``ttm/seg_info.json``);
--img_path etc. override single folders. --batch_size is the frame budget of a training batch. Parity switches:
--legacy_epochs (the original's truncated epochs, which the published numbers were trained with) and
--legacy_metric_key (the original's "start:end" metric keying). Logs and checkpoints go to
./logs/ttm/<output_dir>; training ends by exporting the best model as ./logs/ttm/<output_dir>/ts_ttm.pth.

EgoT2-s (task translation, HHI.tasks.translation) takes the translator names as --model:

    python scripts/run_ttm.py --model TaskFusionMFTransformer2Task --num_layers 1 --hidden_dim 128 --dropout 0.5 \
        --output_dir 2tasktranslation [--cache_features features/]
    python scripts/run_ttm.py --two_loader --model TaskFusionMFTransformer3Task --num_layers 1 --hidden_dim 128 \
        --dropout 0.5 --output_dir 3tasktranslation

with the frozen stage-I models from pretrained_models/ts_{lam,ttm,asd}.pth (--lam_checkpoint ... override),
--nofreeze (train the TTM backbone too), --train_mode_backbones (the original's train-mode backbones), and
--cache_features DIR (run the frozen backbones once per split and train on their stored tokens; same results).
--eval/--submit --ckpt accept the released EgoT2-s checkpoints and ours (same layout). Validation writes the
translator's attention per source task to ./logs/ttm/<output_dir>/attention/ (CSV and attention.png).
"""
import sys

from egot2.media import MediaError
from HHI.cli import SHARED_FLAG_KEYS, run_social_task, social_argument_parser, social_cfg
from HHI.config import add_ttm_config, ttm_run_defaults
from HHI.tasks.ttm import ttm_run

DEFAULTS = {"model": "BaselineLSTM", "epochs": 40, "batch_size": 400, "lr": 5e-4, "wd": 0.0, "num_workers": 10,
            "weights": [0.266, 0.734], "face_size": 224, "dropout": 0.1, "num_layers": 3, "num_heads": 4,
            "hidden_dim": 256, "hidden_dim2": 512}

FLAG_KEYS = {
    **SHARED_FLAG_KEYS,
    "batch_size": "TTM.FRAME_BUDGET",
    "weights": "TTM.CLASS_WEIGHTS",
    "test_data_path": "TTM.TEST_DATA_PATH",
    "seg_info": "TTM.SEG_INFO",
    "img_path": "TTM.IMG_PATH",
    "wave_path": "TTM.WAVE_PATH",
    "gt_path": "TTM.GT_PATH",
    "json_path": "TTM.JSON_PATH",
    "train_file": "TTM.TRAIN_FILE",
    "val_file": "TTM.VAL_FILE",
    "test_file": "TTM.TEST_FILE",
    "train_stride": "TTM.TRAIN_STRIDE",
    "val_stride": "TTM.VAL_STRIDE",
    "test_stride": "TTM.TEST_STRIDE",
    "legacy_epochs": "TTM.LEGACY_EPOCHS",
    "legacy_metric_key": "TTM.LEGACY_METRIC_KEY",
}

PATH_FLAGS = ("test_data_path", "seg_info", "img_path", "wave_path", "gt_path", "json_path", "train_file",
                  "val_file", "test_file")


def parse_args(argv=None):
    parser = social_argument_parser("ttm", "Ego4D Talking To Me (stage I)", defaults=DEFAULTS)
    add = parser.add_argument
    add("--test_data_path", default=None, help="challenge release (default: <data>/ttm/final_test_data)")
    add("--seg_info", default=None, help="test segment info (default: <data>/ttm/seg_info.json)")
    add("--img_path", default=None, help="frames folder (default: <data>/ttm/video_imgs)")
    add("--wave_path", default=None, help="audio folder (default: <data>/ttm/wave)")
    add("--gt_path", default=None, help="segments (default: <data>/ttm/result_TTM)")
    add("--json_path", default=None, help="face tracks (default: <data>/ttm/json_original)")
    add("--train_file", default=None, help="train list (default: <data>/ttm/split/train.list)")
    add("--val_file", default=None, help="val list (default: <data>/ttm/split/val.list)")
    add("--test_file", default=None, help="test list (unused, kept from the original)")
    add("--train_stride", type=int, default=None, help="unused, kept from the original (default: 3)")
    add("--val_stride", type=int, default=None, help="unused, kept from the original (default: 1)")
    add("--test_stride", type=int, default=None, help="unused, kept from the original (default: 1)")
    add("--legacy_epochs", action="store_true",
        help="end each epoch after int(N / batch_size) batches as the original (published numbers)")
    add("--legacy_metric_key", action="store_true",
        help="key val segments by 'start:end' as the original metric (published numbers)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = social_cfg(args, "ttm", extensions=(add_ttm_config, ttm_run_defaults), flag_keys=FLAG_KEYS,
                         path_flags=PATH_FLAGS)
    except ValueError as err:  # egot2.config.ConfigError names the key and where its value came from
        print(f"run_ttm.py: error: {err}", file=sys.stderr)
        return 2
    try:
        return run_social_task(cfg, ttm_run(cfg))
    except (ValueError, FileNotFoundError, MediaError) as err:  # bad input: say what and where, no traceback
        print(f"run_ttm.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
