"""A quick look at what a model says: one prompt, greedy, chat formatted for instruct models.

Goes through the same HFLM as the benchmarks, so the prompt is formatted exactly as there.
"""

from __future__ import annotations

from evaluation.engine import Settings, go_offline, load_lm, log, wants_chat_template
from evaluation.models import ModelSource, hf_folder


def generate(source: ModelSource, prompt: str, max_new_tokens: int = 128, settings: Settings | None = None) -> str:
    from lm_eval.api.instance import Instance

    settings = settings or Settings()
    go_offline()
    with hf_folder(source) as hf_dir:
        lm = load_lm(hf_dir, settings)
        chat = wants_chat_template(lm, settings.chat_template)
        context = lm.apply_chat_template([{"role": "user", "content": prompt}]) if chat else prompt
        log(f"chat template {'applied' if chat else 'not applied'}; up to {max_new_tokens} new tokens")
        request = Instance("generate_until", {}, (context, {"until": [], "max_gen_toks": max_new_tokens, "do_sample": False}), 0)
        (answer,) = lm.generate_until([request], disable_tqdm=True)
    return answer
