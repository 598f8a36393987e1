"""The ``seqcirc`` command line.

Each subcommand is a small ``_add_<name>(subparsers)`` function below that registers its parser
and a ``run`` callback; the algorithms live in the package modules. Add a command by writing one
such function and listing it in ``COMMANDS``.

Conventions: choices come from the package's constants; every option has help text
(``tests/test_cli.py`` walks the parser); a ``run`` callback checks all its arguments (and input
files) before it loads a model, and a user error is a :class:`~seqcirc_utils.core.errors.SeqcircError`
(:class:`ParameterError`, :class:`BadFileError`, ... raised here or by the package's own checks): one
line on stderr naming what is valid, exit status 2, no traceback. Any other exception is a bug and
shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from seqcirc_utils.core.errors import (
    BadFileError,
    MissingExtraError,
    ModelUnavailableError,
    ParameterError,
    SeqcircError,
)

if TYPE_CHECKING:  # annotations only: the records load with the command that reads a circuit file
    from seqcirc_utils.core.records import CircuitRecord

# No package module is imported at module level. Building the parser imports only the torch-free
# ``options`` (the choices) and ``types``; torch, transformer_lens and the model load only after every
# argument has been checked.


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be an integer >= {minimum}, got {value}")
        return value

    return parse


def _fraction(text: str) -> float:
    """An argparse ``type``: a float in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], e.g. 0.8, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], e.g. 0.8, got {value}")
    return value


def _thresholds(text: str) -> list[float]:
    """An argparse ``type``: comma-separated fractions in (0, 1], e.g. ``0.9,0.8``."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("give at least one threshold in (0, 1], e.g. 0.8 or 0.9,0.8")
    return [_fraction(t) for t in parts]


def _print_table(df, fmt: str) -> None:
    if fmt == "json":
        print(df.to_json(orient="records", indent=1))
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
            print(df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


def _model_args(p: argparse.ArgumentParser) -> None:
    from seqcirc_utils.core.options import EMBEDDED_MODEL, TINY_MODELS

    p.add_argument(
        "--model",
        default=EMBEDDED_MODEL,
        help=f"model spec: {EMBEDDED_MODEL} (default, embedded), {', '.join(TINY_MODELS)}, gpt2-small, "
        "a Hugging Face hub id, a local Hugging Face folder or a .gguf file",
    )
    p.add_argument(
        "--device", default=None, help="torch device: cpu, cuda, cuda:N (default: cuda when present, else cpu)"
    )


def _common_dataset_args(p: argparse.ArgumentParser) -> None:
    from seqcirc_utils.core.options import CORRUPTIONS, DIRECTIONS, TASKS, TEMPLATES

    p.add_argument(
        "--task",
        default="digits",
        choices=TASKS,
        metavar="TASK",
        help="sequence family or greater_than: %(choices)s (default %(default)s)",
    )
    p.add_argument(
        "--template",
        default="pure",
        choices=TEMPLATES,
        metavar="TEMPLATE",
        help="prompt template: %(choices)s (default %(default)s)",
    )
    p.add_argument(
        "--direction",
        default="increasing",
        choices=DIRECTIONS,
        metavar="DIRECTION",
        help="%(choices)s (default %(default)s)",
    )
    p.add_argument(
        "--step",
        type=_int_at_least(1, "--step"),
        default=1,
        help="distance between shown members, 1 = consecutive (default %(default)s)",
    )
    p.add_argument(
        "--length", type=_int_at_least(2, "--length"), default=4, help="members shown, >= 2 (default %(default)s)"
    )
    p.add_argument(
        "--corruption",
        default="randAll",
        choices=CORRUPTIONS,
        metavar="CORRUPTION",
        help="how the corrupted twin breaks the sequence: %(choices)s (default %(default)s; greater_than has its own)",
    )
    p.add_argument(
        "--n",
        type=_int_at_least(1, "--n"),
        default=None,
        help=f"number of prompts (default {DEFAULT_PROMPTS}; circuit --sequences sizes by sequence instead)",
    )
    p.add_argument("--seed", type=_int_at_least(0, "--seed"), default=0, help="dataset seed (default %(default)s)")
    _prefix_arg(p)
    _model_args(p)


def _prefix_arg(p: argparse.ArgumentParser) -> None:
    from seqcirc_utils.core.options import PREFIX_MODES

    p.add_argument(
        "--prefix",
        default="document",
        choices=PREFIX_MODES,
        metavar="PREFIX",
        help="token each prompt starts with: document = the pretraining document separator "
        "(<|endoftext|> for GPT-2 and SmolLM2), bos = the tokenizer's bos_token whatever it is "
        "(a chat marker for SmolLM2-Instruct), none; %(choices)s (default %(default)s)",
    )


DEFAULT_PROMPTS = 64  # --n when neither it nor circuit's --sequences is given


def dataset_kwargs(args: argparse.Namespace, sized_by_sequences: bool = False) -> dict:
    """The dataset options of ``args``; ``n`` left out when ``sized_by_sequences`` (circuit's ``--sequences``:
    a ``--n`` beside it is refused)."""
    if sized_by_sequences and args.n is not None:
        raise ParameterError("--sequences sizes discovery and held-out by distinct sequences; drop --n")
    sizes = {} if sized_by_sequences else {"n": DEFAULT_PROMPTS if args.n is None else args.n}
    return dict(
        template=args.template,
        direction=args.direction,
        step=args.step,
        length=args.length,
        corruption=args.corruption,
        **sizes,
        seed=args.seed,
        prefix=getattr(args, "prefix", "document"),
    )


def _check_dataset(args: argparse.Namespace) -> None:
    """The dataset options checked together (e.g. greater_than has one corruption), before any model loads."""
    from seqcirc_utils.tasks.datasets import TaskSpec

    TaskSpec(task=args.task, **dataset_kwargs(args)).validate()  # ParameterError names what is valid


def _check_device(device: str | None) -> None:
    """``--device``: a torch device this machine has (None = the default device)."""
    if device is None:
        return
    import torch

    valid = "cpu, cuda, cuda:N" + (", mps" if torch.backends.mps.is_available() else "")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ParameterError(f"unknown device {device!r}; valid: {valid}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device {device!r}: no CUDA GPU is visible here; valid: cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ParameterError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"valid: cuda:0..cuda:{torch.cuda.device_count() - 1}"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ParameterError(f"device {device!r}: MPS is not available here; valid: cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ParameterError(f"unsupported device {device!r}; valid: {valid}")


def _check_model(spec: str) -> None:
    """``--model``: a non-empty spec. Whether it names a loadable model (path exists, hub id cached or
    reachable) is checked by ``models.load_model`` before any weights load; see :func:`_load_tokenizer_model`."""
    from seqcirc_utils.models.loading import resolve_spec

    resolve_spec(spec)  # ParameterError for an empty spec


def _check_out(path: str | None, flag: str = "--out") -> None:
    """An output file path: not a directory, and its nearest existing parent is a writable directory."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise ParameterError(f"{flag} {path!r} is a directory; give a file path, e.g. {p / 'out.json'}")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ParameterError(f"{flag} {path!r}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ParameterError(f"{flag} {path!r}: cannot write in {parent}")


#: The modules each optional extra of pyproject.toml provides that a command imports (checked before any work).
EXTRA_MODULES = {
    "book": ("papermill", "jupytext", "nbformat", "ipykernel"),
    "grid": ("distributed", "yaml"),
}


def _require_extras(*extras: str) -> None:
    """Refuse (one line, with the pip command) when an optional extra this command needs is not installed."""
    import importlib.util

    for extra in extras:
        missing = [m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m) is None]
        if missing:
            raise MissingExtraError(
                f"this command needs the [{extra}] extra ({', '.join(missing)} not installed); "
                f"install it: pip install 'seqcirc[{extra}]' (or `make setup`)"
            )


def _check_model_args(args: argparse.Namespace) -> None:
    _check_device(args.device)
    _check_model(args.model)


def _load_tokenizer_model(args):
    """Load ``--model`` on ``--device``; an unavailable model is a :class:`ModelUnavailableError`."""
    from seqcirc_utils.models.loading import load_model

    try:
        return load_model(args.model, device=args.device)
    except (ModelUnavailableError, OSError) as err:
        raise ModelUnavailableError(f"cannot load model {args.model!r}: {err}") from None


# --------------------------------------------------------------------------- dataset


def _add_dataset(sub) -> None:
    p = sub.add_parser("dataset", help="print a task dataset (prompts, answers, positions, corruptions)")
    _common_dataset_args(p)
    p.add_argument(
        "--format",
        choices=("json", "table"),
        default="json",
        help="json: the dataset dict (as embedded in circuit JSON); table: one row per prompt",
    )

    def run(args) -> int:
        from seqcirc_utils.tasks.datasets import make_dataset

        _check_dataset(args)
        _check_model_args(args)
        model, _ = _load_tokenizer_model(args)
        ds = make_dataset(model.tokenizer, args.task, model_name=args.model, **dataset_kwargs(args))
        if args.format == "json":
            json.dump(ds.to_json(), sys.stdout)
            print()
        else:
            import pandas as pd

            rows = [
                {
                    "text": p.text,
                    "answer": p.answer,
                    "incorrect": p.incorrect,
                    "final_position": p.final_position,
                    "member_positions": p.member_positions,
                    "corrupted_text": p.corrupted_text,
                }
                for p in ds.prompts
            ]
            _print_table(pd.DataFrame(rows), "table")
        return 0

    p.set_defaults(run=run)


# --------------------------------------------------------------------------- behaviour


def _add_behaviour(sub) -> None:
    p = sub.add_parser("behaviour", help="per task/template/direction: accuracy, p(correct), logit diff, PD")
    _model_args(p)
    p.add_argument(
        "--n",
        type=_int_at_least(1, "--n"),
        default=64,
        help="prompts per task/template/direction (default %(default)s)",
    )
    p.add_argument("--seed", type=_int_at_least(0, "--seed"), default=0, help="dataset seed (default %(default)s)")
    p.add_argument("--format", choices=("json", "table"), default="table", help="output format (default %(default)s)")
    _prefix_arg(p)

    def run(args) -> int:
        from seqcirc_utils.tasks.behaviour import behaviour_table

        _check_model_args(args)
        model, _ = _load_tokenizer_model(args)
        _print_table(behaviour_table(model, args.model, n=args.n, seed=args.seed, prefix=args.prefix), args.format)
        return 0

    p.set_defaults(run=run)


# --------------------------------------------------------------------------- circuit


def _pair(text: str) -> tuple[int, int]:
    """An argparse ``type``: two comma-separated positive integers, e.g. ``2,1``."""
    parts = [t.strip() for t in text.split(",")]
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"give two positive integers (discovery,held-out), e.g. 2,1; got {text!r}")
    return int(parts[0]), int(parts[1])


def _config_args(p) -> None:
    """One flag per :class:`~seqcirc_utils.core.config.DiscoveryConfig` field (nested ones as ``--fast-rounds``);
    every default is None, so the config's own defaults apply (:func:`_discovery_config`)."""
    from seqcirc_utils.core.config import flag_of
    from seqcirc_utils.core.options import SPLIT_MODES, AblationMode, Metric, PruneMethod, SweepOrder

    def arg(dotted: str, *aliases: str, **kwargs) -> None:
        p.add_argument(flag_of(dotted), *aliases, dest=dotted.replace(".", "__"), default=None, **kwargs)

    arg(
        "thresholds",
        type=_thresholds,
        help="comma-separated fractions of the full model's metric in (0,1], e.g. 0.9,0.8 "
        "(nested circuits, highest first; default 0.8)",
    )
    arg(
        "method",
        choices=PruneMethod.values(),
        help="sweep: the paper's backward then forward sweep, one forward pass per candidate; fast: "
        "candidates ranked by attribution, then refined to a 1-minimal circuit (default sweep)",
    )
    arg("sweep.order", "--order", choices=SweepOrder.values(), help="sweep order: %(choices)s (default: paper)")
    arg("fast.rounds", type=_int_at_least(1, "--fast-rounds"), help="fast method: attribution rounds (default 2)")
    arg(
        "fast.frontier",
        type=_int_at_least(0, "--fast-frontier"),
        help="fast method: components tried past each passing prefix (default 0)",
    )
    arg(
        "fast.ig_steps",
        type=_int_at_least(1, "--fast-ig-steps"),
        help="fast method: integration steps of the attribution (default 3)",
    )
    arg(
        "fast.minimal",
        action=argparse.BooleanOptionalAction,
        help="fast method: refine to a 1-minimal circuit (default: yes)",
    )
    arg(
        "fast.max_refine_passes",
        type=_int_at_least(1, "--fast-max-refine-passes"),
        help="fast method: most refinement passes (default: until no component can go)",
    )
    arg(
        "ablation", choices=AblationMode.values(), help="what replaces an ablated component: %(choices)s (default mean)"
    )
    arg(
        "metric",
        choices=Metric.values(),
        help="%(choices)s (default: the dataset's own, prob_diff for greater_than, else logit_diff)",
    )
    arg(
        "filter_correct",
        action=argparse.BooleanOptionalAction,
        help="keep only prompts the model answers right (default: yes; --no-filter is --no-filter-correct)",
    )
    p.add_argument("--no-filter", dest="filter_correct", action="store_false", default=None, help=argparse.SUPPRESS)
    arg(
        "min_prompts",
        type=_int_at_least(1, "--min-prompts"),
        help="fewest prompts that must pass the filter (the draw grows 2x / 4x first; default 8)",
    )
    arg("heldout", action=argparse.BooleanOptionalAction, help="score every circuit on held-out prompts (default: yes)")
    arg(
        "heldout_seed",
        type=_int_at_least(0, "--heldout-seed"),
        help="seed of the held-out draw with --split resampled (default: the dataset seed + 1000)",
    )
    arg(
        "split",
        choices=SPLIT_MODES,
        help="disjoint: discovery and held-out prompts from disjoint sequences; resampled: both from all "
        "(labelled so) (default disjoint)",
    )
    arg("split_shares", type=_pair, help="discovery,held-out sizes of the sequence partition (default 1,1)")
    arg(
        "sequences",
        type=_pair,
        help="discovery,held-out distinct sequences, one prompt each (instead of --n; the split's shares follow)",
    )
    arg(
        "min_sequences",
        type=_int_at_least(1, "--min-sequences"),
        help="fewest distinct sequences each side of the split needs (default 2)",
    )
    arg(
        "n_resamples",
        type=_int_at_least(1, "--n-resamples"),
        help="bootstrap resamples of every interval (default 1000)",
    )
    arg("bootstrap_seed", type=_int_at_least(0, "--bootstrap-seed"), help="seed of the bootstrap (default 0)")


def _discovery_config(args):
    """The :class:`~seqcirc_utils.core.config.DiscoveryConfig` of the flags given (others at their defaults); a
    value the config refuses is a one-line ParameterError, raised before any model loads."""
    from seqcirc_utils.core.config import DiscoveryConfig, config_fields

    top: dict = {}
    for dotted, _ in config_fields():
        value = getattr(args, dotted.replace(".", "__"), None)
        if value is None:
            continue
        if "." in dotted:
            outer, inner = dotted.split(".")
            top.setdefault(outer, {})[inner] = value
        else:
            top[dotted] = value
    return DiscoveryConfig().with_options(**top)


def _add_circuit(sub) -> None:
    p = sub.add_parser("circuit", help="find nested circuits by iterative node pruning (sweep or fast)")
    _common_dataset_args(p)
    _config_args(p)
    p.add_argument("--out", default=None, help="circuit JSON path (default results/<model>/circuit_<task>.json)")

    def run(args) -> int:
        from seqcirc_utils.core.results import results_dir
        from seqcirc_utils.discovery.pipeline import find_circuits, write_circuits

        _check_dataset(args)
        _check_out(args.out)
        _check_model_args(args)
        config = _discovery_config(args)
        sized = dataset_kwargs(args, sized_by_sequences=config.sequences is not None)
        _load_tokenizer_model(args)  # a clear error for an unavailable model; find_circuits reuses the load
        records = find_circuits(args.model, args.task, config, device=args.device, **sized)
        out = args.out or results_dir(args.model) / f"circuit_{args.task}.json"
        write_circuits(out, records)
        for r in records:
            heads = " ".join(f"L{l}.H{h}" for l, h in r["heads"])
            print(
                f"threshold {r['threshold']:.2f}: score {r['score']:.3f}, {len(r['heads'])} heads, "
                f"{len(r['mlps'])} MLPs, {r['forward_passes']} forward passes, {r['seconds']:.1f} s\n  heads: {heads}"
            )
            if r.get("heldout"):
                h = r["heldout"]
                print(
                    f"  held-out (seed {h['seed']}, {h['n_prompts']} prompts): score {h['score']:.3f} "
                    f"[{h['ci95'][0]:.3f}, {h['ci95'][1]:.3f}]; in-sample 95 % interval "
                    f"[{r['score_ci95'][0]:.3f}, {r['score_ci95'][1]:.3f}]"
                )
        print(f"wrote {out}")
        return 0

    p.set_defaults(run=run)


# --------------------------------------------------------------------------- run / list (notebooks)


def _add_run(sub) -> None:
    from seqcirc_utils.workflow.runner import EXECUTED_DIR, NOTEBOOKS_DIR

    p = sub.add_parser("run", help="execute notebooks/NN_NAME.py with papermill into book/executed/NN_NAME.ipynb")
    p.add_argument("names", nargs="*", metavar="NAME", help="notebook name, with or without the NN_ prefix")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="notebook parameter; VALUE is parsed as JSON when possible (4, 0.5, true, [1,2]), else a string",
    )
    p.add_argument(
        "--all", action="store_true", help="run every notebook (appendices 90-99 after the chapters; see --workers)"
    )
    p.add_argument("--keep-going", action="store_true", help="with several notebooks: do not stop at a failure")
    p.add_argument("--out-dir", default=str(EXECUTED_DIR), help="where executed notebooks go (default book/executed)")
    p.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="hide papermill's progress bar")
    p.add_argument(
        "--force",
        action="store_true",
        help="execute even when the inputs are unchanged (default: reuse the cached executed notebook)",
    )
    p.add_argument(
        "--workers",
        type=_int_at_least(1, "--workers"),
        default=None,
        help="with several notebooks: run them in parallel on an embedded Dask LocalCluster of this many "
        "single-threaded workers, longest first (default: one per core; 1 = one after another, "
        "in NN order, no Dask)",
    )

    def run(args) -> int:
        _require_extras("book")
        from seqcirc_utils.workflow.cluster import default_workers
        from seqcirc_utils.workflow.runner import (
            REPO_ROOT,
            find_notebooks,
            parse_parameters,
            resolve_notebook,
            run_notebooks,
            summary_table,
        )

        if args.all == bool(args.names):
            raise ParameterError("give notebook NAME(s) or --all (not both)")
        notebooks = (
            find_notebooks(args.notebooks_dir)
            if args.all
            else [resolve_notebook(n, args.notebooks_dir) for n in args.names]
        )
        results = run_notebooks(
            notebooks,
            parse_parameters(args.parameter),
            out_dir=args.out_dir,
            cwd=REPO_ROOT,
            keep_going=args.keep_going,
            progress=not args.no_progress,
            force=args.force,
            workers=args.workers or default_workers(),
        )
        print(summary_table(results))
        return 0 if all(r.ok for r in results) and len(results) == len(notebooks) else 1

    p.set_defaults(run=run)


def _add_list(sub) -> None:
    from seqcirc_utils.workflow.runner import NOTEBOOKS_DIR

    p = sub.add_parser("list", help="list the notebooks and their parameters")
    p.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), help=argparse.SUPPRESS)

    def run(args) -> int:
        from seqcirc_utils.workflow.runner import find_notebooks, list_table

        print(list_table(find_notebooks(args.notebooks_dir)))
        return 0

    p.set_defaults(run=run)


def _add_grid(sub) -> None:
    from seqcirc_utils.workflow.runner import NOTEBOOKS_DIR

    p = sub.add_parser(
        "grid",
        help="run a notebook over a parameter grid on Dask (results/<model>/runs/<cell-id>/)",
        description="Cartesian product of the -p values (or of a --file grid.yaml), one papermill "
        "execution per cell on a Dask cluster; see seqcirc_utils/grid.py for the YAML format.",
    )
    p.add_argument("notebook", nargs="?", metavar="NOTEBOOK", help="notebook name (as for `seqcirc run`)")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUES"),
        help="a grid axis: comma-separated values, each parsed as for `seqcirc run -p` (commas inside "
        "[...] or quotes do not split)",
    )
    p.add_argument("--file", default=None, help="grid YAML file (keys: notebook, parameters, grid)")
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="an existing Dask scheduler, e.g. tcp://HOST:8786 (default: an embedded LocalCluster)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="LocalCluster worker processes (default: one per core; one thread each)",
    )
    p.add_argument(
        "--resources",
        default=None,
        metavar="NAME=N[,...]",
        help="worker resources each cell needs, e.g. GPU=1 (LocalCluster workers get the same)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch/BLAS threads per cell (default 1)")
    p.add_argument("--force", action="store_true", help="rerun cells whose inputs are unchanged")
    p.add_argument("--json", action="store_true", help="print the cells' outcomes as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), help=argparse.SUPPRESS)

    def run(args) -> int:
        _require_extras("book", "grid")
        from seqcirc_utils.workflow.grid import (
            GridSpec,
            cell_results_json,
            grid_table,
            load_grid_file,
            parse_axes,
            parse_resources,
            run_grid,
        )
        from seqcirc_utils.workflow.runner import resolve_notebook

        spec = load_grid_file(args.file) if args.file else GridSpec(None)
        spec.axes.update(parse_axes(args.parameter))
        for key in spec.axes:
            spec.fixed.pop(key, None)
        name = args.notebook or spec.notebook
        if not name:
            raise ParameterError("give a NOTEBOOK (or 'notebook:' in the --file)")
        if args.workers is not None and args.workers < 1 or args.threads < 1:
            raise ParameterError("--workers and --threads must be >= 1")
        notebook = resolve_notebook(name, args.notebooks_dir)
        results = run_grid(
            notebook,
            spec.cells(),
            scheduler=args.scheduler,
            n_workers=args.workers,
            resources=parse_resources(args.resources),
            force=args.force,
            progress=not args.no_progress,
            threads=args.threads,
        )
        print(json.dumps(cell_results_json(results), indent=1) if args.json else grid_table(results))
        failed = [r.cell_id for r in results if not r.ok]
        if failed:
            print(f"seqcirc grid: {len(failed)} of {len(results)} cells failed: {', '.join(failed)}", file=sys.stderr)
        return 1 if failed else 0

    p.set_defaults(run=run)


def _add_grid_summary(sub) -> None:
    p = sub.add_parser("grid-summary", help="one table and chart of the cells of `seqcirc grid` runs")
    p.add_argument("paths", nargs="+", metavar="RUNS", help="results/<model>/runs folder(s), or folders of cells")
    p.add_argument(
        "--out",
        default=None,
        help="output path without suffix (default <first RUNS>/grid_summary): .csv, .json, .vl.json, .html",
    )
    p.add_argument(
        "--format",
        choices=("json", "table"),
        default="table",
        help="what is printed: %(choices)s (default %(default)s)",
    )

    def run(args) -> int:
        from pathlib import Path

        from seqcirc_utils.workflow.grid import summary_chart, summary_frame, write_summary

        df = summary_frame(args.paths)
        written = write_summary(df, summary_chart(df), args.out or Path(args.paths[0]) / "grid_summary")
        _print_table(df, args.format)
        print(
            "wrote " + ", ".join(str(p) for p in written.values()),
            file=sys.stderr if args.format == "json" else sys.stdout,
        )
        return 0

    p.set_defaults(run=run)


# --------------------------------------------------------------------------- scores


def _add_scores(sub) -> None:
    p = sub.add_parser("scores", help="rank heads by OV score (copy/next/prev/add<k>) or induction offset")
    from seqcirc_utils.core.options import BASIC_KINDS, EMBEDDINGS, FAMILIES, OVER

    _model_args(p)
    p.add_argument(
        "--family",
        default="digits",
        choices=list(FAMILIES),
        metavar="FAMILY",
        help="member family: %(choices)s (default %(default)s)",
    )
    p.add_argument(
        "--kind",
        default="next",
        help=f"{', '.join(BASIC_KINDS)}, add<k>, sub<k> (OV scores) or induction (default %(default)s)",
    )
    p.add_argument(
        "--top", type=_int_at_least(1, "--top"), default=10, help="number of heads printed (default %(default)s)"
    )
    p.add_argument(
        "--k",
        type=_int_at_least(1, "--k"),
        default=1,
        help="OV: the target must be in the top-k output logits (default %(default)s)",
    )
    p.add_argument("--over", choices=OVER, default="family", help="OV: top-k over these tokens: %(choices)s")
    p.add_argument(
        "--embedding",
        choices=EMBEDDINGS,
        default="mlp0",
        help="OV: the input embedding of a member: %(choices)s (default %(default)s)",
    )
    p.add_argument(
        "--n",
        type=_int_at_least(1, "--n"),
        default=32,
        help="induction: number of irregularly spaced prompts (default %(default)s)",
    )
    p.add_argument(
        "--seed", type=_int_at_least(0, "--seed"), default=0, help="induction: prompt seed (default %(default)s)"
    )
    p.add_argument("--format", choices=("json", "table"), default="table", help="output format (default %(default)s)")

    def run(args) -> int:
        if args.kind != "induction":
            from seqcirc_utils.mechanisms.ov_scores import parse_kind

            try:
                parse_kind(args.kind)
            except ParameterError as err:
                raise ParameterError(f"{err} or induction") from None
        _check_model_args(args)
        model, _ = _load_tokenizer_model(args)
        if args.kind == "induction":
            from seqcirc_utils.mechanisms.induction import induction_table

            df = induction_table(model, args.family, n=args.n, seed=args.seed)
            cols = ["component", "member_k1", "token_k1", "same_type_k1", "member_k2", "token_k2"]
            df = df.sort_values("member_k1", ascending=False).head(args.top)[cols]
        else:
            from seqcirc_utils.mechanisms.ov_scores import ov_scores, parse_kind, top_heads

            parse_kind(args.kind)  # a clear error before any work
            kinds = list(dict.fromkeys([args.kind, "copy", "next"]))
            df = ov_scores(model, args.family, kinds, top_k=args.k, over=args.over, embedding=args.embedding)
            df = top_heads(df, args.kind, args.top)[["component", *kinds, f"n_{args.kind}"]]
        _print_table(df.reset_index(drop=True), args.format)
        return 0

    p.set_defaults(run=run)


# --------------------------------------------------------------------------- edges


def read_circuit_file(path: str, threshold: float) -> CircuitRecord:
    """The circuit record that ``seqcirc edges --circuit PATH --threshold T`` works on, checked.

    Read by the one circuit-file reader (:func:`seqcirc_utils.core.result_records.read_circuits`: a circuit
    file or one record; a :class:`~seqcirc_utils.core.errors.BadFileError` for a missing or malformed file,
    another kind of record, missing keys or malformed components); a file of several circuits must have
    one at ``threshold`` (one record: the edge threshold is free). The dataset is checked here too.
    """
    from seqcirc_utils.core.result_records import read_circuit, read_circuits
    from seqcirc_utils.tasks.datasets import TaskDataset

    where = f"--circuit {path}"
    file = Path(path).expanduser()
    records = read_circuits(file)
    one_record = json.loads(file.read_text()).get("kind") == "circuit"  # a bare record: the edge threshold is free
    record = records[0] if one_record else read_circuit(file, threshold)
    try:
        TaskDataset.from_json(record["dataset"])
    except (SeqcircError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise BadFileError(
            f"{where}: malformed 'dataset' ({type(err).__name__}: {err}); it must be the dict "
            "`seqcirc dataset --format json` prints"
        ) from None
    return record


def _add_edges(sub) -> None:
    p = sub.add_parser("edges", help="edge circuit inside a node circuit: path patching (exact) or EAP / EAP-IG")
    from seqcirc_utils.core.options import EdgeMethod

    p.add_argument("--circuit", required=True, help="circuit JSON written by `seqcirc circuit`")
    p.add_argument(
        "--threshold",
        type=_fraction,
        default=0.8,
        help="edge threshold in (0,1]; also picks the circuit of that threshold from a multi-threshold file",
    )
    p.add_argument(
        "--method",
        choices=EdgeMethod.values(),
        default=EdgeMethod.EXACT.value,
        help="exact: path patching of every edge; eap / eap-ig: attribution-ranked (default %(default)s)",
    )
    p.add_argument(
        "--ig-steps",
        type=_int_at_least(1, "--ig-steps"),
        default=5,
        help="integrated-gradient steps for eap-ig (default %(default)s)",
    )
    p.add_argument(
        "--device", default=None, help="torch device: cpu, cuda, cuda:N (default: cuda when present, else cpu)"
    )
    p.add_argument("--out", default=None, help="output JSON (default results/<model>/edges_<task>.json)")

    def run(args) -> int:
        from seqcirc_utils.core.results import results_dir, write_json_atomic
        from seqcirc_utils.discovery.edges.search import run_edges

        _check_out(args.out)
        record = read_circuit_file(args.circuit, args.threshold)
        _check_device(args.device)
        _check_model(record["model"])
        _load_tokenizer_model(argparse.Namespace(model=record["model"], device=args.device))  # run_edges reuses it
        out = run_edges(record, args.threshold, method=args.method, ig_steps=args.ig_steps, device=args.device)
        path = args.out or results_dir(out["model"]) / f"edges_{out['task']}.json"
        write_json_atomic(path, out)
        f = out["faithfulness"]
        print(
            f"{out['n_edges']} of {out['n_candidate_edges']} edges kept: edge-circuit score {out['score']:.3f} "
            f"(node circuit {f['node_circuit_score']:.3f}, node ablation of connected nodes "
            f"{f['node_ablation_score_connected']:.3f}), {out['forward_passes']} forward passes, {out['seconds']:.1f} s"
        )
        print(f"wrote {path}")
        return 0

    p.set_defaults(run=run)


COMMANDS: list[Callable] = [
    _add_dataset,
    _add_behaviour,
    _add_circuit,
    _add_run,
    _add_list,
    _add_grid,
    _add_grid_summary,
    _add_scores,
    _add_edges,
]


def package_version() -> str:
    """The installed distribution's version, else the package's ``__version__`` (a source checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("seqcirc")
    except PackageNotFoundError:
        from seqcirc_utils import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="seqcirc",
        description="Shared circuits for sequence continuation: build datasets, "
        "find and score circuits, run the compendium's notebooks.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {package_version()}", help="print the version and exit"
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="one of the commands below; `seqcirc COMMAND --help` for its options",
    )
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``seqcirc``; returns the exit status (0 ok, 1 a notebook failed, 2 a user error, 130 interrupted).

    A user error (a :class:`SeqcircError`: a bad parameter or file, an unavailable model, a task this
    model cannot run) is one line on stderr naming what is valid; any other exception is a bug and
    shows its traceback.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, argparse's own (one-line) errors
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"seqcirc {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - user errors become one line; anything else re-raises
        if not _is_user_error(err):
            raise
        print(f"seqcirc {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _is_user_error(err: BaseException) -> bool:
    """A :class:`SeqcircError` (bad input, an unavailable model); anything else is a bug."""
    return isinstance(err, SeqcircError)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
