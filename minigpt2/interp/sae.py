"""Sparse autoencoders in SAELens's format, spliced into the model at their hook point.

    sae = SAE.from_pretrained("./my-sae")                               # cfg.json + sae_weights.safetensors
    sae = SAE.from_pretrained("org/gpt2-saes", "blocks.8.hook_resid_pre")  # a folder of a hub repo
    features = sae.encode(acts)                                         # [..., d_sae]
    logits, features = run_with_sae(model, ids, sae)                    # the reconstruction in place of the activation
    reconstruction_loss(model, ids, sae)                                # what the reconstruction costs the next-token loss

Architectures: "standard" (ReLU), "jumprelu" (ReLU above a learned threshold per feature) and "topk"
(the k largest pre-activations, through a ReLU), with SAELens's input handling: b_dec subtracted from the
input (apply_b_dec_to_input), the run-time normalisations constant_norm_rescale and layer_norm, and hook_z
SAEs over the heads side by side. Configs from before SAELens 6 are read too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import hf_hub_download
from safetensors import SafetensorError, safe_open
from torch import nn

from ..checkpoint import CheckpointError, first_line
from ..hooks import check_names

ARCHITECTURES = ("standard", "jumprelu", "topk")
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"


class SAE(nn.Module):
    """W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in] (and threshold [d_sae] for
    jumprelu), as SAELens stores them; hook_name is the point it reads and writes."""

    def __init__(self, cfg: dict, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.cfg = cfg
        self.architecture = cfg["architecture"]
        self.hook_name, self.hook_head_index = cfg["hook_name"], cfg.get("hook_head_index")
        self.apply_b_dec_to_input = bool(cfg.get("apply_b_dec_to_input", True))
        self.normalize = cfg.get("normalize_activations") or "none"
        self.hook_z = cfg.get("reshape_activations") == "hook_z"
        self.k, self.rescale = cfg.get("k"), bool(cfg.get("rescale_acts_by_decoder_norm", False))
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor)

    @property
    def d_sae(self) -> int:
        return self.W_enc.size(1)

    @classmethod
    def from_pretrained(cls, path_or_repo, folder: str | None = None, *, revision: str | None = None) -> SAE:
        """An SAE from a local folder, or from a folder of a hub repo (SAELens releases keep one per hook)."""
        local = Path(path_or_repo).expanduser() / (folder or "")
        if local.is_dir():
            cfg_path, weights_path = local / CFG, local / WEIGHTS
        else:
            files = [f"{folder}/{name}" if folder else name for name in (CFG, WEIGHTS)]
            try:
                cfg_path, weights_path = (Path(hf_hub_download(str(path_or_repo), f, revision=revision)) for f in files)
            except Exception as e:  # noqa: BLE001 - the hub's errors, or no network
                raise CheckpointError(f"no SAE at {path_or_repo} {folder or ''}: {first_line(e)}") from None
        for path in (cfg_path, weights_path):
            if not path.is_file():
                raise CheckpointError(f"{path} not found: an SAE folder holds {CFG} and {WEIGHTS} (SAELens's format)")
        cfg = _read_cfg(cfg_path)
        try:
            with safe_open(weights_path, framework="pt") as f:
                tensors = {name: f.get_tensor(name).float() for name in f.keys()}
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{weights_path} is not a readable safetensors file: {first_line(e)}") from None
        return cls(cfg, _check_tensors(cfg, tensors, weights_path))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., d_sae] of activations x [..., d_in] (hook_z SAEs: [..., H, D])."""
        return self._encode(x)[0]

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """The reconstruction of feature activations (without the run-time normalisation, which needs the input)."""
        return self._decode(features, lambda out: out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)), with the input's normalisation undone, in x's shape and dtype."""
        features, undo = self._encode(x)
        return self._decode(features, undo).to(x.dtype)

    def _encode(self, x):
        shape = x.shape
        x = x.float().flatten(-2) if self.hook_z else x.float()
        if x.size(-1) != self.W_enc.size(0):  # an SAE of another model, or of another hook point
            raise ValueError(
                f"the SAE for {self.hook_name} has d_in {self.W_enc.size(0)}, but the activations it was given "
                f"are {x.size(-1)} wide (shape {list(shape)})"
            )
        if self.normalize == "constant_norm_rescale":
            c = math.sqrt(x.size(-1)) / x.norm(dim=-1, keepdim=True)
            x, undo = x * c, lambda out: out / c
        elif self.normalize == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            sigma = (x - mu).std(dim=-1, keepdim=True)
            x, undo = (x - mu) / (sigma + 1e-5), lambda out: out * sigma + mu  # as SAELens: no eps on the way out
        else:
            undo = lambda out: out  # noqa: E731
        if self.hook_z:
            inner = undo
            undo = lambda out: inner(out).view(shape)  # noqa: E731
        pre = (x - self.b_dec * self.apply_b_dec_to_input) @ self.W_enc + self.b_enc
        if self.architecture == "standard":
            return F.relu(pre), undo
        if self.architecture == "jumprelu":
            return F.relu(pre) * (pre > self.threshold), undo
        if self.rescale:
            pre = pre * self.W_dec.norm(dim=-1)
        values, indices = pre.topk(self.k, dim=-1, sorted=False)  # the k largest, then ReLU: some may be 0
        return torch.zeros_like(pre).scatter(-1, indices, F.relu(values)), undo

    def _decode(self, features, undo):
        if self.architecture == "topk" and self.rescale:
            features = features * (1 / self.W_dec.norm(dim=-1))
        return undo(features @ self.W_dec + self.b_dec)

    def hooks(self, *, use_error_term: bool = False, keep: dict | None = None) -> dict:
        """{hook_name: fn} that puts the reconstruction in place of the activation (for model(ids, hooks=...)
        or generate(..., hooks=...)). use_error_term: add back what the SAE misses (x - reconstruction, with
        no gradient, as SAELens does), so the activation, and so the logits, are unchanged. keep: a dict that
        receives "features", the feature activations of the last call."""

        def splice(x):
            part = x[..., self.hook_head_index, :] if self.hook_head_index is not None else x
            features, undo = self._encode(part)
            out = self._decode(features, undo).to(x.dtype)
            if keep is not None:
                keep["features"] = features
            if use_error_term:
                out = out + (part - out).detach()
            if self.hook_head_index is None:
                return out
            x = x.clone()
            x[..., self.hook_head_index, :] = out
            return x

        return {self.hook_name: splice}


def run_with_sae(model, input_ids, sae: SAE, *, use_error_term: bool = False, **forward_kwargs):
    """Logits with the SAE spliced in, and its feature activations [B, T, d_sae]."""
    check_names(model.hook_names(), [sae.hook_name])
    keep: dict = {}
    with torch.no_grad():
        logits = model(input_ids, hooks=sae.hooks(use_error_term=use_error_term, keep=keep), **forward_kwargs)
    return logits, keep["features"]


def top_features(features: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most active features at each position: (values, feature ids), each [..., k]."""
    return features.topk(min(k, features.size(-1)), dim=-1)


@torch.no_grad()
def reconstruction_loss(model, input_ids: torch.Tensor, sae: SAE) -> dict:
    """What the reconstruction costs, as SAELens's evals measure it: the next-token loss (mean cross-entropy)
    of the clean run, with the SAE spliced in, and with the activation zeroed; the loss delta, the share of
    the zero-ablation's loss the SAE recovers, and the KL divergence of each from the clean distribution."""
    runs = {
        "without_sae": None,
        "with_sae": sae.hooks(),
        "with_ablation": {sae.hook_name: _zero(sae.hook_head_index)},
    }
    log_probs = {name: model(input_ids, hooks=hooks).float().log_softmax(dim=-1) for name, hooks in runs.items()}
    targets = input_ids[:, 1:, None]
    ce = {name: -lp[:, :-1].gather(-1, targets).mean().item() for name, lp in log_probs.items()}
    clean = log_probs["without_sae"]
    kl = {
        name: (clean.exp() * (clean - log_probs[name])).sum(dim=-1).mean().item()
        for name in ("with_sae", "with_ablation")
    }
    return {
        **{f"ce_loss_{name}": value for name, value in ce.items()},
        "ce_loss_delta": ce["with_sae"] - ce["without_sae"],
        "ce_loss_score": (ce["with_ablation"] - ce["with_sae"]) / (ce["with_ablation"] - ce["without_sae"]),
        **{f"kl_div_{name}": value for name, value in kl.items()},
        "kl_div_score": (kl["with_ablation"] - kl["with_sae"]) / kl["with_ablation"],
    }


def _zero(head_index: int | None):
    def ablate(x):
        x = x.clone()
        if head_index is None:
            return x.zero_()
        x[..., head_index, :] = 0
        return x

    return ablate


def _read_cfg(path: Path) -> dict:
    """cfg.json as SAELens 6 writes it, or an older flat one brought to the same fields."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable SAE config: {first_line(e)}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} is not an SAE config (a JSON object)")
    metadata = cfg.get("metadata") or {}
    hook_name = metadata.get("hook_name", cfg.get("hook_name", cfg.get("hook_point")))
    head = metadata.get("hook_head_index", cfg.get("hook_head_index", cfg.get("hook_point_head_index")))
    architecture = cfg.get("architecture", "standard")
    activation = cfg.get("activation_fn", cfg.get("activation_fn_str"))
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    if activation == "topk":
        architecture = "topk"
    normalize = cfg.get("normalize_activations", "none")
    if isinstance(normalize, bool):
        normalize = "expected_average_only_in" if normalize else "none"
    reshape = cfg.get("reshape_activations") or ("hook_z" if hook_name and hook_name.endswith("hook_z") else "none")
    problems = [
        (not isinstance(hook_name, str), "no hook_name (the point it reads)"),
        (
            architecture not in ARCHITECTURES,
            f"architecture {architecture!r} (minigpt2 reads {', '.join(ARCHITECTURES)})",
        ),
        (architecture == "topk" and not isinstance(k, int), "a topk architecture without a whole number k"),
        (normalize not in NORMALIZATIONS, f"normalize_activations {normalize!r}, which minigpt2 does not apply"),
    ]
    for bad, what in problems:
        if bad:
            raise CheckpointError(f"{path} has {what}")
    return {
        **cfg,
        "architecture": architecture,
        "hook_name": hook_name,
        "hook_head_index": head,
        "k": k,
        "normalize_activations": normalize,
        "reshape_activations": reshape,
    }


def _check_tensors(cfg: dict, tensors: dict, path: Path) -> dict[str, torch.Tensor]:
    if "log_threshold" in tensors and "threshold" not in tensors:  # JumpReLU as older SAELens trained it
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    wanted = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["threshold"] if cfg["architecture"] == "jumprelu" else [])
    missing = [name for name in wanted if name not in tensors]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)} for a {cfg['architecture']} SAE")
    d_in, d_sae = tensors["W_enc"].shape
    shapes = {"b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,), "threshold": (d_sae,)}
    for name, shape in shapes.items():
        if name in wanted and tuple(tensors[name].shape) != shape:
            raise CheckpointError(
                f"{path}: {name} is {list(tensors[name].shape)}, W_enc's shape asks for {list(shape)}"
            )
    return {name: tensors[name] for name in wanted}
