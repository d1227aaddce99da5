"""Per-conversation KV state. After a turn, the worker keeps the KV cells of its sequence with the exact token ids
they hold; before a turn, the longest kept token list that is a whole prefix of the new prompt is restored into the
turn's own sequence (app/llm/engine.py), so only the new tokens are evaluated. A whole prefix only, never a partial
one: Gemma 3's sliding-window layers keep just the last positions, and identical token ids mean identical content,
so one conversation can never be served another's. Bounded by real bytes; the least recently used goes first.

llama-cpp-python's own `save_state`/`LlamaRAMCache` copy the whole logits buffer (hundreds of MB) and did not
restore bit-exactly; the per-sequence state is a few MB and exact.
"""

import ctypes
import threading
from collections import OrderedDict


class StateCache:
    """Saved states of every loaded model of one worker, keyed by (model, token ids)."""

    def __init__(self, capacity_bytes: int):
        self.capacity = capacity_bytes
        self.states: OrderedDict[tuple[str, tuple[int, ...]], bytearray] = OrderedDict()
        self.size = 0
        self.hits = 0
        self.lock = threading.Lock()

    def save(self, model: str, ctx, seq_id: int, held: list[int]) -> None:
        """Keep the cells sequence `seq_id` of context `ctx` holds: those of the token ids `held`."""
        import llama_cpp  # imported where the weights are: the web process only tokenizes

        tokens = tuple(held)
        with self.lock:
            if (model, tokens) in self.states:  # the same ids hold the same cells
                self.states.move_to_end((model, tokens))
                return
        size = llama_cpp.llama_state_seq_get_size(ctx, seq_id)
        if not tokens or size > self.capacity:
            return
        data = bytearray(size)  # llama.cpp writes straight into it: one allocation, no copy
        written = llama_cpp.llama_state_seq_get_data(ctx, _pointer(data), size, seq_id)
        del data[written:]
        with self.lock:
            self._drop((model, tokens))
            self.states[(model, tokens)] = data
            self.size += written
            while self.size > self.capacity:
                self._drop(next(iter(self.states)))

    def restore(self, model: str, ctx, seq_id: int, prompt: list[int]) -> int:
        """Restore the longest kept whole prefix of `prompt` into the empty sequence `seq_id`; the number of tokens
        restored (0: none)."""
        import llama_cpp

        with self.lock:
            best = max((tokens for key, tokens in self.states if key == model and len(tokens) <= len(prompt)
                        and tuple(prompt[: len(tokens)]) == tokens), key=len, default=None)
            if best is None:
                return 0
            self.states.move_to_end((model, best))
            data = self.states[(model, best)]
        if llama_cpp.llama_state_seq_set_data(ctx, _pointer(data), len(data), seq_id) != len(data):
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), seq_id, -1, -1)
            return 0  # nothing trustworthy is left in the sequence: evaluate the whole prompt
        self.hits += 1
        return len(best)

    def forget(self, model: str) -> None:
        with self.lock:
            for key in [key for key in self.states if key[0] == model]:
                self._drop(key)

    def _drop(self, key) -> None:
        data = self.states.pop(key, None)
        if data is not None:
            self.size -= len(data)


def _pointer(data: bytearray):
    """The bytes of `data` as llama.cpp's uint8 buffer, without a copy (the view is released when dropped)."""
    return (ctypes.c_uint8 * len(data)).from_buffer(data)


def common_prefix(a, b) -> int:
    """How many leading token ids `a` and `b` share."""
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length
