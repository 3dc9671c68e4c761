"""Writes the benchmark data shipped in evaluation/benchmarks/ (written for this repository).

    python -m evaluation.make_benchmarks [--out DIR]

- arithmetic.jsonl: 40 one- and two-step word problems in GSM8K's format
  ({"question", "answer": "<worked steps>\\n#### <number>"}), numbers from a fixed seed.
- facts.jsonl: 40 four-way multiple-choice questions on common knowledge
  ({"question", "choices": [4 strings], "answer": <index>}, the layout of MMLU on the Hub).
- heldout_text.jsonl: a few KB of prose written for this file, one paragraph a document ({"text"}).

Deterministic: tests/evaluation checks that the committed files equal what this writes.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent / "benchmarks"
SEED = 14
ARITHMETIC_COUNT = 40

# ---------------------------------------------------------------- arithmetic word problems
# Each template draws its numbers from `rng` and returns (question, worked steps, answer).


def buy_more_give_away(rng: random.Random):
    have, bought, gave = rng.randint(5, 30), rng.randint(2, 20), rng.randint(1, 5)
    name, thing = rng.choice(["Maya", "Tom", "Priya", "Lucas"]), rng.choice(["apples", "marbles", "stickers"])
    question = f"{name} has {have} {thing}. {name} buys {bought} more and gives {gave} to a friend. How many {thing} does {name} have now?"
    total = have + bought
    return question, f"{have} + {bought} = {total}\n{total} - {gave} = {total - gave}", total - gave


def boxes_of_items(rng: random.Random):
    boxes, per_box = rng.randint(2, 9), rng.randint(3, 12)
    question = f"A shop has {boxes} boxes of pencils with {per_box} pencils in each box. How many pencils does the shop have?"
    return question, f"{boxes} * {per_box} = {boxes * per_box}", boxes * per_box


def share_equally(rng: random.Random):
    friends, each = rng.randint(2, 8), rng.randint(2, 9)
    cookies = friends * each
    question = f"There are {cookies} cookies shared equally among {friends} friends. How many cookies does each friend get?"
    return question, f"{cookies} / {friends} = {each}", each


def price_and_change(rng: random.Random):
    count, price = rng.randint(2, 6), rng.randint(2, 9)
    paid = count * price + rng.randint(1, 20)
    cost = count * price
    question = f"Sam buys {count} notebooks at {price} dollars each and pays with {paid} dollars. How much change does Sam get?"
    return question, f"{count} * {price} = {cost}\n{paid} - {cost} = {paid - cost}", paid - cost


def pages_per_day(rng: random.Random):
    pages, days = rng.randint(10, 40), rng.randint(2, 7)
    already = rng.randint(5, 50)
    question = f"Ana had already read {already} pages of a book. Then she read {pages} pages a day for {days} days. How many pages has she read in total?"
    read = pages * days
    return question, f"{pages} * {days} = {read}\n{already} + {read} = {already + read}", already + read


def legs_on_farm(rng: random.Random):
    hens, cows = rng.randint(2, 15), rng.randint(1, 10)
    question = f"A farm has {hens} hens and {cows} cows. How many legs do the animals have together?"
    hen_legs, cow_legs = hens * 2, cows * 4
    return question, f"{hens} * 2 = {hen_legs}\n{cows} * 4 = {cow_legs}\n{hen_legs} + {cow_legs} = {hen_legs + cow_legs}", hen_legs + cow_legs


def minutes_left(rng: random.Random):
    total, done = rng.randint(30, 120), rng.randint(5, 25)
    question = f"A film lasts {total} minutes. Leo has watched {done} minutes. How many minutes are left?"
    return question, f"{total} - {done} = {total - done}", total - done


def bus_passengers(rng: random.Random):
    start, off, on = rng.randint(10, 40), rng.randint(1, 9), rng.randint(1, 15)
    question = f"A bus carries {start} passengers. At the next stop {off} get off and {on} get on. How many passengers are on the bus now?"
    after_off = start - off
    return question, f"{start} - {off} = {after_off}\n{after_off} + {on} = {after_off + on}", after_off + on


TEMPLATES = [buy_more_give_away, boxes_of_items, share_equally, price_and_change,
             pages_per_day, legs_on_farm, minutes_left, bus_passengers]


def arithmetic_problems(count: int = ARITHMETIC_COUNT, seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    problems = []
    for index in range(count):
        question, steps, answer = TEMPLATES[index % len(TEMPLATES)](rng)
        problems.append({"question": question, "answer": f"{steps}\n#### {answer}"})
    return problems


# ---------------------------------------------------------------- multiple-choice facts
# (question, correct answer, three wrong answers); the correct one's position is drawn per question.

FACTS = [
    ("What is the capital of France?", "Paris", ["Berlin", "Madrid", "Rome"]),
    ("What is the capital of Japan?", "Tokyo", ["Beijing", "Seoul", "Bangkok"]),
    ("What is the capital of Italy?", "Rome", ["Milan", "Vienna", "Athens"]),
    ("What is the capital of Canada?", "Ottawa", ["Toronto", "Vancouver", "Chicago"]),
    ("What is the capital of Egypt?", "Cairo", ["Nairobi", "Casablanca", "Lagos"]),
    ("Which planet is closest to the Sun?", "Mercury", ["Venus", "Mars", "Jupiter"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Saturn", "Neptune", "Venus"]),
    ("What is the largest planet in our solar system?", "Jupiter", ["Earth", "Mars", "Uranus"]),
    ("What gas do plants take in from the air to make food?", "carbon dioxide", ["oxygen", "helium", "nitrogen"]),
    ("What is the chemical symbol for water?", "H2O", ["CO2", "NaCl", "O3"]),
    ("At what temperature in Celsius does water freeze?", "0 degrees", ["10 degrees", "50 degrees", "100 degrees"]),
    ("At what temperature in Celsius does water boil at sea level?", "100 degrees", ["0 degrees", "37 degrees", "212 degrees"]),
    ("How many days are there in a week?", "seven", ["five", "six", "ten"]),
    ("How many months are there in a year?", "twelve", ["ten", "eleven", "fourteen"]),
    ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
    ("How many sides does a triangle have?", "three", ["four", "five", "six"]),
    ("What is the largest ocean on Earth?", "the Pacific Ocean", ["the Atlantic Ocean", "the Indian Ocean", "the Arctic Ocean"]),
    ("What is the longest river in Africa?", "the Nile", ["the Amazon", "the Danube", "the Thames"]),
    ("Which animal is known as the king of the jungle?", "the lion", ["the rabbit", "the sheep", "the goat"]),
    ("Which animal is the largest mammal?", "the blue whale", ["the mouse", "the cat", "the horse"]),
    ("What do bees make?", "honey", ["milk", "silk", "wool"]),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare", ["Charles Dickens", "Jane Austen", "Mark Twain"]),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", ["Pablo Picasso", "Vincent van Gogh", "Claude Monet"]),
    ("Which language is mainly spoken in Brazil?", "Portuguese", ["Spanish", "French", "German"]),
    ("What is the main language spoken in Mexico?", "Spanish", ["English", "Italian", "Russian"]),
    ("What is the hardest natural substance?", "diamond", ["gold", "iron", "glass"]),
    ("Which organ pumps blood around the body?", "the heart", ["the lungs", "the liver", "the stomach"]),
    ("Which organ do humans use to breathe?", "the lungs", ["the heart", "the kidneys", "the bones"]),
    ("What is the opposite of hot?", "cold", ["warm", "big", "fast"]),
    ("What color do you get by mixing blue and yellow?", "green", ["purple", "orange", "red"]),
    ("What is the color of a clear daytime sky?", "blue", ["green", "red", "brown"]),
    ("Which season comes after winter?", "spring", ["autumn", "summer", "winter"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "smoke"]),
    ("What do cows drink?", "water", ["milk", "juice", "coffee"]),
    ("Which instrument has black and white keys?", "the piano", ["the drum", "the flute", "the trumpet"]),
    ("How many hours are there in a day?", "24", ["12", "36", "60"]),
    ("What is 5 plus 3?", "8", ["7", "9", "15"]),
    ("Which shape has four equal sides and four right angles?", "a square", ["a circle", "a triangle", "an oval"]),
    ("What is the currency of the United States?", "the dollar", ["the euro", "the yen", "the rupee"]),
    ("Which star is at the center of our solar system?", "the Sun", ["the Moon", "Sirius", "Polaris"]),
]


def multiple_choice_facts(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for question, correct, wrong in FACTS:
        position = rng.randrange(4)
        choices = list(wrong)
        choices.insert(position, correct)
        items.append({"question": question, "choices": choices, "answer": position})
    return items


# ---------------------------------------------------------------- held-out prose (written for this file)

HELDOUT_PARAGRAPHS = [
    "The lighthouse on the northern cape was built of grey stone carried up from the beach by hand. "
    "For ninety years a keeper climbed its spiral stairs every evening to light the lamp, wind the clockwork "
    "that turned the lens, and write the weather in a thick ledger. The ledger survives: it records storms, "
    "ships that passed too close to the rocks, and the winter when the sea froze far enough out that a fox "
    "walked across the bay.",
    "Bread needs only flour, water, salt and yeast, yet bakers argue about it endlessly. A wetter dough gives "
    "a more open crumb but is harder to shape. A long, cool rise lets the yeast and bacteria develop flavour, "
    "while a warm kitchen hurries the dough and leaves it bland. Most bakers agree on one thing: the loaf "
    "should cool completely before it is cut, because the inside is still cooking when it leaves the oven.",
    "Rain that falls on a hillside does not simply run downhill. Some of it soaks into the soil and is taken "
    "up by roots, some evaporates from leaves on the next sunny morning, and some sinks slowly through cracks "
    "in the rock until it reaches a spring many kilometres away. A drop of water can spend a few hours in a "
    "puddle or thousands of years underground before it returns to the sea.",
    "The town library opened its doors in a former railway office. The ticket counter became the lending desk, "
    "and the waiting room, with its long wooden benches, became the reading room. Children liked the old "
    "timetables pinned to the walls and would pretend to catch trains to cities they had only read about. "
    "When the new building was finished, the librarians kept one bench and one timetable for the entrance hall.",
    "Learning to ride a bicycle is mostly a matter of trusting speed. At walking pace the bicycle wobbles and "
    "falls; a little faster, the wheels steady themselves and small turns of the handlebars keep it upright. "
    "Parents who run alongside holding the saddle often let go without saying so, and the child discovers "
    "only at the end of the street that nobody has been holding on for some time.",
    "A vegetable garden teaches patience. Carrots take months to grow and show nothing above the ground but "
    "feathery leaves. Beans climb a little higher every day, and tomatoes stay stubbornly green until, in the "
    "space of one warm week, they all ripen at once. The gardener then has more tomatoes than the family can "
    "eat and begins leaving bags of them on the neighbours' doorsteps.",
    "Old maps are full of confident mistakes. Mapmakers drew rivers that flowed into lakes that did not exist, "
    "mountains in the wrong place, and coastlines copied from earlier maps that were themselves guesses. "
    "Travellers who trusted them sometimes walked for days toward a pass that was not there. Each correction "
    "was paid for by someone who went to look, came back, and wrote down what they had actually seen.",
    "When the power failed on a winter evening, the street became quiet in a way nobody expected. Without the "
    "hum of refrigerators and the glow of screens, families lit candles and talked. Someone found a deck of "
    "cards, someone else a guitar with one missing string. When the lights came back two hours later, several "
    "people admitted that they had been a little sorry to see them.",
]


def heldout_text() -> list[dict]:
    return [{"text": paragraph} for paragraph in HELDOUT_PARAGRAPHS]


# ---------------------------------------------------------------- writing

SHIPPED_DATA = {
    "arithmetic.jsonl": arithmetic_problems,
    "facts.jsonl": multiple_choice_facts,
    "heldout_text.jsonl": heldout_text,
}


def jsonl_text(records: list[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def write_benchmarks(out_dir: Path = BENCHMARKS_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, make_records in SHIPPED_DATA.items():
        path = out_dir / file_name
        path.write_text(jsonl_text(make_records()))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BENCHMARKS_DIR, help="folder to write (default: evaluation/benchmarks)")
    args = parser.parse_args(argv)
    for path in write_benchmarks(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
