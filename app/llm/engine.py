"""Continuous batching: one llama context per loaded model whose sequences (up to its `parallel`) are decoded
together, one `llama_decode` per step. Each step decodes the next token of every running sequence plus a chunk
of a new prompt (chunked prefill, as llama-server does): a bounded one while someone watches a sequence stream, so a
long prompt never stalls them, else as much as the batch holds; sequences join and leave between steps. Only the
engine's own thread touches the context; jobs talk to it through `Sequence`.

By default the KV cells are unified: the sequences share the model's `n_ctx` cells, and a sequence is admitted only
while the cells every running sequence may still need (its prompt plus its `max_tokens`) fit, first come first
served, so a decode never runs out of room and one job alone always has the whole context
(`LLM_PARALLEL_EXACT` gives each sequence cells of its own instead, and reads each prompt chunk in a step of its
own, so each sequence is computed as with one sequence: app/llm/models.py, `shared_context`).
"""

import codecs
import ctypes
import logging
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from app.llm import grammar
from app.llm.settings import GenerationParams

log = logging.getLogger(__name__)

PREFILL_CHUNK = 128  # prompt tokens per step, all prompts together, while an interactive sequence decodes
QUIET = 1.0  # seconds without a token after which a waiting consumer is woken with an empty piece


@dataclass(eq=False)
class Sequence:
    """One job's generation: what the engine needs, and the pieces of text it sends back."""

    prompt: list[int]
    params: GenerationParams
    stop: list[str]
    opening: int = 0  # leading prompt tokens whose state is kept apart (a system prompt's, app/llm/state.py)
    interactive: bool = True  # someone watches it stream: prompts beside it are read a chunk at a time
    pieces: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # str; None at the end; or an exception
    cancelled: bool = False
    restored: int = 0  # prompt tokens whose cells came from a kept state
    # The engine's own:
    seq_id: int = -1
    held: list[int] = field(default_factory=list)  # the token ids whose KV cells the sequence holds, in order
    next_token: int | None = None  # sampled, not yet decoded
    generated: int = 0
    sampler: object = None
    text: "StopText | None" = None

    @property
    def reserve(self) -> int:
        return len(self.prompt) + self.params.max_tokens

    @property
    def prefilling(self) -> bool:
        return self.next_token is None and len(self.held) < len(self.prompt)


class Engine:
    """The batch of one loaded model (`app.llm.models.LoadedModel`)."""

    def __init__(self, model, parallel: int, cells: int):
        """`cells`: the KV cells the sequences share (with cells of their own, each has all of them)."""
        import llama_cpp

        self.model, self.parallel, self.cells = model, parallel, cells
        self.shared = model.llm.context_params.kv_unified or parallel == 1
        self.ctx = model.llm._ctx.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.vocab = llama_cpp.llama_model_get_vocab(model.llm._model.model)
        self.n_batch = model.llm.n_batch
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.buffer = ctypes.create_string_buffer(64)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.free = list(range(parallel))
        self.prompt_last = False  # with cells of its own per sequence: the last step read a prompt chunk alone
        self.changed = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name=f"engine-{model.key}", daemon=True)
        self.thread.start()

    def generate(self, sequence: Sequence) -> Iterator[str]:
        """Run `sequence`, yielding each piece of its text as it comes (an empty piece after QUIET seconds of
        silence, so the caller can look at its job); closing the iterator cancels it within a step."""
        with self.changed:
            if self.closed:  # unloaded between the cache handing it out and now (app/llm/models.py)
                raise RuntimeError(f"model {self.model.key} was unloaded; try again")
            self.waiting.append(sequence)
            self.changed.notify()
        try:
            while True:
                try:
                    piece = sequence.pieces.get(timeout=QUIET)
                except queue.Empty:
                    yield ""
                    continue
                if piece is None:
                    return
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
        finally:
            with self.changed:
                sequence.cancelled = True
                self.changed.notify()

    @property
    def in_use(self) -> int:
        return len(self.running)

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    def close(self) -> None:
        """End the thread (the model is being unloaded; nothing runs on it any more)."""
        import llama_cpp

        with self.changed:
            self.closed = True
            self.changed.notify()
        self.thread.join()
        llama_cpp.llama_batch_free(self.batch)

    def _loop(self) -> None:
        while True:
            try:
                with self.changed:
                    while not self.closed and not (self.running or self.waiting):
                        self.changed.wait()
                    if self.closed:
                        return
                    self._drop_cancelled()
                    self._admit()
                if self.running:
                    self._step()
            except Exception as exc:  # a model failure ends the jobs it ran, not the worker
                log.exception("model %s: a decoding step failed", self.model.key)
                for sequence in list(self.running):
                    self._end(sequence, exc)

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(sequence)
        for sequence in [s for s in self.running if s.cancelled]:
            self._free(sequence)

    def _admit(self) -> None:
        """Start waiting sequences in order while a sequence and their cells are free."""
        while self.waiting and self.free:
            sequence = self.waiting[0]
            if self.running and self.shared and sum(s.reserve for s in self.running) + sequence.reserve > self.cells:
                return  # it waits for room, and those behind it wait for it
            self.waiting.popleft()
            sequence.seq_id = self.free.pop(0)
            self.running.append(sequence)
            self._start(sequence)

    def _start(self, sequence: Sequence) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self.memory, sequence.seq_id, -1, -1)
        states = self.model.states
        restored = states.restore(self.model.key, self.ctx, sequence.seq_id, sequence.prompt) if states else 0
        if restored == len(sequence.prompt):  # the whole prompt was kept: evaluate its last token again for logits
            if not llama_cpp.llama_memory_seq_rm(self.memory, sequence.seq_id, restored - 1, -1):
                llama_cpp.llama_memory_seq_rm(self.memory, sequence.seq_id, -1, -1)
                restored = 0
            restored = max(restored - 1, 0)
        sequence.restored = restored
        sequence.held = sequence.prompt[:restored]
        sequence.sampler = sampler(self.model.llm, sequence.params)
        sequence.text = StopText(sequence.stop + sequence.params.stop)

    def _step(self) -> None:
        """One llama_decode (next tokens, then prompt chunks; with cells per sequence, one or the other); sample."""
        import llama_cpp

        self.batch.n_tokens = 0
        if self.shared:
            sampled = self._add_next_tokens()
            prefilled = self._add_prompt_chunks(sampled)
        elif self._prompt_turn():
            sampled = []
            prefilled = self._add_prompt_chunks(sampled, one=True)
        else:
            sampled, prefilled = self._add_next_tokens(), []
        code = llama_cpp.llama_decode(self.ctx, self.batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        for sequence in prefilled:
            if self.model.states is not None and len(sequence.held) in (sequence.opening, len(sequence.prompt)):
                self.model.states.save(self.model.key, self.ctx, sequence.seq_id, sequence.held)
        for sequence, index in sampled:
            token = llama_cpp.llama_sampler_sample(sequence.sampler.sampler, self.ctx, index)
            self._take(sequence, token)

    def _prompt_turn(self) -> bool:
        """With cells per sequence, whether this step reads a prompt chunk alone (beside other sequences' tokens,
        llama.cpp rounds it otherwise: docs/batching.md); in turn with decoding steps, so none waits two chunks."""
        if not any(sequence.prefilling for sequence in self.running):
            return False
        self.prompt_last = not (self.prompt_last and any(s.next_token is not None for s in self.running))
        return self.prompt_last

    def _add_next_tokens(self) -> list[tuple[Sequence, int]]:
        sampled = []
        for sequence in self.running:
            if sequence.next_token is not None:
                sampled.append((sequence, self._add(sequence, [sequence.next_token], logits=True)))
                sequence.next_token = None
        return sampled

    def _add_prompt_chunks(self, sampled: list[tuple[Sequence, int]], one: bool = False) -> list[Sequence]:
        """Add the next chunks of the prompts being read (`one`: of the first prompt only, in an otherwise empty
        batch, so cut where a worker with one sequence cuts it); a prompt read to its end joins `sampled`."""
        # Beside an interactive sequence, all prompts together get PREFILL_CHUNK tokens a step: its next token waits
        # for one chunk, however many prompts arrive. Beside batch work alone nobody watches the tokens come: a step
        # takes as much prompt as the batch holds, which reads prompts about a fifth faster (docs/batching.md).
        room = self.n_batch - self.batch.n_tokens
        budget = min(PREFILL_CHUNK, room) if any(sequence.interactive for sequence, _ in sampled) else room
        prefilled = []
        for sequence in [s for s in self.running if s.prefilling][: 1 if one else None]:
            if budget <= 0:
                break
            start = len(sequence.held)
            end = min(len(sequence.prompt), start + budget)
            if start < sequence.opening < end:
                end = sequence.opening  # the system prompt's state is kept on its own
            last = end == len(sequence.prompt)
            index = self._add(sequence, sequence.prompt[start:end], logits=last)
            budget -= end - start
            prefilled.append(sequence)
            if last:
                sampled.append((sequence, index))
        return prefilled

    def _add(self, sequence: Sequence, tokens: list[int], logits: bool) -> int:
        """Put `tokens` of `sequence` in the batch; the batch index of the last (where its logits are)."""
        batch, position = self.batch, len(sequence.held)
        for offset, token in enumerate(tokens):
            i = batch.n_tokens
            batch.token[i], batch.pos[i] = token, position + offset
            batch.n_seq_id[i], batch.seq_id[i][0] = 1, sequence.seq_id
            batch.logits[i] = logits and offset == len(tokens) - 1
            batch.n_tokens += 1
        sequence.held.extend(tokens)
        return batch.n_tokens - 1

    def _take(self, sequence: Sequence, token: int) -> None:
        """A sampled token: text for the job, or its end."""
        import llama_cpp

        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            return self._end(sequence, keep=True)
        sequence.generated += 1
        text, stopped = sequence.text.add(self._piece(token))
        if text:
            sequence.pieces.put(text)
        if stopped or sequence.generated >= sequence.params.max_tokens:
            return self._end(sequence, keep=True)
        sequence.next_token = token

    def _piece(self, token: int) -> bytes:
        import llama_cpp

        size = llama_cpp.llama_token_to_piece(self.vocab, token, self.buffer, len(self.buffer), 0, False)
        if size < 0:  # longer than the buffer: -size bytes
            self.buffer = ctypes.create_string_buffer(-size)
            return self._piece(token)
        return self.buffer.raw[:size]

    def _end(self, sequence: Sequence, failure: BaseException | None = None, keep: bool = False) -> None:
        if failure is None:
            rest = sequence.text.rest()
            if rest:
                sequence.pieces.put(rest)
        if keep and self.model.states is not None:
            # the cells after the answer: the next turn's prompt starts with them (app/llm/state.py); kept before
            # the end is told, so the next turn always finds them
            self.model.states.save(self.model.key, self.ctx, sequence.seq_id, sequence.held)
        # Freed before the end is told: whoever waited for it may use the context next (a state restored from
        # another thread, seen to crash llama.cpp when both removed cells at once).
        self._free(sequence)
        sequence.pieces.put(failure)  # None: the end

    def _free(self, sequence: Sequence) -> None:
        import llama_cpp

        if sequence in self.running:
            self.running.remove(sequence)
            llama_cpp.llama_memory_seq_rm(self.memory, sequence.seq_id, -1, -1)
            self.free.append(sequence.seq_id)


def sampler(llm, params: GenerationParams):
    """The sampler chain llama-cpp-python's `create_completion` builds for the same parameters, so a seed gives the
    same answer either way."""
    import llama_cpp
    from llama_cpp._internals import LlamaSampler
    from llama_cpp.llama_grammar import LlamaGrammar

    seed = params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED  # the default: a random one
    chain = LlamaSampler()
    chain.add_penalties(llm.n_vocab(), llm.last_n_tokens_size, params.repeat_penalty, params.frequency_penalty,
                        params.presence_penalty)
    if params.json_schema is not None:  # before the choice: only tokens the grammar allows are chosen from
        chain.add_grammar(llm._model, LlamaGrammar.from_string(grammar.check(params.json_schema, params.json_optional)))
    if params.temperature == 0:
        chain.add_greedy()
    elif params.mirostat_mode == 1:
        chain.add_mirostat(llm.n_vocab(), seed, params.mirostat_tau, params.mirostat_eta, 100)
    elif params.mirostat_mode == 2:
        chain.add_mirostat_v2(seed, params.mirostat_tau, params.mirostat_eta)
    else:
        chain.add_top_k(params.top_k)
        chain.add_typical(1.0, 1)
        chain.add_top_p(params.top_p, 1)
        chain.add_min_p(0.05, 1)
        chain.add_temp(params.temperature)
        chain.add_dist(seed)
    return chain


class StopText:
    """A sequence's text as its tokens' bytes arrive: whole UTF-8 characters only, and nothing that may be the start
    of a stop string until it is known not to be one; at a stop string, the text before it and the end."""

    def __init__(self, stop: list[str]):
        self.stop = [s for s in stop if s]
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = ""

    def add(self, data: bytes) -> tuple[str, bool]:
        text = self.held + self.decoder.decode(data)
        ends = [text.find(s) for s in self.stop if s in text]
        if ends:
            self.held = ""
            return text[: min(ends)], True
        keep = max((n for s in self.stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        self.held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep], False

    def rest(self) -> str:
        """What was held back, at an end that is not a stop string."""
        rest, self.held = self.held + self.decoder.decode(b"", final=True), ""
        return rest
