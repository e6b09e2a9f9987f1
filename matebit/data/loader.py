"""The data a training run reads: its paired-folder splits, every file checked before step 1, and the loader that
streams the train split from any step on (`matebit.data.sampler`), one slice per DDP rank."""

from __future__ import annotations

from pathlib import Path

import torch

from matebit.config import ExperimentConfig
from matebit.data.folder import DataConfig, PairedFolderDataset
from matebit.data.sampler import SeededItems, StreamSampler
from matebit.distributed import world
from matebit.errors import DataError, UserError


def open_datasets(cfg: ExperimentConfig, data_root: str):
    """(train split, validation split or None when it is empty) of the paired-folder data set."""
    t = cfg.train
    data_cfg = DataConfig(root=data_root, size=t.image_size, structure_channels=cfg.model.structure_channels,
                          exemplar_rate=t.exemplar_rate, flip=t.flip, seed=t.seed, warp=t.warp,
                          recolour_background=t.recolour_background,
                          recolour_target=t.recolour_target)
    val = PairedFolderDataset(data_cfg, "val", allow_empty=True)
    return PairedFolderDataset(data_cfg, "train"), (val if len(val) else None)


def verify_data(datasets, skip_bad: bool = False, quiet: bool = False,
                progress_from: int = 0) -> list[tuple[Path, str]]:
    """Read every file of the given splits before step 1 (see PairedFolderDataset.verify); the bad files. A split
    of at least `progress_from` pairs shows a progress bar unless `quiet`."""
    from matebit.progress import progress

    bad: dict[Path, str] = {}
    for ds in datasets:
        bar = progress(len(ds), f"verify {ds.split}", "pairs", quiet=quiet or len(ds) < progress_from)
        try:
            bad.update(ds.verify(skip_bad=skip_bad, progress=bar))
        finally:
            bar.close()
        if not len(ds):
            raise DataError(f"{ds.cfg.root}: no usable pairs left in the {ds.split} split after skipping bad files")
    return list(bad.items())


def make_loader(cfg: ExperimentConfig, data_root: str, start_step: int, num_workers: int | None = None,
                dataset=None):
    """The training DataLoader from `start_step` on; `dataset` is the (verified) train split, else opened here."""
    t = cfg.train
    dataset = dataset if dataset is not None else open_datasets(cfg, data_root)[0]
    sampler = StreamSampler(len(dataset), t.batch_size, t.seed, start_step, *world())
    workers = t.num_workers if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(SeededItems(dataset), batch_size=t.batch_size, sampler=sampler,
                                         num_workers=workers, pin_memory=torch.cuda.is_available(),
                                         persistent_workers=workers > 0, drop_last=True)
    return loader


def from_worker(exc: UserError) -> UserError:
    """A DataLoader worker's error comes back as 'Caught DataError in DataLoader worker process 0. Original
    Traceback ...'; give back the original one-line message instead."""
    text = str(exc).strip()
    if not text.startswith("Caught "):
        return exc
    last = text.splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
    return type(exc)(last[len(prefix):] if last.startswith(prefix) else last)
