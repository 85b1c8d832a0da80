"""The batches a step trains on: random windows of the token stream (nanoGPT's get_batch) or random
instruction examples, each with its position as a state_dict, so a resume draws what the run would have."""

from __future__ import annotations

import torch

IGNORE = -100  # a label that is not counted


class Windows:
    """Random windows of block_size tokens from the train segments, at offsets drawn from a seeded generator
    (nanoGPT's get_batch). state_dict() is the data position: the generator's state."""

    def __init__(self, segments: list[torch.Tensor], block_size: int, batch_size: int, seed: int):
        self.segments = [s for s in segments if len(s) >= block_size]
        self.block_size, self.batch_size = block_size, batch_size
        self.ends = torch.tensor([len(s) - block_size + 1 for s in self.segments]).cumsum(0)  # windows so far
        self.generator = torch.Generator().manual_seed(seed)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.at(torch.randint(int(self.ends[-1]), (self.batch_size,), generator=self.generator))

    def at(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows at these global offsets (across segments, none crossing into the next)."""
        which = torch.searchsorted(self.ends, starts, right=True)
        before = torch.cat([torch.zeros(1, dtype=torch.long), self.ends])[which]
        rows = [self.segments[s][i - b : i - b + self.block_size] for s, i, b in zip(which, starts, before)]
        x = torch.stack(rows).long()
        return x, x

    def fixed(self, batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """batches windows spread evenly over the segments: the same set at every evaluation."""
        starts = torch.linspace(0, int(self.ends[-1]) - 1, batches * self.batch_size).long()
        return [self.at(chunk) for chunk in starts.split(self.batch_size)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class Examples:
    """Random instruction examples, padded on the right (labels -100) to the longest in the batch."""

    def __init__(self, examples, batch_size: int, seed: int, pad_id: int):
        self.examples, self.batch_size, self.pad_id = examples, batch_size, pad_id
        self.generator = torch.Generator().manual_seed(seed)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        picks = torch.randint(len(self.examples), (self.batch_size,), generator=self.generator)
        return self.batch([self.examples[i] for i in picks])

    def batch(self, examples) -> tuple[torch.Tensor, torch.Tensor]:
        # Right padding needs no attention mask: a causal model's real tokens never see what comes after them.
        T = max(len(ids) for ids, _ in examples)
        x = torch.full((len(examples), T), self.pad_id, dtype=torch.long)
        y = torch.full((len(examples), T), IGNORE, dtype=torch.long)
        for row, (ids, labels) in enumerate(examples):
            x[row, : len(ids)], y[row, : len(labels)] = torch.tensor(ids), torch.tensor(labels)
        return x, y

    def fixed(self, batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        chosen = self.examples[: batches * self.batch_size]
        return [self.batch(chosen[i : i + self.batch_size]) for i in range(0, len(chosen), self.batch_size)]

    state_dict, load_state_dict = Windows.state_dict, Windows.load_state_dict
