"""minigpt2 as a model of EleutherAI's lm-evaluation-harness (pip install "minigpt2[eval]").

    python -m minigpt2.lm_eval --model_args pretrained=gpt2-medium --tasks lambada_openai,hellaswag
    lm_eval.simple_evaluate(model=MiniGPT2LM("gpt2"), tasks=[...])       # in Python, after import minigpt2.lm_eval

Importing this module registers the model under the name "minigpt2". It scores as lm-eval's own `hf`
model does: a continuation's log-likelihood is the sum of its tokens' fp32 log-softmax after the context,
the two cut to the last n_positions + 1 tokens (minigpt2.scoring.loglikelihood); rolling log-likelihoods
go through lm-eval's own windows; generate_until runs minigpt2's greedy (or sampled) loop, batched and
left-padded, stopping at eos and at the task's stop strings.
"""

from __future__ import annotations

import difflib
import inspect

import torch

try:
    import lm_eval.models  # noqa: F401 - lm-eval registers its own models only while its registry is empty
    from lm_eval import utils
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
    from tqdm import tqdm
except ImportError:
    raise ImportError('minigpt2.lm_eval needs the evaluation harness: pip install "minigpt2[eval]"') from None

from .. import load
from ..generation.config import SAMPLING_ONLY
from ..model import GPT2
from ..scoring import loglikelihood
from ..tokenizer import Tokenizer

SAMPLING = ("do_sample", *SAMPLING_ONLY)
# What lm-eval adds to model_args for its `hf` model's sake (run --trust_remote_code): minigpt2 runs no remote code.
LM_EVAL_ADDS = ("trust_remote_code",)


@register_model("minigpt2")
class MiniGPT2LM(TemplateLM):
    def __init__(
        self,
        pretrained: str | GPT2 = "gpt2",
        *,
        tokenizer: Tokenizer | None = None,
        revision: str | None = None,
        base: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        quantize: str | None = None,
        fast: bool = False,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        **others,
    ):
        """pretrained: a name or path minigpt2 loads, or a loaded GPT2 (then give its tokenizer=).
        base: the base checkpoint of a weights file or a LoRA adapter (as from_pretrained's).
        device: as lm-eval's CLI gives it ("cuda:0" by default), falling back to the CPU where there is no GPU.
        batch_size: requests scored in one forward pass ("auto": max_batch_size, default 64).
        Any other argument is refused (a misspelt one would leave its default in place), but those that
        lm-eval itself adds for its `hf` model (LM_EVAL_ADDS)."""
        _check_arguments(others)
        super().__init__()
        text = str(batch_size)
        name, size = ("max_batch_size", str(max_batch_size or 64)) if text.startswith("auto") else ("batch_size", text)
        if not size.isdigit() or int(size) < 1:
            raise ValueError(f"{name} must be a whole number of at least 1 (batch_size may be 'auto'), got {size!r}")
        self.batch_size_per_call = int(size)
        if isinstance(pretrained, GPT2):
            if tokenizer is None:
                raise ValueError("a loaded model needs its tokenizer too: MiniGPT2LM(model, tokenizer=tokenizer)")
            self.model, self.tokenizer = pretrained, tokenizer
        elif tokenizer is not None:
            raise ValueError("tokenizer= goes with a loaded model; a checkpoint's name or path brings its own")
        else:
            dtype = None if dtype in (None, "auto") else dtype
            options = dict(device=_device(device), dtype=dtype, quantize=quantize, fast=fast)
            self.model, self.tokenizer = load(pretrained, revision=revision, base=base, **options)
        self._max_length = int(max_length or self.model.config.n_positions)
        self._max_gen_toks = int(max_gen_toks)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context starts from: bos, else eos (GPT-2's <|endoftext|>), as `hf` has it."""
        return self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self):
        return self.model.wte.weight.device

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string)  # GPT-2's tokenizer adds no bos either way, as transformers' does

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: [((context, continuation), context ids, continuation ids)]."""
        pairs = [(context, continuation) for _, context, continuation in requests]
        with tqdm(total=len(pairs), disable=disable_tqdm, desc="Running loglikelihood requests") as bar:
            return loglikelihood(
                self.model,
                pairs,
                batch_size=self.batch_size_per_call,
                context=self._max_length,
                on_batch=lambda done, _: bar.update(done - bar.n),
            )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each text's total log-likelihood over lm-eval's own disjoint windows (the first token after the
        prefix token), the windows of all texts scored together."""
        windows, owners = [], []
        for n, (text,) in enumerate(request.args for request in requests):
            for window in utils.get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self._max_length,
                context_len=1,
            ):
                windows.append((None, *utils.make_disjoint_window(window)))
                owners.append(n)
        totals = [0.0] * len(requests)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        for owner, (logprob, _) in zip(owners, scores, strict=True):
            totals[owner] += logprob
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Requests with the same generation settings run together, left-padded, batch_size at a time."""
        groups: dict[str, list[int]] = {}
        for n, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(n)
        texts = [""] * len(requests)
        with tqdm(total=len(requests), disable=disable_tqdm, desc="Running generate_until requests") as bar:
            for indices in groups.values():
                for start in range(0, len(indices), self.batch_size_per_call):
                    chunk = indices[start : start + self.batch_size_per_call]
                    outputs = self._generate([requests[i].args[0] for i in chunk], requests[chunk[0]].args[1])
                    for i, text in zip(chunk, outputs, strict=True):
                        texts[i] = text
                    bar.update(len(chunk))
        return texts

    @torch.inference_mode()
    def _generate(self, contexts: list[str], gen_kwargs: dict) -> list[str]:
        settings = normalize_gen_kwargs(dict(gen_kwargs), self._max_gen_toks)
        until = handle_stop_sequences(settings.pop("until", None), eos=self.tokenizer.decode([self.eot_token_id]))
        new_tokens = settings.pop("max_gen_toks")
        sampling = {name: settings[name] for name in SAMPLING if settings.get(name) is not None}
        if not sampling.get("do_sample"):
            sampling = {"do_sample": False}  # as `hf` asks, whatever the checkpoint's generation_config.json says
        rows = [
            self.tok_encode(context)[-(self._max_length - new_tokens) :] or [self.prefix_token_id]
            for context in contexts
        ]
        T = max(len(row) for row in rows)
        ids = torch.full((len(rows), T), self.eot_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, T - len(row) :], mask[r, T - len(row) :] = torch.tensor(row), 1
        stops = [u for u in until if u]
        window = max((len(u.encode()) for u in stops), default=0) + 1  # tokens that hold a stop string, and one
        generated: list[list[int]] = [[] for _ in rows]
        done = [False] * len(rows)
        # Stop strings count in the generated text alone, as lm-eval's `hf` model looks for them: one that
        # the prompt's end and the first new tokens make together stops nothing (the loop's own stop_strings
        # would read the prompt too). The text is cut at the first stop string afterwards, as `hf` cuts it.
        steps = self.model.stream(
            ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=new_tokens,
            eos_token_id=self.eot_token_id,
            **sampling,
        )
        for step in steps:
            for r, token in enumerate(step.tokens.tolist()):
                if done[r]:
                    continue
                if token == self.eot_token_id:
                    done[r] = True
                    continue
                generated[r].append(token)
                tail = self.tokenizer.decode(generated[r][-window:])
                done[r] = any(u in tail for u in stops)
            if all(done):
                steps.close()
                break
        return [
            postprocess_generated_text(self.tokenizer.decode(row, skip_special_tokens=True), until, None)
            for row in generated
        ]


def _check_arguments(others: dict) -> None:
    """A model_args key MiniGPT2LM does not take, refused with the ones it does (and the nearest, for a typo)."""
    unknown = [name for name in others if name not in LM_EVAL_ADDS]
    if not unknown:
        return
    taken = [name for name in inspect.signature(MiniGPT2LM.__init__).parameters if name not in ("self", "others")]
    near = difflib.get_close_matches(unknown[0], taken, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise ValueError(f"unknown model_args {', '.join(unknown)}{hint}; minigpt2's model takes {', '.join(taken)}")


def _device(device) -> str:
    """lm-eval's CLI asks for cuda:0 unless told otherwise: the CPU where there is no GPU, as `hf` falls back."""
    if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)
