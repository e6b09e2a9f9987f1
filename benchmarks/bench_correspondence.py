"""The masked correspondence alone: reference (N x M matrix) vs chunked vs fused (FlexAttention).

    python benchmarks/bench_correspondence.py --quick            # CPU: N = 1024, 4096, forward only
    python benchmarks/bench_correspondence.py --device cuda --backward --precisions fp32 bf16

N = tokens on the 1/8 grid: 1024 at 256x256, 4096 at 512x512, 16384 at 1024x1024. C = 512 for q and k and
C + 3 for v (features plus the exemplar warp), as in the paper preset. Writes results/correspondence-<device>.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import header, measure, notes, print_table, write_json  # noqa: E402

from matebit.models import fused  # noqa: E402
from matebit.models.correspondence import (  # noqa: E402
    Correspondence,
    centred_unit,
    masked_correspondence_chunked,
    masked_correspondence_reference,
)

IMPLS = {
    "reference": lambda q, k, v, a: masked_correspondence_reference(q, k, v, a),
    "chunked": lambda q, k, v, a: masked_correspondence_chunked(q, k, v, a, chunk=1024),
    "fused": lambda q, k, v, a: Correspondence(*fused.masked_correspondence_fused(q, k, v, a)),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--channels", type=int, default=512)
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--backward", action="store_true", help="time forward + backward (GPU only for fused)")
    p.add_argument("--alpha", type=float, default=100.0)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="CPU-sized: N 1024 and 4096, batch 1, fp32, 3 runs")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.quick:
        args.tokens, args.batch, args.precisions = [1024, 4096], 1, ["fp32"]
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    runs = args.runs if args.runs is not None else (20 if gpu else 3)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    rows = []
    for n, precision, impl in itertools.product(args.tokens, args.precisions, args.impls):
        row = dict(tokens=n, batch=args.batch, precision=precision, impl=impl,
                   pass_="fwd+bwd" if args.backward else "fwd")
        if impl == "fused" and not gpu:
            rows.append({**row, "note": "skipped: fused is CUDA only (no CPU backward, no CPU LSE when compiled)"})
            continue
        g = torch.Generator().manual_seed(n)
        c = args.channels
        q = centred_unit(torch.randn(args.batch, n, c, generator=g)).to(device, dtypes[precision])
        k = centred_unit(torch.randn(args.batch, n, c, generator=g)).to(device, dtypes[precision])
        v = torch.randn(args.batch, n, c + 3, generator=g).to(device, dtypes[precision])
        if args.backward:
            q, k, v = (t.requires_grad_() for t in (q, k, v))

        def step():
            if args.backward:
                res = IMPLS[impl](q, k, v, args.alpha)
                (res.out.float().sum() + res.reliability.float().sum()).backward()
            else:
                with torch.no_grad():
                    IMPLS[impl](q, k, v, args.alpha)

        m = measure(step, device, warmup, runs)
        if m is None:
            rows.append({**row, "note": "out of memory"})
            continue
        row.update(ms=m.pop("median_s") * 1e3, min_ms=m.pop("min_s") * 1e3, **m)
        rows.append(row)
        print_table([row], ["tokens", "batch", "precision", "impl", "pass_", "ms", "min_ms", "peak_mib"])
        del q, k, v
    print()
    print_table(rows, ["tokens", "batch", "precision", "impl", "pass_", "ms", "min_ms", "peak_mib", "note"])
    record = header(device, channels=args.channels, value_channels=args.channels + 3, alpha=args.alpha,
                    **notes(device),
                    results=rows)
    print("wrote", write_json("correspondence", device, record, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
