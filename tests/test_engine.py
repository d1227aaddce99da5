"""The batching engine in process (app/llm/engine.py): how a new prompt is read beside a sequence that decodes,
with shared cells and with cells of its own per sequence."""

import pytest

from app.llm import ModelCache, Sequence, fit_prompt
from app.llm.engine import PREFILL_CHUNK
from config import DEFAULT_MODEL_KEY, load_settings
from tests.stack import MODEL_PATHS

pytestmark = pytest.mark.slow  # the real model, loaded by the test itself


@pytest.mark.parametrize("interactive", [True, False])
def test_a_prompt_beside_batch_work_is_read_in_bigger_steps(interactive):
    """A long prompt arrives while another job decodes. Beside an interactive job (someone watches it stream) it
    is read PREFILL_CHUNK tokens a step, so that job's next token waits for one chunk only; beside batch work, as
    many tokens a step as the batch holds."""
    settings = load_settings({**MODEL_PATHS, "SECRET_KEY": "x"})
    model = ModelCache(settings.models, capacity=1, parallel=2, state_bytes=0).get(DEFAULT_MODEL_KEY)
    steps: list[int] = []  # the tokens of each llama_decode
    step = model.engine._step
    model.engine._step = lambda: (step(), steps.append(model.engine.batch.n_tokens))

    def sequence(text: str, max_tokens: int) -> Sequence:
        params = settings.params_for(DEFAULT_MODEL_KEY, {"temperature": 0, "max_tokens": max_tokens})
        fitted = fit_prompt(model, None, [], text, max_tokens, settings.safety_margin)
        return Sequence(fitted.tokens, params, model.stop_strings(fitted.messages), interactive=interactive)

    try:
        decoding = model.generate(sequence("Tell me a long story about a lighthouse keeper.", 300))
        assert next(piece for piece in decoding if piece)
        steps.clear()  # from here on, the other job decodes a token a step
        arriving = sequence("Summarise this text in one word. " + "The river runs to the sea. " * 60, 1)
        assert len(arriving.prompt) > 2 * PREFILL_CHUNK
        assert "".join(model.generate(arriving))
        decoding.close()
    finally:
        model.close()
    read = [tokens - 1 for tokens in steps if tokens > 1]  # each step's prompt tokens, beside the decoding one
    assert sum(read) >= len(arriving.prompt)
    if interactive:
        assert max(read) == PREFILL_CHUNK
    else:
        assert max(read) >= len(arriving.prompt) - 1  # the whole prompt (its last token: at most one more step)


def test_with_cells_of_its_own_a_prompt_chunk_is_read_alone_between_decoding_steps():
    """LLM_PARALLEL_EXACT: a long prompt arrives while another job decodes. No step mixes the two (llama.cpp would
    compute part of the chunk in a piece of one token, rounded otherwise: docs/batching.md); the prompt is read in
    chunks cut as one at a time cuts them (`n_batch` tokens), and the decoding job gets a token between chunks."""
    settings = load_settings({**MODEL_PATHS, "SECRET_KEY": "x"})
    model = ModelCache(settings.models, capacity=1, parallel=2, state_bytes=0, exact=True).get(DEFAULT_MODEL_KEY)
    engine = model.engine
    steps: list[list[int]] = []  # the sequence id of each token of each llama_decode
    step = engine._step
    engine._step = lambda: (step(), steps.append([engine.batch.seq_id[i][0] for i in range(engine.batch.n_tokens)]))

    def sequence(text: str, max_tokens: int) -> Sequence:
        params = settings.params_for(DEFAULT_MODEL_KEY, {"temperature": 0, "max_tokens": max_tokens})
        fitted = fit_prompt(model, None, [], text, max_tokens, settings.safety_margin)
        return Sequence(fitted.tokens, params, model.stop_strings(fitted.messages))

    try:
        decoding = model.generate(sequence("Tell me a long story about a lighthouse keeper.", 300))
        assert next(piece for piece in decoding if piece)
        steps.clear()  # from here on, the other job decodes a token a step
        arriving = sequence("Summarise this text in one word. " + "The river runs to the sea. " * 90, 1)
        assert len(arriving.prompt) > engine.n_batch
        assert "".join(model.generate(arriving))
        decoding.close()
    finally:
        model.close()
    assert all(len(set(ids)) == 1 for ids in steps)  # never two sequences in one step
    chunks = [index for index, ids in enumerate(steps) if len(ids) > 1]
    assert [len(steps[index]) for index in chunks] == [engine.n_batch, len(arriving.prompt) - engine.n_batch]
    assert chunks[1] - chunks[0] == 2  # one decoding step between the two chunks
