"""The options the algorithms branch on are StrEnums in the torch-free core: a member is its string,
JSON writes the plain string, a bad value is a one-line ParameterError naming the valid ones, and the
command line offers exactly their values."""

import json
import subprocess
import sys

import pytest

from seqcirc_utils.core.config import SweepConfig
from seqcirc_utils.core.errors import ParameterError
from seqcirc_utils.core.options import (
    EDGE_METHODS,
    HEAD_INPUTS,
    METHODS,
    METRICS,
    SWEEP_ORDERS,
    AblationMode,
    EdgeInput,
    EdgeMethod,
    Metric,
    PruneMethod,
    SweepOrder,
)

OPTIONS = [Metric, AblationMode, PruneMethod, SweepOrder, EdgeMethod, EdgeInput]


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.__name__)
def test_members_are_their_strings_and_json_writes_them_plain(option):
    for member in option:
        assert member == member.value and isinstance(member, str) and hash(member) == hash(member.value)
        assert f"{member}" == member.value
        assert json.loads(json.dumps({"x": member})) == {"x": member.value}
        assert option.parse(member.value) is member and option.parse(member) is member
    assert option.values() == tuple(m.value for m in option)
    assert all(type(v) is str for v in option.values())


@pytest.mark.parametrize(
    "option,label",
    [
        (Metric, "metric"),
        (AblationMode, "ablation mode"),
        (PruneMethod, "pruning method"),
        (SweepOrder, "sweep order"),
        (EdgeMethod, "edge pruning method"),
        (EdgeInput, "edge input"),
    ],
)
def test_a_bad_value_names_the_valid_ones(option, label):
    with pytest.raises(ParameterError) as err:
        option.parse("nosuch")
    message = str(err.value)
    assert message == f"unknown {label} 'nosuch'; valid: {', '.join(option.values())}"
    assert "\n" not in message


def test_the_value_tuples_are_the_enums():
    assert METRICS == ("logit_diff", "kl", "prob_diff") == Metric.values()
    assert METHODS == ("sweep", "fast") and SWEEP_ORDERS == ("paper", "descending")
    assert EDGE_METHODS == ("exact", "eap", "eap-ig") and HEAD_INPUTS == ("q", "k", "v")
    assert AblationMode.ZERO.needs_corrupted_run is False and AblationMode.MEAN.needs_corrupted_run


def test_cli_choices_come_from_the_options():
    from seqcirc_utils.workflow.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    circuit = {a.dest: a for a in sub["circuit"]._actions}
    assert tuple(circuit["metric"].choices) == Metric.values()
    assert tuple(circuit["method"].choices) == PruneMethod.values()
    assert tuple(circuit["sweep__order"].choices) == SweepOrder.values()
    assert tuple(circuit["ablation"].choices) == AblationMode.values()
    edges = {a.dest: a for a in sub["edges"]._actions}
    assert tuple(edges["method"].choices) == EdgeMethod.values()


def test_options_import_without_torch():
    code = "import sys, seqcirc_utils.core.options; print('torch' in sys.modules, 'pandas' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"], proc.stdout + proc.stderr


def test_the_algorithms_parse_their_options(tiny_llama):
    """An Ablator holds a Metric; prune and edge search refuse unknown methods with the valid ones."""
    from seqcirc_utils.discovery.edges.search import prune_edges
    from seqcirc_utils.discovery.pruning import prune
    from seqcirc_utils.scoring.ablation import Ablator
    from seqcirc_utils.tasks.datasets import make_dataset

    model, info = tiny_llama
    ds = make_dataset(model.tokenizer, "digits", n=4, seed=0)
    ab = Ablator(model, info, ds, "mean", "kl")
    assert ab.metric is Metric.KL and ab.metric == "kl"
    with pytest.raises(ParameterError, match="unknown metric 'accuracy'; valid: logit_diff, kl, prob_diff"):
        Ablator(model, info, ds, "mean", "accuracy")
    with pytest.raises(ParameterError, match="unknown pruning method 'slow'; valid: sweep, fast"):
        prune(ab, [0.8], method="slow")
    with pytest.raises(ParameterError, match="unknown sweep order 'random'; valid: paper, descending"):
        prune(ab, [0.8], method="sweep", sweep=SweepConfig(order="random"))
    with pytest.raises(ParameterError, match="unknown edge pruning method 'magic'; valid: exact, eap, eap-ig"):
        prune_edges(ab, info.components, 0.8, method="magic")


# --------------------------------------------------------------------------- typed discovery configuration


def test_discovery_config_checks_every_value():
    from seqcirc_utils.core.config import DiscoveryConfig, FastConfig

    c = DiscoveryConfig([0.7, 0.9, 0.9], method="fast", ablation="zero", metric="kl", split_shares=[2, 1])
    assert c.thresholds == (0.9, 0.7) and c.method is PruneMethod.FAST and c.metric is Metric.KL
    assert c.split_shares == (2, 1) and c.method_options() == {"fast": FastConfig()}
    assert DiscoveryConfig().method_options() == {"sweep": DiscoveryConfig().sweep}
    bad = [
        (dict(thresholds=[1.5]), r"\(0, 1\]"),
        (dict(thresholds=[]), "at least one threshold"),
        (dict(method="slow"), "valid: sweep, fast"),
        (dict(ablation="noise"), "valid: mean, zero, resample"),
        (dict(metric="accuracy"), "valid: logit_diff, kl, prob_diff"),
        (dict(split="overlap"), "valid: disjoint, resampled"),
        (dict(split_shares=(2, 0)), "two positive integers"),
        (dict(sequences=(48,)), r"sequences must be two positive integers \(discovery, held-out\), got \(48,\)"),
        (dict(sequences=48), r"sequences must be two positive integers \(discovery, held-out\), got 48"),
        (dict(min_prompts=0), "min_prompts must be an integer >= 1"),
        (dict(heldout="yes"), "heldout must be true or false"),
        (dict(sweep={"order": "random"}), "valid: paper, descending"),
        (dict(fast={"ig_steps": 0}), "fast.ig_steps must be an integer >= 1"),
    ]
    for values, message in bad:
        with pytest.raises(ParameterError, match=message):
            DiscoveryConfig(**values)


def test_with_options_keeps_unnamed_nested_fields_and_refuses_unknown_ones():
    from seqcirc_utils.core.config import DiscoveryConfig

    c = DiscoveryConfig(method="fast", fast={"rounds": 3}).with_options(fast={"minimal": False}, heldout=False)
    assert (c.fast.rounds, c.fast.minimal, c.heldout) == (3, False, False)
    with pytest.raises(ParameterError, match="unknown discovery option"):
        c.with_options(orde="paper")
    assert DiscoveryConfig().to_json()["sweep"] == {"order": "paper"}  # plain JSON values


def test_the_command_line_exposes_every_discovery_option():
    """Every DiscoveryConfig field, nested ones included, has its flag on ``seqcirc circuit``, and the flags given
    (only those) reach the config."""
    from seqcirc_utils.core.config import DiscoveryConfig, config_fields, flag_of
    from seqcirc_utils.workflow.cli import _discovery_config, build_parser

    parser = build_parser()
    circuit = next(a for a in parser._actions if a.dest == "command").choices["circuit"]
    flags = {s for action in circuit._actions for s in action.option_strings}
    names = [dotted for dotted, _ in config_fields()]
    assert {"sweep.order", "fast.minimal", "split_shares", "bootstrap_seed"} <= set(names)
    assert not [flag_of(n) for n in names if flag_of(n) not in flags]
    args = parser.parse_args(
        ["circuit", "--method", "fast", "--no-fast-minimal", "--fast-rounds", "3", "--split-shares", "2,1"]
        + ["--thresholds", "0.9,0.8", "--no-filter", "--n-resamples", "50"]
    )
    c = _discovery_config(args)
    assert c == DiscoveryConfig(
        (0.9, 0.8),
        method="fast",
        fast={"minimal": False, "rounds": 3},
        split_shares=(2, 1),
        filter_correct=False,
        n_resamples=50,
    )
    assert _discovery_config(parser.parse_args(["circuit"])) == DiscoveryConfig()
