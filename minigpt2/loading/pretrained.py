"""GPT2.from_pretrained, the loading wing's front door on the model."""

from __future__ import annotations

from . import LoadOptions, load_model, resolve_for_loading


class PretrainedMixin:
    @classmethod
    def from_pretrained(cls, name_or_path, *, revision: str | None = None, base=None, config=None, **options):
        """Load an official checkpoint by name ("gpt2-medium"), a hub repo ("org/name"), or a local path: a
        checkpoint folder, a weights file (safetensors, a torch.save state dict, nanoGPT's ckpt.pt, llm.c's
        .bin) or a PEFT LoRA adapter folder.

        revision: a hub branch, tag or commit. base: the base checkpoint whose config.json and tokenizer a
        weights file or an adapter borrows (config= was its old name, and warns). options: LoadOptions'
        (device, dtype, quantize, fast, process, merge_lora), and TransformerLens's processing keywords
        (fold_ln, center_writing_weights, center_unembed, fold_value_biases).
        """
        options = LoadOptions.build(**options)  # checked before anything is read
        return load_model(resolve_for_loading(name_or_path, revision, base, config), options, cls)
