"""Per-conversation KV state. After a turn, the worker keeps the KV cells of sequence 0 with the exact token ids
they hold; before a turn, the longest kept token list that is a whole prefix of the new prompt is restored (when it
beats what the model holds already), so only the new tokens are evaluated. A whole prefix only, never a partial
one: Gemma 3's sliding-window layers keep just the last positions, and identical token ids mean identical content,
so one conversation can never be served another's. Bounded by real bytes; the least recently used goes first.

llama-cpp-python's own `save_state`/`LlamaRAMCache` copy the whole logits buffer (hundreds of MB) and did not
restore bit-exactly; the per-sequence state is a few MB and exact.
"""

import ctypes
import threading
from collections import OrderedDict

SEQUENCE = 0


class StateCache:
    """Saved states of every loaded model of one worker, keyed by (model, token ids)."""

    def __init__(self, capacity_bytes: int):
        self.capacity = capacity_bytes
        self.states: OrderedDict[tuple[str, tuple[int, ...]], bytearray] = OrderedDict()
        self.size = 0
        self.hits = 0
        self.lock = threading.Lock()

    def save(self, model: str, llm) -> None:
        """Keep what `llm` holds now (its evaluated tokens and their KV cells)."""
        import llama_cpp  # imported where the weights are: the web process only tokenizes

        tokens = tuple(int(token) for token in llm.input_ids[: llm.n_tokens])
        with self.lock:
            if (model, tokens) in self.states:  # the same ids hold the same cells
                self.states.move_to_end((model, tokens))
                return
        size = llama_cpp.llama_state_seq_get_size(llm._ctx.ctx, SEQUENCE)
        if not tokens or size > self.capacity:
            return
        data = bytearray(size)  # llama.cpp writes straight into it: one allocation, no copy
        written = llama_cpp.llama_state_seq_get_data(llm._ctx.ctx, _pointer(data), size, SEQUENCE)
        del data[written:]
        with self.lock:
            self._drop((model, tokens))
            self.states[(model, tokens)] = data
            self.size += written
            while self.size > self.capacity:
                self._drop(next(iter(self.states)))

    def restore(self, model: str, llm, prompt: list[int]) -> int:
        """Restore the longest kept whole prefix of `prompt` into `llm` if it is longer than the prefix `llm` holds
        already; the number of tokens restored (0: none)."""
        import llama_cpp

        held = common_prefix(llm.input_ids[: llm.n_tokens], prompt)
        with self.lock:
            best = max((tokens for key, tokens in self.states if key == model and len(tokens) <= len(prompt)
                        and held < len(tokens) and tuple(prompt[: len(tokens)]) == tokens), key=len, default=None)
            if best is None:
                return 0
            self.states.move_to_end((model, best))
            data = self.states[(model, best)]
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, _pointer(data), len(data), SEQUENCE) != len(data):
            llm.reset()  # nothing trustworthy is left in the context: evaluate the whole prompt
            return 0
        # The Llama object's own bookkeeping must agree with the restored cells; its logits do not, so it
        # evaluates at least one token before sampling (generate() replays the last one if nothing is new).
        llm.input_ids[: len(best)] = best
        llm.n_tokens = len(best)
        llm._requires_eval = True
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


def evaluate(llm, prompt: list[int]) -> None:
    """Bring `llm` to exactly `prompt` evaluated, with live logits for its last token, reusing the prefix it holds
    (generate() then samples at once)."""
    held = common_prefix(llm.input_ids[: llm.n_tokens], prompt)
    if held == len(prompt) == llm.n_tokens and not llm._requires_eval:
        return
    keep = min(held, len(prompt) - 1)  # at least one token is evaluated, so the logits are this prompt's
    if not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
        llm.reset()
        keep = 0
    llm.n_tokens = keep
    llm.eval(prompt[keep:])
