"""Writes pydoc_topics.jsonl: the Python reference topics that CPython ships (pydoc_data.topics, PSF license).

Real English prose that every Python install carries, so the tiny pretraining recipe learns from text,
not random tokens, without a download. Each topic is split into documents of whole paragraphs.

    python data/corpora/make_pydoc_corpus.py
    python -m data.prepare_pretraining --input data/corpora/pydoc_topics.jsonl \
        --tokenizer models/tokenizers/tiny --output-prefix data/corpora/pydoc_topics --append-eod

The second command writes pydoc_topics_text_document.{bin,idx}, which tiny_llama_pretrain trains on
(a test checks the committed pair is what it writes).
"""

import json
from pathlib import Path

from pydoc_data.topics import topics

MAX_DOCUMENT_CHARS = 2000


def documents(text: str):
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    current = ""
    for paragraph in paragraphs:
        if current and len(current) + len(paragraph) > MAX_DOCUMENT_CHARS:
            yield current
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        yield current


def main():
    out = Path(__file__).with_name("pydoc_topics.jsonl")
    with out.open("w") as f:
        for name in sorted(topics):
            for text in documents(topics[name]):
                f.write(json.dumps({"topic": name, "text": text}) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
