"""A bounded LRU of loaded models. Loading is the only slow step, so a worker does it once per model."""

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from app.llm.settings import GenerationParams, ModelSettings, model_variable
from app.llm.prompt import build_messages
from app.llm.state import StateCache, common_prefix, evaluate

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

    def generate(self, tokens: list[int], params: GenerationParams, stop: list[str], opening: int = 0) -> Iterator[str]:
        """Yield the text of each new token. The prompt is evaluated first from the longest kept state that
        prefixes it; its state is kept for the conversation's next turn (whose prompt starts with it), and so is
        the state after the answer (the next prompt starts with that too when the answer's text tokenizes back to
        the same ids: `keep_state`, once the answer is out). The state after the first `opening` tokens (the system
        prompt's) is kept as well, so a new conversation with the same system prompt starts from there."""
        if self.states is not None:
            self.states.restore(self.key, self.llm, tokens)
            held = common_prefix(self.llm.input_ids[: self.llm.n_tokens], tokens)
            if 0 < opening < len(tokens) and held < opening:
                evaluate(self.llm, tokens[:opening])
                self.states.save(self.key, self.llm)
            evaluate(self.llm, tokens)
            self.states.save(self.key, self.llm)
        yield from self._completion(tokens, params, stop)

    @property
    def restores(self) -> int:
        """How many prompts started from a kept state so far (for /metrics)."""
        return self.states.hits if self.states is not None else 0

    def keep_state(self) -> None:
        """Keep the state after an answer (the next turn's prompt starts with it); called once the answer is out,
        because copying it takes a few ms."""
        if self.states is not None:
            self.states.save(self.key, self.llm)

    def _completion(self, tokens: list[int], params: GenerationParams, stop: list[str]) -> Iterator[str]:
        chunks = self.llm.create_completion(
            tokens,
            stream=True,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            repeat_penalty=params.repeat_penalty,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            mirostat_mode=params.mirostat_mode,
            mirostat_tau=params.mirostat_tau,
            mirostat_eta=params.mirostat_eta,
            seed=params.seed,
            stop=stop + params.stop,
        )
        for chunk in chunks:
            yield chunk["choices"][0]["text"]


class ModelCache:
    """Keeps up to `capacity` models loaded, evicting the least recently used.

    `vocab_only` caches tokenizers only (the web process uses them to reject inputs that cannot fit).
    """

    def __init__(self, models: dict[str, ModelSettings], capacity: int, vocab_only: bool = False,
                 threads: int | None = None, state_bytes: int = 0):
        self.models, self.capacity, self.vocab_only = models, capacity, vocab_only
        self.states = StateCache(state_bytes) if state_bytes and not vocab_only else None
        self.threads = threads or os.cpu_count()
        self.loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self.loads = 0
        self.lock = threading.Lock()

    def get(self, key: str) -> LoadedModel:
        with self.lock:
            if key in self.loaded:
                self.loaded.move_to_end(key)
                return self.loaded[key]
            while len(self.loaded) >= self.capacity:
                _, evicted = self.loaded.popitem(last=False)
                evicted.llm.close()
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
        return LoadedModel(key, settings, llm, format_chat, folds_system=settings.chat_format in DROPS_SYSTEM,
                           states=self.states)


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
