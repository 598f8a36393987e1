"""Edge circuits: iterative edge pruning, the node set an edge circuit really uses, its three scores
and the ``edge_circuit`` record.

The node set is checked against reachability computed here by brute force (boolean transitive
closure over every path length), and against the mechanism itself: a node the edge circuit does not
connect to the logits must have no effect on them (removing its remaining edges changes nothing).
"""

import json
import math

import pytest
import torch
from conftest import all_but_one_head

from seqcirc_utils.core.errors import BadFileError, ParameterError
from seqcirc_utils.core.types import head, mlp
from seqcirc_utils.discovery.edges.patching import EdgePatcher, circuit_edges, edge, path_patch_edge
from seqcirc_utils.discovery.edges.search import (
    EdgeCircuit,
    connected_nodes,
    dangling_components,
    edge_circuit,
    faithfulness,
    prune_edges,
)
from seqcirc_utils.scoring.ablation import Ablator
from seqcirc_utils.tasks.datasets import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def _circuit(info):
    return all_but_one_head(info)


def _brute_force_connected(components, kept) -> set:
    """Nodes on a kept path input -> node -> ... -> logits, by boolean transitive closure.

    Nodes are names; the input sends to every component (the embedding is never pruned), an edge
    into the logits has ``receiver is None``. ``reach[i][j]`` after ``n`` rounds: some path of at
    most ``n`` edges leads from ``i`` to ``j``.
    """
    names = sorted(str(c) for c in components) + ["input", "logits"]
    idx = {n: i for i, n in enumerate(names)}
    n = len(names)
    adj = [[False] * n for _ in range(n)]
    for c in components:
        adj[idx["input"]][idx[str(c)]] = True
    for e in kept:
        adj[idx[str(e.sender)]][idx["logits" if e.receiver is None else str(e.receiver)]] = True
    reach = [row[:] for row in adj]
    for _ in range(n):
        reach = [[reach[i][j] or any(reach[i][m] and adj[m][j] for m in range(n)) for j in range(n)] for i in range(n)]
    return {c for c in components if reach[idx["input"]][idx[str(c)]] and reach[idx[str(c)]][idx["logits"]]}


# --------------------------------------------------------------------------- the node set


HAND_KEPT = [
    ("L0.H0", "L1.H2", "q"),
    ("L1.H2", "logits", None),  # a path to the logits
    ("L0.H2", "MLP1", "mlp"),
    ("MLP1", "logits", None),  # another
    ("L0.H3", "L1.H0", "k"),
    ("L1.H0", "MLP1", "mlp"),  # joins the second one
    ("MLP0", "L1.H3", "v"),  # MLP0 sends, but only to L1.H3,
    ("L0.H0", "L1.H3", "k"),  # ... which sends nowhere: both dangle
]


@pytest.mark.parametrize("which", ["gpt2_ab", "llama_ab"])
def test_edge_circuit_node_set_excludes_nodes_with_no_path_to_the_logits(request, which):
    ab = request.getfixturevalue(which)
    comps = _circuit(ab.info)
    kept = [edge(*s) for s in HAND_KEPT]
    expected = _brute_force_connected(comps, kept)
    assert expected == {head(0, 0), head(1, 2), head(0, 2), mlp(1), head(0, 3), head(1, 0)}  # the hand analysis
    assert connected_nodes(comps, kept) == expected
    dangling = set(comps) - expected
    assert {mlp(0), head(1, 3), head(1, 1)} <= dangling
    assert mlp(0) in {e.sender for e in kept}  # it has a kept outgoing edge, yet no path to the logits
    assert dangling_components(comps, kept) == sorted(dangling, key=lambda c: (c.layer, c.kind != "head", c.index))

    rec = edge_circuit(ab, comps, kept, threshold=0.5)
    assert rec.connected == expected and set(rec.dangling) == dangling
    assert {(d["sender"], d["receiver"]) for d in rec.connected_edges} == {
        (s, r) for s, r, _ in HAND_KEPT if s not in {"MLP0"} and r != "L1.H3"
    }
    patcher = EdgePatcher(ab, comps)
    candidates = circuit_edges(ab.info, comps)
    removed = [e for e in candidates if e not in set(kept)]
    # (a) the edge circuit's own score: every edge outside it removed
    assert rec.score == pytest.approx(patcher.score(removed), abs=1e-6)
    # the dangling nodes really do nothing in it: removing their kept edges too changes no logit
    touching = [e for e in kept if e.sender in dangling or e.receiver in dangling]
    assert touching
    torch.testing.assert_close(patcher.logits(removed + touching), patcher.logits(removed), rtol=1e-4, atol=1e-5)
    # (b) the connected nodes under node ablation = the node circuit with every dangling node's edges removed
    assert rec.connected_score == pytest.approx(ab.score(expected).score, abs=1e-6)
    out_of_dangling = [e for e in candidates if e.sender in dangling]
    assert rec.connected_score == pytest.approx(patcher.score(out_of_dangling), abs=1e-5)
    # (c) the node circuit
    assert rec.node_score == pytest.approx(ab.score(comps).score, abs=1e-6)
    # three different numbers on this hand-made circuit
    a, b, c = rec.score, rec.connected_score, rec.node_score
    assert min(abs(a - b), abs(b - c), abs(a - c)) > 1e-4, (a, b, c)
    f = faithfulness(ab, rec)
    assert (f["edge_circuit_score"], f["node_ablation_score_connected"], f["node_circuit_score"]) == (a, b, c)
    assert f["n_connected"] == len(expected) and set(f["dangling"]) == {str(x) for x in dangling}


def test_edge_circuit_rejects_edges_outside_the_node_circuit(gpt2_ab):
    comps = _circuit(gpt2_ab.info) - {head(1, 0)}
    with pytest.raises(ParameterError, match="not edges of the node circuit"):
        edge_circuit(gpt2_ab, comps, [edge("L0.H0", "L1.H0", "q")], threshold=0.8)


def test_connected_nodes_ignores_edges_of_other_components():
    comps = {head(0, 0), mlp(1)}
    kept = [edge("L0.H0", "L1.H2", "q"), edge("L1.H2", "logits"), edge("MLP1", "logits")]
    assert connected_nodes(comps, kept) == {mlp(1)}  # L1.H2 is not in the node circuit
    assert connected_nodes(comps, []) == frozenset()


# --------------------------------------------------------------------------- the record


def test_edge_circuit_record_round_trips(gpt2_ab):
    comps = _circuit(gpt2_ab.info)
    kept = [edge(*s) for s in HAND_KEPT]
    tried = {kept[0]: 0.25}
    rec = edge_circuit(gpt2_ab, comps, kept, threshold=0.5, method="exact", tried=tried, node_threshold=0.8)
    data = rec.to_json()
    assert data["kind"] == "edge_circuit" and data["schema_version"] == 2
    assert data["model"] == "tiny-gpt2" and data["task"] == "digits" and data["ablation"] == "mean"
    assert data["scores"] == {
        "edge_circuit": rec.score,
        "connected_nodes": rec.connected_score,
        "node_circuit": rec.node_score,
    }
    scores = {(d["sender"], d["receiver"], d["input"]): d["score"] for d in data["edges"]}
    assert scores.pop(("L0.H0", "L1.H2", "q")) == 0.25 and set(scores.values()) == {None}
    assert data["n_edges"] == len(kept)
    assert data["connected"] == [
        str(c) for c in sorted(rec.connected, key=lambda c: (c.layer, c.kind != "head", c.index))
    ]
    text = json.dumps(data)
    back = EdgeCircuit.from_json(json.loads(text))
    assert back == rec
    assert back.to_json() == data
    assert json.dumps(back.to_json()) == text
    # the appendix finds it by kind, wherever it sits in a file, and draws it
    from seqcirc_utils.core.results import records_of_kind
    from seqcirc_utils.report import plots

    assert records_of_kind({"a": [data, {"kind": "circuit"}], "b": {"c": data}}, "edge_circuit") == [data, data]
    assert records_of_kind(data, "edge_circuit") == [data] and records_of_kind({"edges": []}, "edge_circuit") == []
    chart = plots.circuit_diagram(gpt2_ab.info.n_layers, gpt2_ab.info.n_heads, back.connected, edges=back.edge_pairs())
    rules = [
        layer for layer in chart.to_dict()["layer"] if layer["mark"] == "rule" or layer["mark"].get("type") == "rule"
    ]
    assert len(rules) == 1
    drawn = chart.to_dict()["datasets"]
    assert any(len(v) == len(back.connected_edges) and {"sender", "receiver"} <= set(v[0]) for v in drawn.values())
    for bad, match in [
        ({**data, "kind": "circuit"}, "expected a record of kind 'edge_circuit'"),
        ({**data, "schema_version": 1}, "schema_version"),
        ({k: v for k, v in data.items() if k != "connected"}, r"lacks keys \['connected'\]"),
    ]:
        with pytest.raises(BadFileError, match=match):
            EdgeCircuit.from_json(bad)


# --------------------------------------------------------------------------- pruning


def test_bad_pruning_arguments(gpt2_ab):
    comps = _circuit(gpt2_ab.info)
    with pytest.raises(ParameterError, match="unknown edge pruning method"):
        prune_edges(gpt2_ab, comps, 0.8, method="acdc")
    with pytest.raises(ParameterError, match="outside"):
        prune_edges(gpt2_ab, comps, 1.5)


@pytest.mark.parametrize("method", ["exact", "eap"])
def test_prune_edges_keeps_threshold(llama_ab, method):
    ab = llama_ab
    comps = _circuit(ab.info) - {head(0, 0), head(1, 2)}
    node = ab.score(comps).score
    threshold = min(0.9, math.floor((node - 0.05) * 100) / 100)  # below the node circuit's score
    assert threshold > 0.5
    res = prune_edges(ab, comps, threshold, method=method, progress=False, node_threshold=0.95)
    assert res.node_score == pytest.approx(node, abs=1e-6)
    assert res.score >= threshold
    assert 0 < len(res.edges) < res.n_candidate_edges
    assert len(res.edges) + len(res.removed) == res.n_candidate_edges
    assert set(res.edges[0]) == {"sender", "receiver", "input", "score"}
    assert res.method == method and res.node_threshold == 0.95 and res.task == "digits"
    # the reported score is the edge circuit's: re-evaluate it from the kept edges
    kept = res.kept_edges
    removed = [e for e in circuit_edges(ab.info, comps) if e not in set(kept)]
    patcher = EdgePatcher(ab, comps)
    assert patcher.score(removed) == pytest.approx(res.score, abs=1e-6)
    if method == "exact":  # every kept edge was necessary when tried
        assert all(d["score"] < threshold for d in res.edges)
        again = prune_edges(ab, comps, threshold, method=method, progress=False)
        assert again.edges == res.edges  # deterministic
    # the node set: brute-force reachability over the kept edges; the rest really is inert
    assert res.connected == _brute_force_connected(comps, kept)
    dangling = set(comps) - res.connected
    assert set(res.dangling) == dangling
    touching = [e for e in kept if e.sender in dangling or e.receiver in dangling]
    assert patcher.score(removed + touching) == pytest.approx(res.score, abs=1e-5)
    # the connected nodes re-scored by node ablation (not the node circuit's score unless nothing dangles)
    assert res.connected_score == pytest.approx(ab.score(res.connected).score, abs=1e-6)
    if dangling:
        assert res.connected_score != pytest.approx(res.node_score, abs=1e-6)
    f = faithfulness(ab, res)
    assert f["edge_circuit_score"] == res.score and f["node_ablation_score_connected"] == res.connected_score
    assert set(f["dangling"]) == {str(c) for c in res.dangling}
    assert EdgeCircuit.from_json(json.loads(json.dumps(res.to_json()))) == res


def test_cli_edges(tiny_gpt2, gpt2_ab, tmp_path):
    from record_fixtures import circuit

    from seqcirc_utils.core.result_records import CircuitFile
    from seqcirc_utils.core.results import write_json_atomic
    from seqcirc_utils.workflow.cli import main

    _, info = tiny_gpt2
    heads = [[c.layer, c.index] for c in info.heads if c != head(0, 1)]

    def rec(t):
        return circuit(
            model="tiny-gpt2",
            task="digits",
            template="pure",
            direction="increasing",  # noqa: E731
            seed=0,
            threshold=t,
            heads=heads,
            mlps=[0, 1],
            dataset=gpt2_ab.dataset.to_json(),
        )

    path = write_json_atomic(tmp_path / "circuit.json", CircuitFile(circuits=[rec(0.9), rec(0.8)]))
    out = tmp_path / "edges.json"
    assert (
        main(
            [
                "edges",
                "--circuit",
                str(path),
                "--threshold",
                "0.8",
                "--method",
                "eap",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert {
        "edges",
        "model",
        "task",
        "threshold",
        "score",
        "faithfulness",
        "forward_passes",
        "seconds",
        "node_threshold",
        "n_edges",
        "n_candidate_edges",
        "dangling",
        "method",
    } <= set(data)  # the older keys
    assert data["model"] == "tiny-gpt2" and data["threshold"] == 0.8 and data["score"] >= 0.8
    record = EdgeCircuit.from_json(data)
    assert record.node_threshold == 0.8 and record.method == "eap"
    assert record.connected == _brute_force_connected(record.components, record.kept_edges)
    assert not list(tmp_path.glob("*.tmp"))
    assert main(["edges", "--circuit", str(path), "--threshold", "0.7", "--out", str(out)]) == 2  # no such circuit


# --------------------------------------------------------------------------- embedded model


@pytest.mark.embedded
def test_embedded_model_edge_circuit(smollm):
    """A small digits circuit of SmolLM2 (all MLPs + the heads attribution ranks highest): EAP-IG edge
    pruning keeps the exact edge-circuit score >= the threshold, and its three scores are reported."""
    from seqcirc_utils.core.types import parse_component
    from seqcirc_utils.scoring.attribution import attribution_scores

    model, info = smollm
    ds = make_dataset(model.tokenizer, "digits", template="pure", n=8, seed=0, model_name="smollm2-135m")
    ab = Ablator(model, info, ds)
    attr = attribution_scores(ab, info.heads)
    top_heads = [parse_component(n) for n in attr.sort_values().index[: info.n_heads]]
    comps = set(info.mlps) | set(top_heads)
    node = ab.score(comps).score
    threshold = round(min(0.8, node - 0.1), 2)
    assert threshold > 0.3  # the node circuit carries most of the behaviour
    res = prune_edges(ab, comps, threshold, method="eap-ig", ig_steps=2, progress=False)
    assert res.score >= threshold
    assert len(res.edges) < res.n_candidate_edges
    assert res.connected == _brute_force_connected(comps, res.kept_edges)
    assert res.connected_score == pytest.approx(ab.score(res.connected).score, abs=1e-5)
    assert -1 < res.connected_score <= 1.5
    # exact path patching of the edge attribution ranks most important: it matters when removed alone
    worst = min(res.edges, key=lambda d: d["score"])
    assert path_patch_edge(ab, comps, worst["sender"], worst["receiver"], worst["input"]) < node
