"""A GPT-2 checkpoint as a GGUF file, for llama.cpp: `minigpt2 export MODEL --gguf out.gguf --type q8_0`.

Needs the `gguf` package (pip install "minigpt2[export]"), whose writer and quantizers make the file.
Tensors take llama.cpp's GPT-2 names (token_embd, position_embd, blk.{i}.attn_qkv, ..., output_norm)
and its layout, [out, in] as stored here; the tokenizer goes in as llama.cpp's "gpt2" BPE (tokens,
merges, special ids). The 2-D weights take the chosen type (f32, f16, bf16 or q8_0: blocks of 32
int8 values with an fp16 scale each); LayerNorms, biases and the position embedding stay f32, as
llama.cpp's own converter leaves them.
"""

from __future__ import annotations

from .checkpoint import Checkpoint
from .loading import LoadOptions, load_model, resolve_for_loading, tokenizer_checkpoint
from .model import GPT2
from .tokenizer import gpt2_byte_level
from .tokenizer.files import read_tokenizer_files
from .writing import check_writable, write_atomically

TYPES = ("f32", "f16", "bf16", "q8_0")
NORMAL, CONTROL, UNUSED = 1, 3, 5  # llama.cpp's token types
NATIVE_ACTIVATION = "gelu_new"  # llama.cpp's GPT-2 graph computes tanh-approximated GELU, as GPT-2 does


def export_gguf(
    model: GPT2, path, tokens: list[str], merges: list[str], *, file_type="f32", special=(), name="", on_tensor=None
):
    """Write model as GGUF. tokens: the vocabulary in id order (byte-level strings, as vocab.json);
    merges: "a b" lines, as merges.txt; special: the ids of control tokens (GPT-2: <|endoftext|>);
    on_tensor(done, total): after each tensor is converted, for progress."""
    gguf = _gguf()
    config = model.config
    _check_exportable(config, file_type)
    if len(tokens) > config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokens)} tokens, more than the model's {config.vocab_size} rows")
    # Rows past the tokenizer (a vocabulary padded to a multiple of 64 by a fine-tune) get unused placeholders.
    padding = [f"[PAD{i}]" for i in range(len(tokens), config.vocab_size)]
    control = set(special)
    types = [CONTROL if i in control else NORMAL for i in range(len(tokens))] + [UNUSED] * len(padding)
    quant = {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "bf16": gguf.GGMLQuantizationType.BF16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }[file_type]
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_name(name or "GPT-2")
    writer.add_context_length(config.n_positions)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(config.mlp_width)
    writer.add_block_count(config.n_layer)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    writer.add_file_type({"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7}[file_type])  # llama.cpp's LLAMA_FTYPE_*
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens + padding)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if config.eos_token_id is not None:
        writer.add_bos_token_id(config.eos_token_id)  # GPT-2 starts texts with its one special token
        writer.add_eos_token_id(config.eos_token_id)
    writer.add_add_bos_token(False)
    tensors = list(_tensors(model))
    for done, (gguf_name, tensor) in enumerate(tensors, 1):
        data = tensor.detach().float().cpu().contiguous().numpy()
        kind = quant if data.ndim == 2 and gguf_name != "position_embd.weight" else gguf.GGMLQuantizationType.F32
        if kind != gguf.GGMLQuantizationType.F32:
            data = gguf.quants.quantize(data, kind)
        writer.add_tensor(gguf_name, data, raw_dtype=kind)
        if on_tensor:
            on_tensor(done, len(tensors))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def vocabulary(checkpoint: Checkpoint) -> tuple[list[str], list[str], list[int]]:
    """A checkpoint's byte-level BPE as llama.cpp takes it: tokens in id order, merges, control token ids."""
    files = read_tokenizer_files(checkpoint)
    vocab, merges = (
        (files.vocab, files.merges)
        if files.tokenizer_json is None
        else gpt2_byte_level(files.tokenizer_json) or (None, None)
    )
    if vocab is None:
        raise ValueError(
            "only GPT-2's byte-level BPE tokenizer can go into a GGUF for llama.cpp's gpt2 architecture; "
            "this checkpoint's tokenizer is another kind"
        )
    vocab = {**vocab, **{t.content: t.id for t in files.added}}
    tokens = [None] * (max(vocab.values()) + 1)
    for token, i in vocab.items():
        tokens[i] = token
    tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]  # ids no text was given
    special = sorted({t.id for t in files.added if t.special} | {vocab[t] for t in files.roles.values() if t in vocab})
    return tokens, [f"{a} {b}" for a, b in merges], special


def _tensors(model: GPT2):
    """(llama.cpp's name, tensor) for every weight, in the model's order."""
    yield "token_embd.weight", model.wte.weight
    yield "position_embd.weight", model.wpe.weight
    for i, block in enumerate(model.h):
        b = f"blk.{i}."
        parts = {
            "attn_norm": block.ln_1,
            "attn_qkv": block.attn.c_attn,
            "attn_output": block.attn.c_proj,
            "ffn_norm": block.ln_2,
            "ffn_up": block.mlp.c_fc,
            "ffn_down": block.mlp.c_proj,
        }
        for part, module in parts.items():
            yield b + part + ".weight", module.weight
            yield b + part + ".bias", module.bias
    yield "output_norm.weight", model.ln_f.weight
    yield "output_norm.bias", model.ln_f.bias
    if not model.config.tie_word_embeddings:
        yield "output.weight", model.lm_head.weight


def _check_type(file_type: str) -> None:
    if file_type not in TYPES:
        raise ValueError(f"GGUF type must be one of {', '.join(TYPES)}, got {file_type!r}")


def _check_exportable(config, file_type: str) -> None:
    _check_type(file_type)
    if file_type == "q8_0" and config.n_embd % 32:
        raise ValueError(f"q8_0 quantizes rows in blocks of 32; n_embd {config.n_embd} is not a multiple of 32")
    differs = {
        "activation_function": config.activation_function not in (NATIVE_ACTIVATION, "gelu_pytorch_tanh"),
        "scale_attn_weights": not config.scale_attn_weights,
        "scale_attn_by_inverse_layer_idx": config.scale_attn_by_inverse_layer_idx,
    }
    unsupported = [key for key, bad in differs.items() if bad]
    if unsupported:
        raise ValueError(f"llama.cpp's GPT-2 computes the official GPT-2 only; this config changes {unsupported[0]}")


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ImportError('writing GGUF needs the gguf package: pip install "minigpt2[export]"') from None
    return gguf


def export_checkpoint(
    name_or_path: str, path, file_type: str = "f32", revision: str | None = None, base=None, on_tensor=None
) -> int:
    """Read a checkpoint (as from_pretrained does, base= for a weights file or an adapter) and write it as
    GGUF; returns the file's size in bytes. on_tensor(written, total): after each tensor, for progress."""
    _gguf()  # all of this before anything is loaded
    check_writable(path)
    _check_type(file_type)
    checkpoint = resolve_for_loading(name_or_path, revision, base, None)
    model = load_model(checkpoint, LoadOptions(), GPT2)
    tokens, merges, special = vocabulary(tokenizer_checkpoint(checkpoint, model))
    name = str(name_or_path)

    def write(partial):
        export_gguf(
            model, partial, tokens, merges, file_type=file_type, special=special, name=name, on_tensor=on_tensor
        )

    return write_atomically(path, write)
