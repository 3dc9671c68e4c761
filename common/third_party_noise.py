"""Third-party warnings that every command would print on every run and that no user can act on
(deprecations inside NeMo and megatron-core, optional NeMo modules we do not use, Transformer
Engine being absent on a CPU machine). Named one by one, so anything else, errors above all, still shows."""

import functools
import logging
import warnings

# (category, start of the message): Python warnings raised while NeMo and megatron-core import.
WARNINGS = (
    (FutureWarning, "The pynvml package is deprecated"),
    (UserWarning, "Transformer Engine and Apex are not installed"),
    (UserWarning, "Failed to create unified memory mempool"),
)

# logger name: parts of the warning messages it logs that are noise.
LOG_MESSAGES = {
    "megatron.core.utils": ("has reached end of life",),
    "nemo_logger": ("The deploy module could not be imported", "The evaluate module could not be imported"),
    "nemo.collections.llm.gpt.model.megatron.hyena.hyena_mixer": ("transformer_engine not installed",),
    "nv_one_logger.api.config": ("OneLogger: Setting error_handling_strategy",),
    "nv_one_logger.training_telemetry.api.training_telemetry_provider": ("No exporters were provided",),
}


class _DropWarnings(logging.Filter):
    def __init__(self, parts: tuple[str, ...]):
        super().__init__()
        self.parts = parts

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            return True
        text = record.getMessage()
        return not any(part in text for part in self.parts)


@functools.cache  # installed once per process, however many commands parse arguments
def silence() -> None:
    """Installs the filters; call before NeMo or megatron-core is imported."""
    for category, start in WARNINGS:
        warnings.filterwarnings("ignore", message=start, category=category)
    for name, parts in LOG_MESSAGES.items():
        logging.getLogger(name).addFilter(_DropWarnings(parts))
