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


# --------------------------------------------------------------------------- run / list (notebooks)


def _add_run(sub) -> None:
    from .runner import EXECUTED_DIR, NOTEBOOKS_DIR

    p = sub.add_parser("run", help="execute notebooks/NN_NAME.py with papermill into book/executed/NN_NAME.ipynb")
    p.add_argument("names", nargs="*", metavar="NAME", help="notebook name, with or without the NN_ prefix")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="notebook parameter; VALUE is parsed as JSON when possible (4, 0.5, true, [1,2]), else a string")
    p.add_argument("--all", action="store_true", help="run every notebook in NN order")
    p.add_argument("--keep-going", action="store_true", help="with several notebooks: do not stop at a failure")
    p.add_argument("--out-dir", default=str(EXECUTED_DIR), help="where executed notebooks go (default book/executed)")
    p.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="hide papermill's progress bar")

    def run(args) -> int:
        from .runner import (REPO_ROOT, find_notebooks, parse_parameters, resolve_notebook, run_notebooks,
                             summary_table)

        if args.all == bool(args.names):
            raise ValueError("give notebook NAME(s) or --all (not both)")
        notebooks = (find_notebooks(args.notebooks_dir) if args.all
                     else [resolve_notebook(n, args.notebooks_dir) for n in args.names])
        results = run_notebooks(notebooks, parse_parameters(args.parameter), out_dir=args.out_dir, cwd=REPO_ROOT,
                                keep_going=args.keep_going, progress=not args.no_progress)
        print(summary_table(results))
        return 0 if all(r.ok for r in results) and len(results) == len(notebooks) else 1

    p.set_defaults(run=run)


def _add_list(sub) -> None:
    from .runner import NOTEBOOKS_DIR

    p = sub.add_parser("list", help="list the notebooks and their parameters")
    p.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), help=argparse.SUPPRESS)

    def run(args) -> int:
        from .runner import find_notebooks, list_table

        print(list_table(find_notebooks(args.notebooks_dir)))
        return 0

    p.set_defaults(run=run)


# --------------------------------------------------------------------------- scores


def _add_scores(sub) -> None:
    p = sub.add_parser("scores", help="rank heads by OV score (copy/next/prev/add<k>) or induction offset")
    p.add_argument("--model", default=EMBEDDED_MODEL)
    p.add_argument("--device", default=None)
    p.add_argument("--family", default="digits", help="digits, number_words, months, days, letters")
    p.add_argument("--kind", default="next", help="copy, next, prev, add<k>, sub<k> (OV) or induction")
    p.add_argument("--top", type=int, default=10, help="number of heads printed")
    p.add_argument("--k", type=int, default=1, help="OV: target must be in the top-k output logits")
    p.add_argument("--over", choices=("family", "vocab"), default="family", help="OV: top-k over these tokens")
    p.add_argument("--embedding", choices=("mlp0", "mlp0_only", "embed"), default="mlp0")
    p.add_argument("--n", type=int, default=32, help="induction: number of irregularly spaced prompts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("json", "table"), default="table")

    def run(args) -> int:
        model, _ = _load_tokenizer_model(args)
        if args.kind == "induction":
            from .induction import induction_table

            df = induction_table(model, args.family, n=args.n, seed=args.seed)
            cols = ["component", "member_k1", "token_k1", "same_type_k1", "member_k2", "token_k2"]
            df = df.sort_values("member_k1", ascending=False).head(args.top)[cols]
        else:
            from .ov_scores import ov_scores, parse_kind, top_heads

            parse_kind(args.kind)  # a clear error before any work
            kinds = list(dict.fromkeys([args.kind, "copy", "next"]))
            df = ov_scores(model, args.family, kinds, top_k=args.k, over=args.over, embedding=args.embedding)
            df = top_heads(df, args.kind, args.top)[["component", *kinds, f"n_{args.kind}"]]
        _print_table(df.reset_index(drop=True), args.format)
        return 0

    p.set_defaults(run=run)


# --------------------------------------------------------------------------- edges


def _add_edges(sub) -> None:
    p = sub.add_parser("edges", help="edge circuit inside a node circuit: path patching (exact) or EAP / EAP-IG")
    p.add_argument("--circuit", required=True, help="circuit JSON written by `seqcirc circuit`")
    p.add_argument("--threshold", type=float, default=0.8,
                   help="edge threshold in (0,1]; also picks the circuit of that threshold from a multi-threshold file")
    p.add_argument("--method", choices=("exact", "eap", "eap-ig"), default="exact")
    p.add_argument("--ig-steps", type=int, default=5, help="integrated-gradient steps for eap-ig")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="output JSON (default results/<model>/edges_<task>.json)")

    def run(args) -> int:
        from .circuits import load_circuit
        from .patching import run_edges
        from .results import results_dir, write_json_atomic

        data = json.loads(open(args.circuit).read())
        record = load_circuit(args.circuit, args.threshold) if "circuits" in data else data
        out = run_edges(record, args.threshold, method=args.method, ig_steps=args.ig_steps, device=args.device)
        path = args.out or results_dir(out["model"]) / f"edges_{out['task']}.json"
        write_json_atomic(path, out)
        f = out["faithfulness"]
        print(f"{out['n_edges']} of {out['n_candidate_edges']} edges kept: edge-circuit score {out['score']:.3f} "
              f"(node circuit {f['node_circuit_score']:.3f}, node ablation of connected nodes "
              f"{f['node_ablation_score_connected']:.3f}), {out['forward_passes']} forward passes, {out['seconds']:.1f} s")
        print(f"wrote {path}")
        return 0

    p.set_defaults(run=run)


COMMANDS: list[Callable] = [_add_dataset, _add_behaviour, _add_circuit, _add_run, _add_list, _add_scores, _add_edges]


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
