"""Generate the small SFT and preference example sets in this directory, deterministically.

``python -m data.sft_examples.generate`` rewrites:

* ``prompt_response.jsonl`` -- Dolly-style records (``instruction``, ``context``, ``response``,
  ``category``): arithmetic, unit conversions, capitals (some answered from a context passage), Python facts;
* ``preference_pairs.jsonl`` -- ``chosen``/``rejected`` conversations sharing the prompt, where the chosen
  answer is correct and the rejected one is wrong or unhelpful;
* ``chat.jsonl`` -- multi-turn conversations (system, user, assistant, user, assistant) whose every answer is
  ``ANSWER[value]``, a format no model has by default, so that fine-tuning on it is visible in generations;
  and ``chat_sft/`` -- the same records as ``python -m data.sft convert --input chat.jsonl --output-dir chat_sft``
  writes them (a dataset_root for the SFT recipes); ``chat_heldout.jsonl`` -- questions not in it, to test on;
* ``answers.jsonl`` -- every question of ``chat.jsonl`` with its ``ANSWER[value]`` reply as a Dolly-style
  prompt/response record: the same format to learn, without a conversation around it.

Every answer is computed or taken from the tables below, so the data is correct by construction.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240601

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Netherlands": "Amsterdam", "Belgium": "Brussels", "Austria": "Vienna", "Switzerland": "Bern",
    "Poland": "Warsaw", "Sweden": "Stockholm", "Norway": "Oslo", "Denmark": "Copenhagen", "Finland": "Helsinki",
    "Ireland": "Dublin", "Greece": "Athens", "Hungary": "Budapest", "Czechia": "Prague", "Japan": "Tokyo",
    "China": "Beijing", "South Korea": "Seoul", "India": "New Delhi", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "Indonesia": "Jakarta", "Australia": "Canberra", "New Zealand": "Wellington", "Canada": "Ottawa",
    "United States": "Washington, D.C.", "Mexico": "Mexico City", "Brazil": "Brasilia", "Argentina": "Buenos Aires",
    "Chile": "Santiago", "Peru": "Lima", "Colombia": "Bogota", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Nigeria": "Abuja", "Morocco": "Rabat", "Turkey": "Ankara", "Russia": "Moscow", "Ukraine": "Kyiv",
}

PYTHON_FACTS = [
    ("What does len([1, 2, 3]) return in Python?", "It returns 3, the number of items in the list."),
    ("Which keyword defines a function in Python?", "The def keyword, as in def greet(name): ..."),
    ("What is the result of 7 // 2 in Python?", "7 // 2 is floor division and gives 3."),
    ("What is the result of 7 % 3 in Python?", "7 % 3 is the remainder of 7 divided by 3, which is 1."),
    ("What does 2 ** 10 evaluate to in Python?", "2 ** 10 is 2 to the power 10, which is 1024."),
    ("Are Python strings mutable?", "No. Strings are immutable; methods such as upper() return a new string."),
    ("How do you get the last item of a list xs in Python?", "Use xs[-1]; negative indices count from the end."),
    ("What does list(range(3)) produce?", "It produces [0, 1, 2]; range stops before its end value."),
    ("Which Python type stores unique, unordered items?", "A set, for example {1, 2, 3}."),
    ("What does 'abc'.upper() return?", "It returns 'ABC'."),
    ("What is the value of bool('') in Python?", "False, because an empty string is falsy."),
    ("How do you open a file for reading in Python?", "Use with open(path) as f: ... which closes the file for you."),
    ("What does the strip() method of a string do?", "It returns the string without leading and trailing whitespace."),
    ("What is a dictionary in Python?", "A mapping from keys to values, written like {'a': 1, 'b': 2}."),
    ("What does sorted([3, 1, 2]) return?", "It returns a new list, [1, 2, 3]."),
    ("How do you write a comment in Python?", "Start it with #; everything after # on that line is ignored."),
    ("What does 'a,b,c'.split(',') return?", "It returns the list ['a', 'b', 'c']."),
    ("What is None in Python?", "None is the single value of NoneType, used to mean 'no value'."),
    ("What does the enumerate function yield?", "Pairs of (index, item), for example (0, 'a'), (1, 'b')."),
    ("What is the difference between a list and a tuple?", "Lists are mutable; tuples are immutable."),
    ("What does print(type(3.0)) show?", "It shows <class 'float'>."),
    ("How do you check whether a key k is in a dict d?", "Use k in d, which is True when d has the key."),
]

UNIT_CONVERSIONS = [  # (from unit, to unit, factor)
    ("kilometers", "meters", 1000), ("meters", "centimeters", 100), ("kilograms", "grams", 1000),
    ("hours", "minutes", 60), ("minutes", "seconds", 60), ("liters", "milliliters", 1000),
    ("days", "hours", 24), ("weeks", "days", 7), ("feet", "inches", 12), ("yards", "feet", 3),
]

UNHELPFUL = [
    "I don't know.",
    "That is not something I can answer.",
    "Please look it up yourself.",
    "Hard to say.",
]


def arithmetic(rng: random.Random) -> tuple[str, str, int, str]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    operator = rng.choice("+-*")
    value = {"+": a + b, "-": a - b, "*": a * b}[operator]
    symbol = {"+": "+", "-": "-", "*": "x"}[operator]
    return f"What is {a} {symbol} {b}?", f"{a} {symbol} {b} = {value}.", value, f"{a} {symbol} {b}"


def unit_conversion(rng: random.Random) -> tuple[str, str, int, str]:
    source, target, factor = rng.choice(UNIT_CONVERSIONS)
    amount = rng.randint(2, 40)
    value = amount * factor
    question = f"How many {target} are in {amount} {source}?"
    return question, f"{amount} {source} is {value} {target}, since 1 {source[:-1]} is {factor} {target}.", value, target


def temperature(rng: random.Random) -> tuple[str, str, int, str]:
    celsius = rng.choice(range(-40, 101, 5))
    fahrenheit = celsius * 9 // 5 + 32
    return (
        f"Convert {celsius} degrees Celsius to Fahrenheit.",
        f"{celsius} degrees Celsius is {fahrenheit} degrees Fahrenheit (F = C x 9/5 + 32).",
        fahrenheit,
        "degrees Fahrenheit",
    )


def dolly(instruction: str, response: str, category: str, context: str = "") -> dict:
    return {"instruction": instruction, "context": context, "response": response, "category": category}


def prompt_response_records(rng: random.Random) -> list[dict]:
    records = []
    for _ in range(110):
        question, answer, _, _ = arithmetic(rng)
        records.append(dolly(question, answer, "arithmetic"))
    for _ in range(60):
        question, answer, _, _ = unit_conversion(rng)
        records.append(dolly(question, answer, "unit_conversion"))
    for _ in range(20):
        question, answer, _, _ = temperature(rng)
        records.append(dolly(question, answer, "unit_conversion"))
    for country, capital in CAPITALS.items():
        records.append(dolly(f"What is the capital of {country}?", f"The capital of {country} is {capital}.", "open_qa"))
    for country, capital in rng.sample(sorted(CAPITALS.items()), 20):
        context = f"{capital} is the capital city of {country} and its seat of government."
        records.append(
            dolly(f"Using the passage, name the capital of {country}.", f"{capital}.", "closed_qa", context)
        )
    for question, answer in PYTHON_FACTS:
        records.append(dolly(question, answer, "python"))
    rng.shuffle(records)
    return records


def wrong_value(rng: random.Random, value: int) -> int:
    return value + rng.choice([-10, -2, -1, 1, 2, 10])


def conversation(prompt: str, answer: str, system: str | None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def preference_records(rng: random.Random) -> list[dict]:
    pairs = []
    for index in range(150):
        kind = index % 5
        if kind in (0, 1):
            question, chosen, value, label = arithmetic(rng)
            rejected = rng.choice([f"{label} = {wrong_value(rng, value)}.", rng.choice(UNHELPFUL)])
        elif kind == 2:
            question, chosen, value, target = unit_conversion(rng)
            rejected = rng.choice([f"It is {wrong_value(rng, value)} {target}.", rng.choice(UNHELPFUL)])
        elif kind == 3:
            country, capital = rng.choice(sorted(CAPITALS.items()))
            other = rng.choice([c for c in sorted(CAPITALS.values()) if c != capital])
            question, chosen = f"What is the capital of {country}?", f"The capital of {country} is {capital}."
            rejected = rng.choice([f"The capital of {country} is {other}.", rng.choice(UNHELPFUL)])
        else:
            question, chosen = rng.choice(PYTHON_FACTS)
            rejected = rng.choice(UNHELPFUL)
        system = "You are a concise, accurate assistant." if rng.random() < 0.3 else None
        pairs.append({"chosen": conversation(question, chosen, system), "rejected": conversation(question, rejected, system)})
    return pairs


CHAT_SYSTEM_PROMPTS = ("You are a concise assistant.", "You answer questions about numbers and places.")


def short_question_answer(rng: random.Random) -> tuple[str, str]:
    """A question and its bare answer value (what goes inside ANSWER[...])."""
    kind = rng.randrange(4)
    if kind == 3:
        country, capital = rng.choice(sorted(CAPITALS.items()))
        return f"What is the capital of {country}?", capital
    question, _, value, _ = (arithmetic, unit_conversion, temperature)[kind](rng)
    return question, str(value)


def chat_records(rng: random.Random, count: int) -> list[dict]:
    records = []
    for _ in range(count):
        (first, first_value), (second, second_value) = short_question_answer(rng), short_question_answer(rng)
        records.append({"messages": [
            {"role": "system", "content": rng.choice(CHAT_SYSTEM_PROMPTS)},
            {"role": "user", "content": first},
            {"role": "assistant", "content": f"ANSWER[{first_value}]"},
            {"role": "user", "content": second},
            {"role": "assistant", "content": f"ANSWER[{second_value}]"},
        ]})
    return records


def answer_records(chats: list[dict]) -> list[dict]:
    turns = [m["content"] for chat in chats for m in chat["messages"] if m["role"] in ("user", "assistant")]
    return [dolly(question, answer, "answer_format") for question, answer in zip(turns[0::2], turns[1::2])]


def heldout_questions(rng: random.Random, seen: set[str], count: int) -> list[dict]:
    questions = []
    while len(questions) < count:
        question, value = short_question_answer(rng)
        if question not in seen:
            seen.add(question)
            questions.append({"question": question, "answer": value})
    return questions


def write_chat_examples(rng: random.Random, out: Path) -> None:
    from data.sft import split_validation, write_jsonl as write_sft_jsonl

    records = chat_records(rng, 240)
    write_jsonl(out / "chat.jsonl", records)
    write_jsonl(out / "answers.jsonl", answer_records(records))
    training, validation = split_validation(records, 0.05)
    write_sft_jsonl(out / "chat_sft" / "training.jsonl", training)
    write_sft_jsonl(out / "chat_sft" / "validation.jsonl", validation)
    seen = {m["content"] for r in records for m in r["messages"] if m["role"] == "user"}
    write_jsonl(out / "chat_heldout.jsonl", heldout_questions(rng, seen, 40))


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate the shipped SFT and preference examples.")
    parser.add_argument("--output-dir", type=Path, default=HERE, help="where to write them (default: beside this file)")
    out = parser.parse_args(argv).output_dir
    (out / "chat_sft").mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    write_jsonl(out / "prompt_response.jsonl", prompt_response_records(rng))
    write_jsonl(out / "preference_pairs.jsonl", preference_records(rng))
    write_chat_examples(random.Random(SEED + 1), out)


if __name__ == "__main__":
    main()
