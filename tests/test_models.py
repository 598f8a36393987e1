import time

import pytest
import torch

from seqcirc_utils.core.errors import ModelUnavailableError, ParameterError
from seqcirc_utils.models.loading import EMBEDDED_MODEL, load_model


def test_tiny_model_shapes_from_config(tiny_gpt2, tiny_llama):
    _, g = tiny_gpt2
    _, l = tiny_llama
    assert (g.n_layers, g.n_heads, g.n_kv_heads) == (2, 4, 4)
    assert (l.n_layers, l.n_heads, l.n_kv_heads) == (2, 4, 2) and l.kv_head_of(3) == 1
    assert g.component_names[:5] == ["L0.H0", "L0.H1", "L0.H2", "L0.H3", "MLP0"]


def test_gpt2_small_random_has_gpt2_shape_and_year_split():
    model, info = load_model("gpt2-small-random", device="cpu")
    cfg_shape = (model.original_model.config.n_layer, model.original_model.config.n_head)
    assert (info.n_layers, info.n_heads) == cfg_shape
    pieces = [model.tokenizer.decode([t]) for t in model.tokenizer(" 1732", add_special_tokens=False)["input_ids"]]
    assert pieces == [" 17", "32"]


def test_embedded_model_matches_hf(smollm):
    model, info = smollm
    cfg = model.original_model.config
    assert (info.n_layers, info.n_heads, info.n_kv_heads) == (
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
    )
    tokens = torch.tensor([model.tokenizer("1 2 3 4 ", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(tokens), model.original_model(tokens).logits, atol=1e-4)


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_hub_model_offline_error_is_quick_and_clear(monkeypatch, tmp_path, env):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", env.get("HF_ENDPOINT", c.ENDPOINT))
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        load_model("gpt2-small", device="cpu")
    assert time.perf_counter() - start < 10
    assert EMBEDDED_MODEL in str(err.value) and "local copy" in str(err.value)


def test_bad_model_specs():
    with pytest.raises(ModelUnavailableError, match="no model at path"):
        load_model("./does/not/exist", device="cpu")
    with pytest.raises(ParameterError, match="valid"):
        load_model("", device="cpu")


def test_cli_unknown_model_is_one_clear_line(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from seqcirc_utils.workflow.cli import main

    assert main(["dataset", "--model", "no-such-model-xyz", "--n", "2"]) == 2
    assert "smollm2-135m" in capsys.readouterr().err


def test_model_device_is_where_the_weights_are(tiny_gpt2, device):
    """The one device helper: every module moves inputs to ``model_device(model)``."""
    from seqcirc_utils.models.loading import model_device

    model, _ = tiny_gpt2
    assert model_device(model) == model.W_E.device
    assert model_device(model).type == torch.device(device).type


def test_load_tokenizer_matches_model_tokenizer(tiny_llama):
    from seqcirc_utils.models.loading import load_tokenizer

    model, _ = tiny_llama
    tok = load_tokenizer("tiny-llama")
    text = "Van done in 1. Hat done in 2. <|endoftext|>"
    assert tok(text)["input_ids"] == model.tokenizer(text, add_special_tokens=False)["input_ids"]
    with pytest.raises(ModelUnavailableError, match="no model at path"):
        load_tokenizer("./does/not/exist")


def test_embedded_tokenizer_alone_matches_model(smollm):
    from seqcirc_utils.models.loading import load_tokenizer

    model, _ = smollm
    tok = load_tokenizer(EMBEDDED_MODEL)
    assert (tok.bos_token, tok.eos_token, len(tok)) == (
        model.tokenizer.bos_token,
        model.tokenizer.eos_token,
        len(model.tokenizer),
    )
    text = "The war lasted from the year 1732 to the year 17"
    assert (
        tok(text, add_special_tokens=False)["input_ids"] == model.tokenizer(text, add_special_tokens=False)["input_ids"]
    )


def test_model_fixtures_use_the_test_device(tiny_gpt2, device):
    """conftest: SEQCIRC_TEST_DEVICE (default cpu) places the model fixtures."""
    assert next(tiny_gpt2[0].parameters()).device.type == torch.device(device).type
