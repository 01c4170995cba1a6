"""Toy TaskModule run for tests/egot2/test_engine.py: train a linear classifier with 1 or N CPU processes.

Usage: python tests/egot2/ddp_toy.py --processes N --output DIR

The global batch is the same for every process count (8 samples per optimisation step; the training loader deals
samples round-robin to the processes without shuffling, so step k sees samples 8k..8k+7 whatever the process count),
hence 1 and 2 processes follow the same trajectory and must report the same whole-split metrics. The validation
split has an odd size (37), so DDP shards are padded with a repeated sample, and prediction shards are uneven
(19 / 18). Rank 0 writes DIR/result.json.
"""
import argparse
import json
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler

from egot2.engine import OptimSettings, TaskModule, build_trainer, find_resume_checkpoint, predict_records

GLOBAL_BATCH = 8
NUM_TRAIN, NUM_VAL = 48, 37


class PointsDataset(Dataset):
    """Samples: ``x`` [4] float32, ``label`` int, ``uid`` str, ``index`` int."""

    def __init__(self, size: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.points = torch.randn(size, 4, generator=generator)
        direction = torch.tensor([1.0, -2.0, 0.5, 0.0])
        noise = 2.0 * torch.randn(size, generator=generator)
        self.labels = (self.points @ direction + noise > 0).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.points[index], "label": self.labels[index], "uid": f"clip_{index:03d}", "index": index}


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Non-interpolated AP of the positive class (ties broken by the given order)."""
    order = torch.argsort(scores, descending=True, stable=True)
    hits = labels[order].double()
    precision_at_hit = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    return float((precision_at_hit * hits).sum() / hits.sum())


def split_metrics(records: dict) -> dict:
    return {
        "acc": records["hit"].float().mean().item(),
        "ap": average_precision(records["score"], records["label"]),
        "n": float(len(records["uid"])),
        "unique": float(len(set(records["uid"]))),
        "index_sum": float(records["index"].sum()),
    }


class ToyClassifier(TaskModule):
    def __init__(self):
        super().__init__(OptimSettings(method="sgd", lr=0.05, lr_policy="cosine"), id_field="uid")
        self.model = nn.Linear(4, 2)

    def train_dataloader(self):
        # Lightning would shuffle training shards under DDP; an explicit unshuffled DistributedSampler keeps the
        # global batches identical to the single-process run.
        dataset = PointsDataset(NUM_TRAIN, seed=1)
        world = self.trainer.world_size
        sampler = (DistributedSampler(dataset, num_replicas=world, rank=self.trainer.global_rank, shuffle=False)
                   if world > 1 else SequentialSampler(dataset))
        return DataLoader(dataset, batch_size=GLOBAL_BATCH // world, sampler=sampler)

    def training_step(self, batch, batch_idx):
        logits = self.model(batch["x"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        self.record("train", uid=batch["uid"], index=batch["index"], score=logits.softmax(-1)[:, 1],
                    label=batch["label"], hit=logits.argmax(-1) == batch["label"])
        return loss

    def validation_step(self, batch, batch_idx):
        self._record_eval("val", batch)

    def test_step(self, batch, batch_idx):
        self._record_eval("test", batch)

    def _record_eval(self, split, batch):
        logits = self.model(batch["x"])
        self.record(split, uid=batch["uid"], index=batch["index"], score=logits.softmax(-1)[:, 1],
                    label=batch["label"], hit=logits.argmax(-1) == batch["label"])

    def compute_metrics(self, split, records):
        return split_metrics(records)

    def predict_batch(self, batch):
        return {"uid": batch["uid"], "score": self.model(batch["x"]).softmax(-1)[:, 1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    output = Path(args.output)
    trainer = build_trainer(output_dir=output, max_epochs=3, monitor="val_acc", mode="max",
                            cpu_processes=args.processes, seed=0, enable_progress_bar=False, log_every_n_steps=1)
    module = ToyClassifier()
    val = DataLoader(PointsDataset(NUM_VAL, seed=2), batch_size=5, shuffle=False)
    trainer.fit(module, val_dataloaders=val)
    fit_metrics = dict(module.split_metrics)
    logged = {key: float(value) for key, value in trainer.callback_metrics.items()}
    validated = trainer.validate(module, dataloaders=val, verbose=False)[0]
    predictions = predict_records(trainer, module, val)
    if not trainer.is_global_zero:
        return
    # The same metrics computed directly, in one process, from the final weights.
    dataset = PointsDataset(NUM_VAL, seed=2)
    with torch.no_grad():
        logits = module.model(dataset.points)
    direct = split_metrics({"hit": logits.argmax(-1) == dataset.labels, "score": logits.softmax(-1)[:, 1],
                            "label": dataset.labels, "uid": [f"clip_{i:03d}" for i in range(NUM_VAL)],
                            "index": torch.arange(NUM_VAL)})
    last = find_resume_checkpoint(output)
    checkpoint = torch.load(last, weights_only=True, map_location="cpu")
    result = {
        "world_size": trainer.world_size,
        "fit": fit_metrics,
        "logged": logged,
        "validate": {key: float(value) for key, value in validated.items()},
        "direct": direct,
        "predict_uids": predictions["uid"],
        "predict_scores": predictions["score"].tolist(),
        "weights": [value.tolist() for value in module.model.state_dict().values()],
        "checkpoint_keys": sorted(checkpoint["state_dict"]),
        "checkpoint_epoch": checkpoint["epoch"],
        "best_model_path": trainer.checkpoint_callback.best_model_path,
    }
    (output / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
