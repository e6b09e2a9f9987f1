"""One table of ranges for every numeric command-line option and config field, checked before any work.

    matebit translate --threads 1000000      -> matebit translate: error: --threads must be an integer, at least 1
                                                and at most 256, got 1000000
    --set train.image_size=1048576           -> train.image_size must be a multiple of 16, at least 32 and at most
                                                4,096, got 1048576

JSON files and `--set` values are parsed with `parse_json`, which bounds what the parser itself would let through:
nesting deeper than Python's recursion allows and integers of thousands of digits are one-line errors, not a
RecursionError or a ValueError from deep inside.

`OPTIONS` bounds the command-line options (a key names the option as typed, optionally after its command, e.g.
"translate --size"; the most specific key wins), `CONFIG` the fields of the run config (`matebit.config`), so a
`--set`, a `--config` file and a model folder's config.json are held to the same ranges. NaN and infinity are never
in range. `matebit.cli` calls `check_args` once, after parsing and before the command runs; the config dataclasses
call `check_fields`. The ranges are generous (far above every preset and every use the README shows) and exist to
turn a typo or a hostile value into one line instead of an hour of waiting, a hung machine or a traceback.

A module of its own rather than part of config.py: most options are not config fields, and the two tables are
documented and tested together (every numeric option of every command, and every numeric config field, must have
a range: tests/robustness/test_bounds.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from matebit.errors import ConfigError, InputError, UserError


@dataclass(frozen=True)
class Bound:
    """low <= value <= high (or strictly, with `above` / `below`), a multiple of `multiple`; `off` is one more value
    outside the range that means "no limit" or "all" (e.g. --max-size 0). `integer`: ints only."""

    low: float
    high: float
    integer: bool = True
    multiple: int = 1
    above: bool = False  # low itself is out of range (a rate that must be > 0)
    below: bool = False  # high itself is out of range (a probability that must be < 1)
    off: float | None = None

    def describe(self) -> str:
        kind = (f"a multiple of {self.multiple}" if self.multiple > 1 else "an integer") if self.integer else "a number"
        low = f"greater than {_num(self.low)}" if self.above else f"at least {_num(self.low)}"
        high = f"below {_num(self.high)}" if self.below else f"at most {_num(self.high)}"
        off = f" (or {_num(self.off)})" if self.off is not None else ""
        return f"{kind}, {low} and {high}{off}"

    def short(self) -> str:
        """The range in a few characters, for tables: "1 to 256", "32 to 4,096, multiples of 16", "(0, 1)"."""
        low = ("(" if self.above else "[") + _num(self.low)
        high = _num(self.high) + (")" if self.below else "]")
        text = (f"{_num(self.low)} to {_num(self.high)}" if self.integer else f"{low}, {high}")
        text += f", multiples of {self.multiple}" if self.multiple > 1 else ""
        return text + (f"; or {_num(self.off)} (off)" if self.off is not None else "")

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if self.off is not None and value == self.off:
            return True
        if not math.isfinite(value):
            return False
        if value < self.low or value > self.high or (self.above and value == self.low) or \
                (self.below and value == self.high):
            return False
        return not self.integer or value % self.multiple == 0


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"


def _count(high: float, low: float = 1) -> Bound:
    return Bound(low, high)


def _number(low: float, high: float, **kw: Any) -> Bound:
    return Bound(low, high, integer=False, **kw)


_SEED = Bound(0, 2**32 - 1)  # numpy and torch both take it
_STEPS = _count(10**9)
_NET_SIDE = Bound(32, 4096, multiple=16)  # sides the network runs at: multiples of 16 (config.SIZE_STRIDE), >= 32
_MAP_SIDE = _count(8000)  # a side of a written map; 8000 x 8000 is io.MAX_PIXELS
_WEIGHT = _number(0, 1e6)  # a loss weight
_UNIT = _number(0, 1)  # a probability or a threshold in [0, 1]

# The command-line options. A key is "--flag" (every command), "command --flag" or "command sub --flag".
OPTIONS: dict[str, Bound] = {
    "--threads": _count(256),
    "--workers": Bound(0, 64),
    "--batch-size": _count(1024),
    "--seed": _SEED,
    "--steps": _STEPS,
    "--size": _NET_SIDE,
    "translate --max-size": Bound(32, 16384, off=0),
    "eval --limit": _count(10**9),
    "eval --pairs": Bound(0, 10**6),
    "eval --timing-runs": _count(10_000),
    "eval --timing-warmup": Bound(0, 10_000),
    "eval --digits": _count(15),
    "demo --train-faces": _count(100_000),
    "demo --pairs": _count(100_000),
    "bench quality --pairs": _count(100_000),
    "recipe faces --val-identities": _count(100_000),
    "recipe faces --hed-size": Bound(32, 4096),
    "recipe faces --eval-pairs": _count(10**6),
    "recipe faces --variants": _count(1000),
    "serve --port": _count(65535),
    "serve --max-upload-mb": _number(0, 1024, above=True),
    "serve --max-uploads-mb": _number(0, 100_000, above=True),
    "serve --max-pixels": _count(64_000_000),
    "serve --work-side": Bound(16, 4096),
    "export --max-mb": _number(0, 1024, above=True),
    "prepare canny --sigma": _number(0, 10),
    "prepare canny --blur": _number(0, 100),
    "prepare canny --low": _number(0, 255),
    "prepare canny --high": _number(0, 255),
    "prepare hed --threshold": _UNIT,
    "prepare hed --max-side": Bound(16, 8000),
    "prepare hed --size": _MAP_SIDE,
    "prepare landmarks --line-width": _count(256),
    "prepare landmarks --canny-sigma": _number(0, 10),
    "prepare landmarks --canny-blur": _number(0, 100),
    "prepare pose --size": _MAP_SIDE,
    "prepare pose --threshold": _UNIT,
    "prepare pose --stick-width": _count(256),
    "prepare pose --joint-radius": _count(256),
    "prepare pose --person": Bound(0, 10_000),
    "prepare pose --scale": _number(0, 1000, above=True),
    "prepare faces --size": Bound(16, 2048),
    "prepare faces --hed-size": Bound(32, 4096),
    "prepare faces --val-identities": _count(100_000),
    "prepare faces --exemplars": _count(1000),
    "prepare faces --identities": Bound(2, 100_000),
    "prepare faces --variants": _count(1000),
    "prepare retrieval --k": _count(1000),
    "prepare retrieval --image-size": Bound(32, 2048),
}

# The fields of the run config, by section. Widths: far above every preset (the paper's model: 64 / 512 / 512,
# 102 M parameters); at the bounds the generator has a few billion parameters.
CONFIG: dict[str, Bound] = {
    "model.structure_channels": _count(256),
    "model.image_channels": _count(4),
    "model.base_channels": _count(512),
    "model.feature_channels": Bound(2, 2048, multiple=2),  # even: the sine positional code
    "model.spade_hidden": _count(2048),
    "model.n_mat_blocks": Bound(0, 16),
    "model.alpha": _number(0, 1e4, above=True),
    "model.adaconv_kernel": _count(31),
    "model.adaconv_expansion": _count(16),
    "model.official_pos_channels": _count(2048),
    "model.official_prune_channels": _count(2048),
    "model.style_dim": _count(1024),
    "model.d_channels": _count(512),
    "model.d_layers": _count(8),
    "model.d_scales": _count(5),
    "model.d_padding": Bound(1, 2),  # pix2pixHD's 2 or the released code's 1
    **{f"loss.{name}": _WEIGHT for name in ("style", "align", "corr", "structure", "perceptual", "contextual",
                                            "adversarial", "gan_feature_matching", "vgg_feature_matching",
                                            "gram_style", "pixel", "match")},
    "loss.tau": _number(0, 100, above=True),
    "loss.queue_size": _count(2**20),
    "loss.early_steps": Bound(0, 10**9),
    "train.batch_size": _count(1024),
    "train.steps": _STEPS,
    "train.lr_g": _number(0, 10),
    "train.lr_d": _number(0, 10),
    "train.beta1": _number(0, 1, below=True),
    "train.beta2": _number(0, 1, below=True),
    "train.decay_start": Bound(0, 10**9),
    "train.image_size": _NET_SIDE,
    "train.num_workers": Bound(0, 64),
    "train.seed": _SEED,
    "train.log_every": _STEPS,
    "train.image_every": _STEPS,
    "train.checkpoint_every": _STEPS,
    "train.keep_checkpoints": _count(10**6),
    "train.exemplar_rate": _UNIT,
    "train.recolour_background": _UNIT,
    "train.warp_rotation": _number(0, 180),
    "train.warp_zoom": _number(0, 1, below=True),
    "train.warp_shift": _UNIT,
}


def option_bound(scope: str, flag: str) -> Bound | None:
    """The bound of `flag` ("--size") in `scope` ("prepare hed"): the most specific key of `OPTIONS`."""
    words = scope.split()
    for n in range(len(words), -1, -1):
        key = " ".join([*words[:n], flag])
        if key in OPTIONS:
            return OPTIONS[key]
    return None


def check(value: Any, name: str, bound: Bound, error: type[UserError] = InputError) -> None:
    """Raise `error` "NAME must be ..., got VALUE" unless `value` (or each item of a tuple, e.g. a WxH size) holds."""
    for v in value if isinstance(value, tuple) else (value,):
        if not bound.holds(v):
            raise error(f"{name} must be {bound.describe()}, got {v!r}")


def check_args(scope: str, args: Any) -> None:
    """Check every numeric option of a parsed command line (an argparse Namespace) against `OPTIONS`; the option's
    name is its dest with dashes. Options without a bound are left alone (tests/robustness/test_bounds.py makes sure
    there are none); None is an option that was not given."""
    for dest, value in sorted(vars(args).items()):
        numbers = value if isinstance(value, tuple) else (value,)
        if value is None or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            continue
        flag = "--" + dest.replace("_", "-")
        bound = option_bound(scope, flag)
        if bound is not None:
            check(value, flag, bound)


def check_fields(obj: Any, section: str) -> None:
    """Check the numeric fields of a config dataclass (`section`: "model", "loss", "train") against `CONFIG`."""
    for f in dataclasses.fields(obj):
        bound = CONFIG.get(f"{section}.{f.name}")
        if bound is not None:
            check(getattr(obj, f.name), f"{section}.{f.name}", bound, ConfigError)


# Integers in matebit's JSON (configs, landmarks, metadata) fit in 64 bits; Python's own limit is 4300 digits.
MAX_JSON_DIGITS = 20


def parse_json(text: str, name: str, error: type[UserError] = InputError, lenient: bool = False) -> Any:
    """JSON text -> Python values. Malformed JSON, nesting too deep for the parser and integers of more than
    `MAX_JSON_DIGITS` digits are one-line `error`s naming `name`; with `lenient`, text that is not JSON at all is
    returned as it is (a `--set key=some text` value)."""

    def integer(digits: str) -> int:
        n = len(digits.lstrip("-"))
        if n > MAX_JSON_DIGITS:
            raise error(f"{name}: an integer of {n:,} digits; numbers here must fit in {MAX_JSON_DIGITS} digits")
        return int(digits)

    try:
        return json.loads(text, parse_int=integer)
    except error:
        raise
    except json.JSONDecodeError as exc:
        if lenient:
            return text
        raise error(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise error(f"{name}: JSON nested too deeply to read") from None
    except ValueError as exc:
        raise error(f"{name}: not valid JSON ({exc})") from None


def ranges_markdown() -> str:
    """The two tables as Markdown (docs/robustness.md carries this text; a test keeps it in step)."""

    def table(head: str, rows: dict[str, Bound]) -> list[str]:
        return [f"| {head} | range |", "|---|---|"] + [f"| `{k}` | {b.short()} |" for k, b in rows.items()]

    return "\n".join(table("option", OPTIONS) + [""] + table("config field", CONFIG)) + "\n"
