"""An offline generator of bAbI-style stories for tasks qa1, qa2 and qa3.

Written from the task definitions of Weston et al. (2015) with the bAbI vocabulary, so the product
can train and test without the bAbI files. A small world (people, places, objects) is simulated
while the story is written; every question is asked only when the world state answers it, and the
answer and supporting facts are read from that state, so they are correct by construction.

* qa1, single supporting fact: people move; "Where is Mary?" -> her latest move.
* qa2, two supporting facts: people also pick up and drop objects; "Where is the football?" ->
  the pickup (or drop) and the move that placed its holder.
* qa3, three supporting facts: "Where was the football before the kitchen?", asked when the
  football is now in the kitchen -> where it was before its latest journey into the kitchen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from rmt_scale.data.babi import BabiSample, format_babi_lines, parse_babi_lines
from rmt_scale.errors import DataError

PEOPLE = ("Mary", "John", "Sandra", "Daniel")
PLACES = ("bathroom", "hallway", "garden", "office", "bedroom", "kitchen")
OBJECTS = ("football", "apple", "milk")
MOVE_VERBS = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
PICK_VERBS = ("got", "picked up", "took", "grabbed")
DROP_VERBS = ("dropped", "left", "discarded", "put down")

GENERATED_TASKS = ("qa1", "qa2", "qa3")

# Story item as format_babi_lines takes it: a statement, or (question, answer, supporting ids).
_Item = str | tuple[str, str, tuple[int, ...]]


@dataclass(frozen=True)
class StoryShape:
    """How the stories of one task are laid out.

    Attributes:
        questions_per_story: Questions in each story (bAbI uses 5 for qa1-qa3).
        min_gap: Fewest statements before each question.
        max_gap: Most statements before each question, unless none is answerable yet.
        object_action_prob: Chance that a statement is a pickup or drop rather than a move.
    """

    questions_per_story: int
    min_gap: int
    max_gap: int
    object_action_prob: float


# Gaps follow the real files: about 2, 4 and 15 statements per question for qa1, qa2, qa3.
SHAPES = {
    "qa1": StoryShape(questions_per_story=5, min_gap=2, max_gap=2, object_action_prob=0.0),
    "qa2": StoryShape(questions_per_story=5, min_gap=1, max_gap=6, object_action_prob=0.45),
    "qa3": StoryShape(questions_per_story=5, min_gap=6, max_gap=22, object_action_prob=0.45),
}

# Statements written past max_gap before a story is given up as stuck (it never happens in
# practice: a move always makes a qa1 question answerable and object actions soon follow).
_MAX_EXTRA_STATEMENTS = 200


@dataclass
class _World:
    """The true state of a story being written; `*_fact` fields hold the line id that set them."""

    location: dict[str, str] = field(default_factory=dict)  # person -> place
    move_fact: dict[str, int] = field(default_factory=dict)  # person -> latest move
    holder: dict[str, str] = field(default_factory=dict)  # object -> person holding it
    lying_at: dict[str, str] = field(default_factory=dict)  # object -> place where it was dropped
    object_fact: dict[str, int] = field(default_factory=dict)  # object -> latest pickup or drop
    drop_move_fact: dict[str, int] = field(default_factory=dict)  # object -> move that led to drop
    # object -> (place before, move into that place, move into the current place) of its latest
    # journey, set when its holder moves.
    journey: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    def object_place(self, obj: str) -> str | None:
        if obj in self.holder:
            return self.location[self.holder[obj]]
        return self.lying_at.get(obj)


class _StoryWriter:
    """Writes one story, statement by statement, keeping the world state true."""

    def __init__(self, task: str, rng: random.Random) -> None:
        self.task = task
        self.rng = rng
        self.world = _World()
        self.items: list[_Item] = []

    def _next_id(self) -> int:
        return len(self.items) + 1

    def move(self) -> None:
        person = self.rng.choice(PEOPLE)
        place = self.rng.choice([p for p in PLACES if p != self.world.location.get(person)])
        line_id = self._next_id()
        world = self.world
        for obj, holder in world.holder.items():
            if holder == person:
                world.journey[obj] = (world.location[person], world.move_fact[person], line_id)
        world.location[person] = place
        world.move_fact[person] = line_id
        self.items.append(f"{person} {self.rng.choice(MOVE_VERBS)} the {place}.")

    def object_actions(self) -> list[tuple[str, str, str]]:
        """Possible ``(kind, person, object)`` actions; only people whose place is known act."""
        world = self.world
        actions = []
        for person, place in world.location.items():
            for obj in OBJECTS:
                if world.holder.get(obj) == person:
                    actions.append(("drop", person, obj))
                elif obj not in world.holder and world.lying_at.get(obj, place) == place:
                    actions.append(("pick", person, obj))
        return sorted(actions)  # dict order depends on history; sort for a stable rng draw

    def act(self, kind: str, person: str, obj: str) -> None:
        world = self.world
        there = self.rng.choice(("", " there"))
        if kind == "pick":
            world.holder[obj] = person
            world.lying_at.pop(obj, None)
            text = f"{person} {self.rng.choice(PICK_VERBS)} the {obj}{there}."
        else:
            del world.holder[obj]
            world.lying_at[obj] = world.location[person]
            world.drop_move_fact[obj] = world.move_fact[person]
            text = f"{person} {self.rng.choice(DROP_VERBS)} the {obj}{there}."
        world.object_fact[obj] = self._next_id()
        self.items.append(text)

    def statement(self, object_action_prob: float) -> None:
        if self.rng.random() < object_action_prob:
            actions = self.object_actions()
            if actions:
                self.act(*self.rng.choice(actions))
                return
        self.move()

    def questions(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """Every question the current world state answers, with answer and supporting ids."""
        world = self.world
        found = []
        if self.task == "qa1":
            for person in sorted(world.location):
                found.append((f"Where is {person}?", world.location[person],
                              (world.move_fact[person],)))
        elif self.task == "qa2":
            for obj in OBJECTS:
                place = world.object_place(obj)
                if place is None:
                    continue
                if obj in world.holder:
                    support = (world.object_fact[obj], world.move_fact[world.holder[obj]])
                else:
                    support = (world.object_fact[obj], world.drop_move_fact[obj])
                found.append((f"Where is the {obj}?", place, support))
        else:
            for obj, (before, before_fact, into_fact) in sorted(world.journey.items()):
                place = world.object_place(obj)
                found.append((f"Where was the {obj} before the {place}?", before,
                              (world.object_fact[obj], into_fact, before_fact)))
        return found

    def write(self, shape: StoryShape) -> list[_Item]:
        for _ in range(shape.questions_per_story):
            for _ in range(self.rng.randint(shape.min_gap, shape.max_gap)):
                self.statement(shape.object_action_prob)
            for _ in range(_MAX_EXTRA_STATEMENTS):
                candidates = self.questions()
                if candidates:
                    break
                self.statement(shape.object_action_prob)
            else:
                raise RuntimeError(f"{self.task} story found no answerable question")
            self.items.append(self.rng.choice(candidates))
        return self.items


def require_generator(task: str) -> None:
    """Raise unless ``task`` has a built-in generator.

    Raises:
        DataError: Naming the tasks there are and what to pass instead.
    """
    if task not in SHAPES:
        raise DataError(f"no built-in generator for {task!r} (only {', '.join(GENERATED_TASKS)}); "
                        "pass babi_dir= a directory of bAbI files (qa{N}_*_train.txt)")


def generate_babi(task: str, num_samples: int, seed: int | str = 0) -> list[BabiSample]:
    """Generate bAbI-style samples for qa1, qa2 or qa3.

    Stories are written until ``num_samples`` questions exist (the last story may be cut after
    any question). The output equals what :func:`parse_babi_file` returns for the same stories
    written as a bAbI file: the stories go through the same parser, which also checks them.

    Args:
        task: ``"qa1"``, ``"qa2"`` or ``"qa3"``.
        num_samples: Number of questions (samples) to return.
        seed: Seed of the story generator; the same seed gives the same samples.

    Raises:
        DataError: For a task without a built-in generator.
    """
    require_generator(task)
    if num_samples <= 0:
        return []
    rng = random.Random(f"{task}/{seed}")
    stories: list[list[_Item]] = []
    remaining = num_samples
    while remaining > 0:
        story = _StoryWriter(task, rng).write(SHAPES[task])
        questions = [i for i, item in enumerate(story) if not isinstance(item, str)]
        if len(questions) > remaining:
            story = story[: questions[remaining - 1] + 1]
        remaining -= min(len(questions), remaining)
        stories.append(story)
    lines = format_babi_lines(stories)
    return parse_babi_lines(lines, source=f"<generated {task} seed={seed}>", task=task)
