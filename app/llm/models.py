"""A bounded LRU of loaded models. Loading is the only slow step, so a worker does it once per model; each loaded
model has one llama context, shared by its sequences (app/llm/engine.py), and another for embeddings, made on first
use (app/llm/embedding.py)."""

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from app.llm.settings import GenerationParams, ModelSettings, model_variable
from app.llm.prompt import build_messages
from app.llm.embedding import Embedder
from app.llm.engine import Engine, Sequence
from app.llm.state import StateCache, common_prefix

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The GGUF could not be loaded; retrying will not help."""


@dataclass
class LoadedModel:
    key: str
    settings: ModelSettings
    llm: "Llama"  # noqa: F821  (llama_cpp is imported lazily: the web process never needs the weights)
    format_chat: Callable  # messages -> llama_cpp ChatFormatterResponse
    folds_system: bool  # the chat format drops system messages, so we fold them into the first user turn
    states: StateCache | None = None  # the worker's per-conversation KV states (None: tokenizers, or turned off)
    engine: Engine | None = None  # None in the web process, which only tokenizes
    embedder: Embedder | None = None  # likewise

    def tokenize(self, messages: list[dict]) -> list[int]:
        response = self.format_chat(messages=messages)
        added = getattr(response, "added_special", False)
        return self.llm.tokenize(response.prompt.encode(), add_bos=not added, special=True)

    def stop_strings(self, messages: list[dict]) -> list[str]:
        stop = self.format_chat(messages=messages).stop or []
        return [stop] if isinstance(stop, str) else list(stop)

    def opening(self, system_prompt: str | None, tokens: list[int]) -> int:
        """How many leading `tokens` every conversation with this system prompt starts with (0: no system prompt)."""
        if not system_prompt:
            return 0
        alone = self.tokenize(build_messages(system_prompt, [], "", self.folds_system))
        return common_prefix(alone, tokens)

    def generate(self, sequence: Sequence) -> Iterator[str]:
        """Yield the text of each new token of `sequence` (and an empty piece now and then while it waits; closing
        the iterator ends it). The prompt is evaluated from the longest kept state that prefixes it; the state after
        the first `opening` tokens (the system prompt's) is kept, so a new conversation with the same system prompt
        starts from there, and so is the state after the answer (the conversation's next prompt starts with it)."""
        return self.engine.generate(sequence)

    @property
    def restores(self) -> int:
        """How many prompts started from a kept state so far (for /metrics)."""
        return self.states.hits if self.states is not None else 0

    @property
    def busy(self) -> bool:
        """Jobs are running on it: it is not unloaded under them."""
        return bool(self.engine and self.engine.busy) or bool(self.embedder and self.embedder.busy)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        if self.embedder is not None:
            self.embedder.close()
        self.llm.close()


class ModelCache:
    """Keeps up to `capacity` models loaded, evicting the least recently used.

    `vocab_only` caches tokenizers only (the web process uses them to reject inputs that cannot fit).
    """

    def __init__(self, models: dict[str, ModelSettings], capacity: int, vocab_only: bool = False,
                 threads: int | None = None, state_bytes: int = 0, parallel: int = 1, exact: bool = False):
        self.models, self.capacity, self.vocab_only = models, capacity, vocab_only
        self.parallel, self.exact = parallel, exact
        self.states = StateCache(state_bytes) if state_bytes and not vocab_only else None
        self.threads = threads or os.cpu_count()
        self.loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self.loads = 0
        self.lock = threading.Lock()

    def close(self) -> None:
        """Unload every model, each engine's thread ended first: at a worker's exit, the interpreter would otherwise
        free the models in any order, under a decoding thread still running (a segfault at exit, seen once)."""
        with self.lock:
            while self.loaded:
                self.loaded.popitem()[1].close()

    def parallel_of(self, key: str) -> int:
        """How many sequences model `key` decodes together (1 for tokenizers)."""
        return 1 if self.vocab_only else self.models[key].parallel or self.parallel

    def get(self, key: str) -> LoadedModel:
        with self.lock:
            if key in self.loaded:
                self.loaded.move_to_end(key)
                return self.loaded[key]
            # A model with jobs running is never unloaded under them: then one more model stays loaded a while.
            idle = [loaded for loaded in self.loaded.values() if not loaded.busy]
            for evicted in idle[: max(len(self.loaded) + 1 - self.capacity, 0)]:
                del self.loaded[evicted.key]
                evicted.close()
                if self.states is not None:
                    self.states.forget(evicted.key)
                log.info("unloaded model %s", evicted.key)
            self.loaded[key] = self._load(key)
            return self.loaded[key]

    def _load(self, key: str) -> LoadedModel:
        from llama_cpp import Llama

        settings = self.models[key]
        threads = settings.n_threads or self.threads
        started = time.perf_counter()
        try:
            llm = Llama(
                model_path=str(settings.path),
                n_ctx=settings.n_ctx,
                n_batch=settings.n_batch,
                n_threads=threads,
                n_threads_batch=threads,  # llama-cpp-python would use every CPU for prompts otherwise
                vocab_only=self.vocab_only,
                verbose=False,
            )
        except (ValueError, OSError, RuntimeError) as exc:
            # The path and llama.cpp's reason go to the server log only: clients never see the server's files.
            log.error("model %s could not be loaded from %s: %s", key, settings.path, exc)
            raise ModelLoadError(f"model '{key}' could not be loaded; the server log says why") from exc
        self.loads += 1
        what = "tokenizer" if self.vocab_only else "model"
        log.info("loaded %s %s from %s in %.2fs", what, key, settings.path, time.perf_counter() - started)
        format_chat = chat_formatter(key, settings.chat_format, llm)
        model = LoadedModel(key, settings, llm, format_chat, folds_system=settings.chat_format in DROPS_SYSTEM,
                            states=self.states)
        if not self.vocab_only:
            parallel = shared_context(llm, self.parallel_of(key), self.exact)
            model.engine = Engine(model, parallel, cells=settings.n_ctx)
            model.embedder = Embedder(model, settings.n_ctx, threads)
        return model


def shared_context(llm, parallel: int, exact: bool) -> int:
    """Give `llm` a context of `parallel` sequences instead of the one-sequence context llama-cpp-python made (it
    has no parameter for this); returns `parallel`. By default the sequences share the model's `n_ctx` cells
    (unified KV: one job alone has the whole context, and memory stays that of one sequence), which interleaves
    their cells, and attention is flash attention (it skips the cells of other sequences, where the default kernel
    computes them all and masks them: docs/batching.md), so a greedy answer's rounding can differ from one at a time
    (`parallel` 1: llama-cpp-python's default attention). `exact` gives each sequence `n_ctx`
    cells of its own and attention without flash attention (the engine then reads each prompt chunk alone: greedy
    answers are those of one at a time wherever the model's kernels round a step of several tokens as one of one),
    for `parallel` times the KV memory (docs/batching.md)."""
    import llama_cpp
    from llama_cpp._internals import LlamaContext

    if parallel > 1:
        params = llm.context_params
        params.n_seq_max, params.kv_unified = parallel, not exact
        if exact:
            params.n_ctx, params.flash_attn_type = params.n_ctx * parallel, llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        else:  # flash attention skips the cells other sequences hold: a step of four costs less (docs/batching.md)
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        llm._ctx.close()  # freed before the new one is made: never two caches at once
        llm._ctx = llm._stack.enter_context(contextlib.closing(LlamaContext(model=llm._model, params=params,
                                                                            verbose=False)))
    return parallel


# Named llama-cpp-python chat formats that silently discard system messages.
DROPS_SYSTEM = {"gemma"}


def chat_formatter(key: str, chat_format: str | None, llm) -> Callable:
    """The named llama-cpp-python format, else the GGUF's own Jinja template (rendered in its sandbox)."""
    from llama_cpp import llama_chat_format

    if chat_format:
        for name in (chat_format.replace("-", "_"), chat_format.replace("-", "")):
            formatter = getattr(llama_chat_format, f"format_{name}", None)
            if formatter:
                return formatter
        raise ModelLoadError(f"model '{key}': unknown chat_format '{chat_format}'")
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ModelLoadError(f"model '{key}' has no chat template in its GGUF: set its chat format, e.g. "
                             f"{model_variable(key, 'CHAT_FORMAT')}=chatml (or 'chat_format' in the config file)")
    eos, bos = llm.token_eos(), llm.token_bos()
    return llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos],
    )
