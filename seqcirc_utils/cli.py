"""The ``seqcirc`` command line.

Each subcommand is a small ``_add_<name>(subparsers)`` function below that registers its parser
and a ``run`` callback; the algorithms live in the package modules. Add a command by writing one
such function and listing it in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .models import EMBEDDED_MODEL


def _print_table(df, fmt: str) -> None:
    if fmt == "json":
        print(df.to_json(orient="records", indent=1))
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
            print(df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


def _common_dataset_args(p: argparse.ArgumentParser) -> None:
    from .tasks import CORRUPTIONS, DIRECTIONS, TASKS, TEMPLATES

    p.add_argument("--task", default="digits", help=f"one of {', '.join(TASKS)}")
    p.add_argument("--template", default="pure", help=f"one of {', '.join(TEMPLATES)}")
    p.add_argument("--direction", default="increasing", help=f"one of {', '.join(DIRECTIONS)}")
    p.add_argument("--step", type=int, default=1)
    p.add_argument("--length", type=int, default=4, help="members shown")
    p.add_argument("--corruption", default="randAll", help=f"one of {', '.join(CORRUPTIONS)}")
    p.add_argument("--n", type=int, default=64, help="number of prompts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=EMBEDDED_MODEL)
    p.add_argument("--device", default=None)


def dataset_kwargs(args: argparse.Namespace) -> dict:
    return dict(template=args.template, direction=args.direction, step=args.step, length=args.length,
                corruption=args.corruption, n=args.n, seed=args.seed)


def _load_tokenizer_model(args):
    from .models import load_model

    return load_model(args.model, device=args.device)


# --------------------------------------------------------------------------- dataset


def _add_dataset(sub) -> None:
    p = sub.add_parser("dataset", help="print a task dataset (prompts, answers, positions, corruptions)")
    _common_dataset_args(p)
    p.add_argument("--format", choices=("json", "table"), default="json")

    def run(args) -> int:
        from .tasks import make_dataset

        model, _ = _load_tokenizer_model(args)
        ds = make_dataset(model.tokenizer, args.task, model_name=args.model, **dataset_kwargs(args))
        if args.format == "json":
            json.dump(ds.to_json(), sys.stdout)
            print()
        else:
            import pandas as pd

            rows = [{"text": p.text, "answer": p.answer, "incorrect": p.incorrect, "final_position": p.final_position,
                     "member_positions": p.member_positions, "corrupted_text": p.corrupted_text} for p in ds.prompts]
            _print_table(pd.DataFrame(rows), "table")
        return 0

    p.set_defaults(run=run)


# --------------------------------------------------------------------------- behaviour


def _add_behaviour(sub) -> None:
    p = sub.add_parser("behaviour", help="per task/template/direction: accuracy, p(correct), logit diff, PD")
    p.add_argument("--model", default=EMBEDDED_MODEL)
    p.add_argument("--device", default=None)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("json", "table"), default="table")

    def run(args) -> int:
        from .behaviour import behaviour_table

        model, _ = _load_tokenizer_model(args)
        _print_table(behaviour_table(model, args.model, n=args.n, seed=args.seed), args.format)
        return 0

    p.set_defaults(run=run)


# --------------------------------------------------------------------------- circuit


def _add_circuit(sub) -> None:
    p = sub.add_parser("circuit", help="find nested circuits by iterative node pruning (sweep or fast)")
    _common_dataset_args(p)
    p.add_argument("--thresholds", default="0.8", help="comma-separated fractions in (0,1], e.g. 0.9,0.8")
    p.add_argument("--method", choices=("sweep", "fast"), default="sweep")
    p.add_argument("--ablation", choices=("mean", "zero", "resample"), default="mean")
    p.add_argument("--metric", choices=("logit_diff", "kl", "prob_diff"), default="logit_diff")
    p.add_argument("--no-filter", action="store_true", help="keep prompts the model gets wrong")
    p.add_argument("--out", default=None, help="circuit JSON path (default results/<model>/circuit_<task>.json)")

    def run(args) -> int:
        from .circuits import find_circuits, write_circuits
        from .results import results_dir

        thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
        records = find_circuits(args.model, args.task, thresholds, method=args.method, ablation=args.ablation,
                                metric=args.metric, device=args.device, filter_correct=not args.no_filter,
                                **dataset_kwargs(args))
        out = args.out or results_dir(args.model) / f"circuit_{args.task}.json"
        write_circuits(out, records)
        for r in records:
            heads = " ".join(f"L{l}.H{h}" for l, h in r["heads"])
            print(f"threshold {r['threshold']:.2f}: score {r['score']:.3f}, {len(r['heads'])} heads, "
                  f"{len(r['mlps'])} MLPs, {r['forward_passes']} forward passes, {r['seconds']:.1f} s\n  heads: {heads}")
        print(f"wrote {out}")
        return 0

    p.set_defaults(run=run)


COMMANDS: list[Callable] = [_add_dataset, _add_behaviour, _add_circuit]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqcirc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, RuntimeError) as err:  # bad input / unavailable model: a clear one-line error
        print(f"seqcirc {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
