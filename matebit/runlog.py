"""A training run's record, on rank 0 only: log.jsonl (one JSON object per line), TensorBoard scalars, and image
grids with every row named (`image_grid`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from matebit.io import write_error


class RunLog:
    """JSONL + TensorBoard scalars + image grids, on rank 0 only."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.out = out
        self.tb = None
        if enabled:
            (out / "images").mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:  # tensorboard is a dependency, but logging must never stop training
                self.tb = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._append({"step": step, **values})
        if self.tb:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def event(self, event: str, step: int, **fields) -> None:
        """A line of log.jsonl that is not scalars: the start of a run, the files left out of it, ..."""
        if not self.enabled:
            return
        self._append({"event": event, "step": step, **fields})

    def _append(self, record: dict) -> None:
        """One line of log.jsonl; a failed write (a full disk) is a PathError naming the file."""
        path = self.out / "log.jsonl"
        try:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise write_error(path, exc) from None

    def images(self, step: int, batch: dict[str, Tensor], out) -> None:
        if not self.enabled:
            return
        grid = image_grid(batch, out)
        import torchvision

        path = self.out / "images" / f"step-{step:08d}.png"
        try:
            torchvision.utils.save_image(grid, path)
        except OSError as exc:  # a full disk: name the file, as the checkpoint writes do
            raise write_error(path, exc) from None
        if self.tb:
            self.tb.add_image("samples", grid, step)

    def close(self) -> None:
        if self.tb:
            self.tb.close()


GRID_ROWS = ("structure", "exemplar", "warped (last MAT)", "X_uncor weight (white = no match)", "output", "target")


def image_grid(batch: dict[str, Tensor], out, max_items: int = 4) -> Tensor:
    """Rows: structure, exemplar, warped exemplar, X_uncor weight, output, target (all in [0, 1]), each named in a
    strip on the left; the two MAT rows only when the model has MAT blocks."""
    import torch.nn.functional as F

    n = min(max_items, batch["image"].shape[0])
    size = batch["image"].shape[-2:]

    def rgb(x):
        x = x[:n].detach().float().cpu()
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]

    def up(x):
        return F.interpolate(x, size=size, mode="nearest")

    rows = [rgb(batch["structure"]), rgb(batch["exemplar"] * 0.5 + 0.5)]
    names = list(GRID_ROWS[:2])
    if out.warped:
        rows += [up(rgb(out.warped[-1] * 0.5 + 0.5)), up(rgb(out.uncor_weight[-1]))]
        names += GRID_ROWS[2:4]
    rows += [rgb(out.image * 0.5 + 0.5), rgb(batch["image"] * 0.5 + 0.5)]
    names += GRID_ROWS[4:]
    import torchvision

    padding = 2
    grid = torchvision.utils.make_grid(torch.cat(rows).clamp(0, 1), nrow=n, padding=padding)
    strip = _label_strip(names, grid.shape[1], int(size[0]), padding)
    return torch.cat([strip, grid], dim=2)


def _label_strip(names: list[str], height: int, row_height: int, padding: int) -> Tensor:
    """A (3, height, width) strip, white on black, with each name beside its row of a make_grid grid (wrapped to
    the strip's width; a row too low for every line shows the first ones)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    font_px = max(8, min(12, row_height // 4))
    font = ImageFont.load_default(size=font_px)
    width = max(64, 7 * font_px + 24)
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    line_px = font_px + 2
    for r, name in enumerate(names):
        lines: list[str] = []
        for word in name.split():
            if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width - 8:
                lines[-1] += f" {word}"
            else:
                lines.append(word)
        top = padding + r * (row_height + padding)
        fit = max(1, row_height // line_px)
        lines = lines[:fit]
        y = top + max(0, (row_height - len(lines) * line_px) // 2)
        for line in lines:
            draw.text((4, y), line, fill=255, font=font)
            y += line_px
    strip = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
    return strip.expand(3, -1, -1).clone()
