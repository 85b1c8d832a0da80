"""Every option of generate() and stream(), with its default and its checks, spelled once.

The names and meanings are those of transformers' GenerationConfig. A value is checked when it is
made, before any forward pass; what depends on the model or the prompt (the vocabulary, the context)
is checked by the loop as it starts. A checkpoint's own defaults (its generation_config.json) are read
here too, with transformers' rules.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

from ..checkpoint import Checkpoint, CheckpointError, first_line

SAMPLING_ONLY = ("temperature", "top_k", "top_p")
NUMBERS = ("temperature", "top_p", "repetition_penalty", "length_penalty", "max_time", "assistant_confidence_threshold")


@dataclass(frozen=True)
class GenerationConfig:
    """max_new_tokens / max_length: exactly one; tokens to add, or the total length as in transformers.
    eos_token_id: an id or a list of ids; a row that emits one is finished and gets pad_token_id (default:
        the first eos) from then on; the loop stops once every row has finished.
    num_return_sequences: rows per prompt (samples, identical greedy rows, or the best beams).
    do_sample: draw instead of argmax, after temperature (default 1), top_k (default 50, 0 for none),
        top_p (default 1: none); seed makes the draws repeatable.
    num_beams > 1: beam search, keeping the num_beams best sequences per prompt; a finished one scores
        its summed log-probability / (new tokens ** length_penalty); early_stopping: True stops a prompt
        once num_beams sequences have finished, False when no running beam is likely to do better,
        "never" when none can (transformers' meanings).
    repetition_penalty (> 1 discourages tokens already there), no_repeat_ngram_size, bad_words_ids
        ([[ids of a word], ...]), min_length / min_new_tokens (eos held back until then),
        forced_eos_token_id (forced as the last token): processors, in transformers' order.
    stop_strings (needs generate(..., tokenizer=)): a row is done once its text ends in one;
        max_time: seconds, after which every row is done.
    use_cache=False: feed the whole sequence every step, as the tutorial's loop does (same tokens).
    compile=True: every step after the prompt runs a fixed-shape decode step compiled by torch.compile
        (generation/compiled.py); greedy and sampling only.
    Assisted decoding (generation/assisted.py; generate(..., assistant_model=draft) or prompt lookup):
    num_assistant_tokens: tokens drafted per round (schedule "constant", or "heuristic": 2 more after a round
        whose drafts were all accepted, 1 fewer otherwise); assistant_confidence_threshold: a draft model
        stops drafting at a token it gives less probability than this; prompt_lookup_num_tokens: draft
        that many tokens from the sequence itself, after the last earlier match of its last
        max_matching_ngram_size (default 2) tokens, no draft model needed.
    """

    max_new_tokens: int | None = None
    max_length: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50  # 0: no limit
    top_p: float = 1.0
    seed: int | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    bad_words_ids: tuple[tuple[int, ...], ...] | None = None
    min_length: int | None = None
    min_new_tokens: int | None = None
    forced_eos_token_id: int | None = None
    stop_strings: tuple[str, ...] | None = None
    max_time: float | None = None
    use_cache: bool = True
    compile: bool = False
    num_assistant_tokens: int = 20
    num_assistant_tokens_schedule: str = "constant"
    assistant_confidence_threshold: float = 0.4
    prompt_lookup_num_tokens: int | None = None
    max_matching_ngram_size: int | None = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - normalising a frozen value
        for name in VALUED:
            if getattr(self, name) is None:
                set_(name, DEFAULTS[name])  # None asks for the library default, as transformers reads it
        if isinstance(self.eos_token_id, (list, tuple)):
            set_("eos_token_id", _ids("eos_token_id", self.eos_token_id) or None)
        for name in ("eos_token_id", "pad_token_id", "bos_token_id", "forced_eos_token_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple) and not _is_int(value):
                raise ValueError(f"{name} must be a token id (a whole number), got {value!r}")
        if self.bad_words_ids is not None:
            set_("bad_words_ids", _bad_words(self.bad_words_ids))
        if self.stop_strings is not None:
            set_("stop_strings", _stop_strings(self.stop_strings))
        self._check_types()
        self._check_lengths()
        self._check_search()
        self._check_processors()
        self._check_assisted()

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """Every id that ends a row (none: rows run to the length asked for)."""
        if self.eos_token_id is None:
            return ()
        return self.eos_token_id if isinstance(self.eos_token_id, tuple) else (self.eos_token_id,)

    @property
    def pad_id(self) -> int | None:
        """What finished rows get: pad_token_id, or (as transformers) the first eos."""
        return self.pad_token_id if self.pad_token_id is not None else next(iter(self.eos_ids), None)

    @property
    def beams(self) -> bool:
        return self.num_beams > 1

    def replace(self, **options) -> GenerationConfig:
        """This config with some options changed (unknown names refused)."""
        _check_names(options)
        return dataclasses.replace(self, **options)

    @classmethod
    def build(cls, defaults: dict | None = None, **given) -> GenerationConfig:
        """The options given over the defaults (a checkpoint's generation_config.json, say), as transformers'
        generate() merges them: a given None unsets the default (eos_token_id=None: no eos), or, for an
        option that needs a value, is its library default. Sampling options given without do_sample are
        refused, as a mistake; from the defaults they are kept, unused."""
        _check_names(given)
        merged = {**(defaults or {}), **given}
        if not merged.get("do_sample"):
            for name in SAMPLING_ONLY:
                if given.get(name) is not None:
                    raise ValueError(
                        f"{name} only applies when sampling: add do_sample=True (--do-sample); greedy is the default"
                    )
        if given.get("max_new_tokens") is not None or given.get("max_length") is not None:
            for name in ("max_new_tokens", "max_length"):  # the caller's length replaces the defaults'
                merged.setdefault(name, None)
                merged[name] = given.get(name)
        return cls(**merged)

    def _check_types(self):
        for name in NUMBERS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        for name in ("do_sample", "use_cache", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def _check_lengths(self):
        if self.max_new_tokens is not None and self.max_length is not None:
            raise ValueError("give exactly one of max_new_tokens (tokens to add) or max_length (total length)")
        for name in ("max_new_tokens", "max_length", "min_length", "min_new_tokens"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise ValueError(f"{name} must be 0 or more, got {value!r}")
        if not _is_int(self.num_return_sequences) or self.num_return_sequences < 1:
            raise ValueError(f"num_return_sequences must be at least 1, got {self.num_return_sequences}")
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"max_time must be above 0 seconds, got {self.max_time}")
        if self.compile and not self.use_cache:
            raise ValueError("compile=True compiles the cached decode step; it needs use_cache=True")

    def _check_search(self):
        if not _is_int(self.num_beams) or self.num_beams < 1:
            raise ValueError(f"num_beams must be a whole number of at least 1, got {self.num_beams!r}")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        if not isinstance(self.length_penalty, (int, float)) or isinstance(self.length_penalty, bool):
            raise ValueError(f"length_penalty must be a number, got {self.length_penalty!r}")
        if self.do_sample:
            if not self.temperature > 0:
                raise ValueError(
                    f"temperature must be above 0, got {self.temperature}; for greedy decoding leave do_sample off"
                )
            if not _is_int(self.top_k) or self.top_k < 0:
                raise ValueError(f"top_k must be 0 (no limit) or more, got {self.top_k}")
            if not 0 < self.top_p <= 1:
                raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.beams:
            return
        if self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"num_return_sequences ({self.num_return_sequences}) can be at most num_beams ({self.num_beams}): "
                "beam search returns its best beams"
            )
        if self.do_sample:
            raise ValueError("beam search draws nothing: give num_beams > 1 or do_sample=True, not both")
        if self.compile:
            raise ValueError("compile=True compiles greedy and sampling steps; beam search runs without it")

    def _check_assisted(self):
        for name in ("num_assistant_tokens", "prompt_lookup_num_tokens", "max_matching_ngram_size"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.num_assistant_tokens_schedule not in ("constant", "heuristic"):
            raise ValueError(
                f"num_assistant_tokens_schedule must be 'constant' or 'heuristic', got {self.num_assistant_tokens_schedule!r}"
            )
        if not 0 <= self.assistant_confidence_threshold < 1:
            raise ValueError(
                f"assistant_confidence_threshold must be in [0, 1), got {self.assistant_confidence_threshold!r}"
            )

    def _check_processors(self):
        if self.no_repeat_ngram_size is not None and (
            not _is_int(self.no_repeat_ngram_size) or self.no_repeat_ngram_size < 0
        ):
            raise ValueError(f"no_repeat_ngram_size must be 1 or more (0 is none), got {self.no_repeat_ngram_size!r}")
        if self.repetition_penalty is not None and not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be above 0 (1 is none), got {self.repetition_penalty}")
        for name in ("min_length", "min_new_tokens"):
            if getattr(self, name) and not self.eos_ids:
                raise ValueError(f"{name} holds the eos token back, so it needs eos_token_id")


FIELDS = tuple(f.name for f in dataclasses.fields(GenerationConfig))  # every option, in their order
DEFAULTS = {f.name: f.default for f in dataclasses.fields(GenerationConfig)}
VALUED = {name for name, default in DEFAULTS.items() if default is not None}  # None means the default
DEFAULT_NEW_TOKENS = 20  # transformers' length, when neither the caller nor the checkpoint gives one


def _check_names(options: dict) -> None:
    unknown = sorted(set(options) - set(FIELDS))
    if unknown:
        raise TypeError(f"unknown generation option {unknown[0]!r}; the options are GenerationConfig's fields")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ids(name: str, ids) -> tuple[int, ...]:
    if not all(_is_int(i) for i in ids):
        raise ValueError(f"{name} must be a token id or a list of them, got {list(ids)!r}")
    return tuple(ids)


def _bad_words(bad_words_ids) -> tuple[tuple[int, ...], ...]:
    if (
        not isinstance(bad_words_ids, (list, tuple))
        or not bad_words_ids
        or not all(isinstance(w, (list, tuple)) and w and all(_is_int(t) for t in w) for w in bad_words_ids)
    ):
        raise ValueError(
            "bad_words_ids must be a non-empty list of non-empty lists of token ids, e.g. [[318], [40, 1101]]"
        )
    return tuple(tuple(w) for w in bad_words_ids)


def _stop_strings(stop_strings) -> tuple[str, ...]:
    strings = (stop_strings,) if isinstance(stop_strings, str) else stop_strings
    if not isinstance(strings, (list, tuple)) or not strings or not all(isinstance(s, str) and s for s in strings):
        raise ValueError("stop_strings must be a non-empty string or a list of them")
    return tuple(strings)


# Fields of transformers' GenerationConfig that change what it generates and minigpt2 does not compute:
# set to anything but their neutral value, they are named in a warning rather than silently dropped.
NOT_COMPUTED = (
    "typical_p", "epsilon_cutoff", "eta_cutoff", "min_p", "top_h", "num_beam_groups", "diversity_penalty",
    "penalty_alpha", "suppress_tokens", "begin_suppress_tokens", "sequence_bias", "renormalize_logits",
    "exponential_decay_length_penalty", "encoder_repetition_penalty", "guidance_scale", "forced_bos_token_id",
    "force_words_ids", "constraints", "dola_layers", "watermarking_config",
)  # fmt: skip
NEUTRAL = (None, False, 0, 0.0, 1, 1.0, [], {})


def read_generation_defaults(checkpoint: Checkpoint) -> tuple[dict, str]:
    """The checkpoint's generation defaults and where they come from, with transformers' rules: its
    generation_config.json when it has one (and then nothing from config.json), else config.json's special
    tokens (and any generation field written there, as older checkpoints did). Unknown fields are ignored;
    a bad value in a known one is a one-line error naming the file and the field."""
    path = checkpoint.path("generation_config.json")
    raw = checkpoint.read_json("generation_config.json") if path is not None else checkpoint.config
    source = str(path) if path is not None else "config.json"
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source} is not a JSON object of generation settings")
    defaults = {k: v for k, v in raw.items() if k in FIELDS and v is not None}
    if "max_new_tokens" in defaults:
        defaults.pop("max_length", None)  # as transformers: max_new_tokens wins
    if path is not None:
        ignored = [k for k in NOT_COMPUTED if raw.get(k) not in NEUTRAL]
        if ignored:
            warnings.warn(f"{source} sets {', '.join(ignored)}, which minigpt2 does not compute; they are ignored")
    try:
        GenerationConfig(**defaults)
    except ValueError as e:
        raise CheckpointError(f"{source}: {first_line(e)}") from None
    return defaults, source
