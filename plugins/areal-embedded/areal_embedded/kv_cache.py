"""A slot-based KV cache that one running batch shares: one row per sequence, rows kept dense.

Per layer, keys and values live in ``[rows, kv_heads, capacity, head_dim]`` tensors. Row ``r``
holds the sequence in batch position ``r``; a sequence's tokens occupy slots
``start[r] .. end[r]-1`` of its row (``start`` > 0 when the prompt was left-padded in a batched
prefill). Each forward covers a contiguous range of rows and writes its new keys/values at
``write_slots`` (``[n_rows, q_len]``); attention then reads slots ``0 .. kv_len-1`` of those rows
and the caller's 4-D mask hides every slot outside ``start..current``. Capacity grows by doubling.

The class plugs into any Hugging Face decoder through the ``Cache.update`` call that its attention
layers make, so the model code itself is unchanged.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


class SlotKVCache(Cache):
    """KV storage for up to ``max_rows`` sequences of up to ``max_len`` tokens each."""

    def __init__(self, n_layers: int, max_rows: int, kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype, device: torch.device, initial_capacity: int = 256):
        super().__init__(layers=[])
        self.n_layers, self.max_rows, self.kv_heads, self.head_dim = n_layers, max_rows, kv_heads, head_dim
        self.max_len, self.dtype, self.device = max_len, dtype, device
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._initial_capacity = min(initial_capacity, max_len)
        self._rows = slice(0, 0)
        self._row_index: torch.Tensor | None = None
        self._write_slots: torch.Tensor | None = None
        self._kv_len = 0

    def __len__(self) -> int:
        return self.n_layers

    def ensure_capacity(self, needed: int) -> None:
        """Make every row hold at least ``needed`` slots (doubling; existing contents are kept)."""
        if needed <= self.capacity:
            return
        if needed > self.max_len:
            raise ValueError(f"KV cache needs {needed} slots but max_len is {self.max_len}")
        new_capacity = max(self.capacity, self._initial_capacity)
        while new_capacity < needed:
            new_capacity *= 2
        new_capacity = min(new_capacity, self.max_len)
        shape = (self.max_rows, self.kv_heads, new_capacity, self.head_dim)
        # zeros, not empty: masked slots are multiplied by 0 in attention, and 0 * NaN would leak
        new_keys = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.n_layers)]
        new_values = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.n_layers)]
        for old, new in zip(self.keys + self.values, new_keys + new_values):
            new[:, :, : self.capacity].copy_(old)
        self.keys, self.values, self.capacity = new_keys, new_values, new_capacity

    def release(self) -> None:
        """Free the storage (the next forward reallocates at the initial capacity)."""
        self.keys, self.values, self.capacity = [], [], 0

    def begin_forward(self, row_start: int, write_slots: torch.Tensor, kv_len: int) -> None:
        """Set where the next forward writes: rows ``row_start..row_start+n-1``, slots ``write_slots [n, q]``."""
        n = write_slots.shape[0]
        self.ensure_capacity(kv_len)
        self._rows = slice(row_start, row_start + n)
        self._row_index = torch.arange(row_start, row_start + n, device=self.device).unsqueeze(1)
        self._write_slots = write_slots
        self._kv_len = kv_len

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Store ``key/value_states [n, kv_heads, q, head_dim]``; return the rows' first ``kv_len`` slots."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        # advanced indices on dims 0 and 2 around a slice: the indexed view is [n, q, kv_heads, head_dim]
        keys[self._row_index, :, self._write_slots] = key_states.transpose(1, 2).to(self.dtype)
        values[self._row_index, :, self._write_slots] = value_states.transpose(1, 2).to(self.dtype)
        return keys[self._rows, :, : self._kv_len], values[self._rows, :, : self._kv_len]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_len

    def move_row(self, src: int, dst: int, n_slots: int) -> None:
        """Copy the first ``n_slots`` slots of row ``src`` into row ``dst`` (compaction, shared prefills)."""
        for tensor in self.keys + self.values:
            tensor[dst, :, :n_slots].copy_(tensor[src, :, :n_slots])
