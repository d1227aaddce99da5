"""Embeddings from a loaded model: a second llama context on the same weights, made with `embeddings` on and mean
pooling, once per model on first use and kept while the model is loaded.

A context of its own rather than the engine's: the engine's context decodes with logits for sampling, in its own
thread (app/llm/engine.py), and an embedding context must be made with `embeddings` on. Contexts on one model share
its weights and nothing else, so the two may decode at the same moment; this one is used by one job at a time (its
lock), since each input is decoded alone on sequence 0 and the memory cleared between inputs.

Its batch is as large as its context: llama.cpp pools a sequence within one micro-batch, so an input is decoded whole.
"""

import ctypes
import logging
import threading

log = logging.getLogger(__name__)


class Embedder:
    """The embedding context of one loaded model (`app.llm.models.LoadedModel`)."""

    def __init__(self, model, n_ctx: int, threads: int):
        self.model, self.n_ctx, self.threads = model, n_ctx, threads
        self.lock = threading.Lock()
        self.ctx = None
        self.batch = None
        self.closed = False
        self.busy = False

    @property
    def dimensions(self) -> int:
        import llama_cpp

        return llama_cpp.llama_model_n_embd(self.model.llm.model)

    def tokens(self, text: str) -> list[int]:
        """The input as the model reads it: with its BOS token, special tokens as plain text (a client's input
        cannot end it early)."""
        return self.model.llm.tokenize(text.encode(), add_bos=True, special=False)

    def embed(self, inputs: list[list[int]], cancelled=lambda: False) -> list[list[float]] | None:
        """A unit vector per input (its tokens, each at most `n_ctx`): the mean of its tokens' last hidden states,
        L2-normalised. None when `cancelled()` turned true between inputs."""
        with self.lock:
            if self.closed:  # unloaded between the cache handing the model out and now (app/llm/models.py)
                raise RuntimeError(f"model {self.model.key} was unloaded; try again")
            self.busy = True
            try:
                self._open()
                vectors = []
                for tokens in inputs:
                    if cancelled():
                        return None
                    vectors.append(self._one(tokens))
                return vectors
            finally:
                self.busy = False

    def close(self) -> None:
        """Free the context (the model is being unloaded): after any embedding running now."""
        import llama_cpp

        with self.lock:
            self.closed = True
            if self.ctx is not None:
                llama_cpp.llama_batch_free(self.batch)
                llama_cpp.llama_free(self.ctx)
                self.ctx = self.batch = None

    def _open(self) -> None:
        import llama_cpp

        if self.ctx is not None:
            return
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = self.n_ctx
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = self.threads
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        ctx = llama_cpp.llama_init_from_model(self.model.llm.model, params)
        if not ctx:
            raise RuntimeError(f"model {self.model.key}: llama.cpp could not make an embedding context")
        self.ctx, self.batch = ctx, llama_cpp.llama_batch_init(self.n_ctx, 0, 1)
        log.info("model %s: embedding context of %s tokens made", self.model.key, self.n_ctx)

    def _one(self, tokens: list[int]) -> list[float]:
        import llama_cpp

        batch = self.batch
        for position, token in enumerate(tokens):
            batch.token[position], batch.pos[position] = token, position
            batch.n_seq_id[position], batch.seq_id[position][0] = 1, 0
            batch.logits[position] = True  # every token's output is pooled
        batch.n_tokens = len(tokens)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        code = llama_cpp.llama_decode(self.ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        pooled = llama_cpp.llama_get_embeddings_seq(self.ctx, 0)
        if not pooled:
            raise RuntimeError("llama.cpp pooled no embedding")
        vector = ctypes.cast(pooled, ctypes.POINTER(ctypes.c_float * self.dimensions)).contents[:]
        norm = sum(x * x for x in vector) ** 0.5
        return [x / norm for x in vector] if norm > 0 else vector
