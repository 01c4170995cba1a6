#!/usr/bin/env python
"""Active speaker detection stage I (TalkNet): train, or evaluate a checkpoint (--eval --ckpt).

    python scripts/run_asd.py --model talkNetModel --output_dir ts_model                    # 25 epochs from scratch
    python scripts/run_asd.py --model talkNetModel --init_from_ava --output_dir ts_model    # from pretrain_AVA.model
    python scripts/run_asd.py --model talkNetModel --eval --ckpt logs/asd/ts_model/ts_asd.pth

Data: the prepared layout under --data_dir / $EGO4D_DATA / data/ (``asd/ego4d/csv``, ``asd/ego4d/bbox``,
``asd/video_imgs``, ``asd/wave``); --data_file_path points at another ASD folder. Logs and checkpoints go to
./logs/asd/<output_dir> (monitor val_acc); training ends by exporting the best model as
./logs/asd/<output_dir>/ts_asd.pth, a flat TalkNet file like the official one. --eval prints val_acc (frame
accuracy as EgoT2 logs it) and val_mAP.

Behaviour that differs from EgoT2's run_asd.py by default, with the flag that restores it: the learning rate decays
x0.95 per epoch as in the Ego4D TalkNet trainer (--lr_decay_per_step: every step, as EgoT2); mixed training audio
stays float (--legacy_int16_mix: the original int16 cast). --max_frames cuts long track chunks for CPU runs
(evaluation keeps their first frames, training draws a window of that length anywhere in the chunk).

EgoT2-s with ASD as the task of interest takes the translator names as --model (TaskFusionMFTransformer3Task,
FinetuneASD, LAM2ASD, TTM2ASD); they imply the paired data -- every ASD frame with the RGB face crop the frozen LAM
and TTM models read -- so the README's command without --two_loader trains the translator, not plain TalkNet:

    python scripts/run_asd.py --model TaskFusionMFTransformer3Task --output_dir 3tasktranslation
"""
import sys
from pathlib import Path

from HHI.cli import SHARED_FLAG_KEYS, SocialRun, run_social_task, social_argument_parser, social_cfg
from HHI.config import add_asd_config, asd_run_defaults
from HHI.models.translation import ASD_TRANSLATORS
from HHI.tasks.asd import ExportFlatCheckpoint, asd_dataloader, build_asd_task
from HHI.tasks.translation import asd_translation_run

DEFAULTS = {"model": "talkNetModel", "epochs": 25, "batch_size": 1800, "lr": 1e-4, "wd": 0.0, "num_workers": 4,
            "weights": [1.0, 4.0], "dropout": 0.1, "num_layers": 1, "num_heads": 4, "hidden_dim": 256,
            "hidden_dim2": 512}

FLAG_KEYS = {
    **SHARED_FLAG_KEYS,
    "batch_size": "ASD.FRAME_BUDGET",
    "weights": "ASD.CLASS_WEIGHTS",
    "checkpoint": "ASD.AVA_CHECKPOINT",
    "data_file_path": "ASD.DATA_PATH",
    "lr_decay": "SOLVER.LR_DECAY",
    "init_from_ava": "ASD.INIT_FROM_AVA",
    "finetune": "ASD.FINETUNE",
    "nodecay": "ASD.NODECAY",
    "lr_decay_per_step": "ASD.LR_DECAY_PER_STEP",
    "max_frames": "ASD.MAX_FRAMES",
    "legacy_int16_mix": "ASD.LEGACY_INT16_MIX",
}

PATH_FLAGS = ("data_file_path",)


def parse_args(argv=None):
    parser = social_argument_parser("asd", "Ego4D active speaker detection, TalkNet (stage I)", defaults=DEFAULTS,
                                    submit=False)
    add = parser.add_argument
    add("--batch_size", type=int, default=None, help="frames per training batch (default: 1800)")
    add("--data_file_path", default=None, help="ASD folder (default: <data>/asd)")
    add("--lr_decay", type=float, default=None, help="learning-rate factor per epoch (default: 0.95)")
    add("--nodecay", action="store_true", help="keep the learning rate constant")
    add("--lr_decay_per_step", action="store_true",
        help="decay the learning rate every step, as EgoT2's run_asd.py (default: every epoch)")
    add("--init_from_ava", action="store_true", help="initialise TalkNet and its heads from --checkpoint")
    add("--checkpoint", default=None,
        help="TalkNet AVA checkpoint for --init_from_ava (default: pretrained_models/pretrain_AVA.model)")
    add("--finetune", action="store_true",
        help="load the network from --asd_checkpoint, freeze it and train only the heads")
    add("--max_frames", type=int, default=None, help="cut track chunks to N frames: the first N in evaluation, a random window in training (default: whole)")
    add("--legacy_int16_mix", action="store_true",
        help="cast the audio-mix augmentation to int16 as the original (silences most mixed tracks)")
    add("--resume", nargs="?", const="last", default=None, metavar="CKPT",
        help="continue training from CKPT, from --ckpt when given (as the original), else from the run's last.ckpt")
    args = parser.parse_args(argv)
    if args.resume == "last" and args.ckpt:
        args.resume = str(Path(args.ckpt).expanduser().resolve())
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = social_cfg(args, "asd", extensions=(add_asd_config, asd_run_defaults), flag_keys=FLAG_KEYS,
                         path_flags=PATH_FLAGS)
    except ValueError as err:  # egot2.config.ConfigError names the key and where its value came from
        print(f"run_asd.py: error: {err}", file=sys.stderr)
        return 2
    spec = SocialRun(
        task="asd",
        build_task=build_asd_task,
        train_loader=lambda c: asd_dataloader(c, "train"),
        val_loader=lambda c: asd_dataloader(c, "val"),
        # ts_asd.pth is a flat TalkNet file, not the social container: ExportFlatCheckpoint writes it.
        stage_one=lambda c: False,
        trainer_overrides=lambda c: {"extra_callbacks": [ExportFlatCheckpoint(f"{c.OUTPUT_DIR}/ts_asd.pth")]},
    )
    try:
        if cfg.HHI.MODEL in ASD_TRANSLATORS:
            # EgoT2-s: the translator names imply the paired ASD + RGB data (the README command has no --two_loader).
            spec = asd_translation_run(cfg)
        return run_social_task(cfg, spec)
    except (ValueError, FileNotFoundError) as err:  # bad input: say what and where, without a traceback
        print(f"run_asd.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
