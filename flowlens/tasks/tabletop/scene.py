"""Tabletop scenes: objects named by colour and kind, laid out on a table, and the prompt.

The world is the table plane, ``x`` in ``[0, TABLE_SIZE[0]]`` (to the right) and ``y`` in
``[0, TABLE_SIZE[1]]`` (away from the base camera), in table units; the gripper also has a
height ``z``. A scene holds 3 or 4 objects of four kinds (bowl, plate, cube,
mug) in four colours, each about one model patch wide in the base camera. The task picks a
*source* object (cube, mug or bowl) and a *target* receptacle (plate or bowl). Every object has
its own colour, and one distractor is of the source's kind (a blue cube next to the red cube),
so the kind alone never identifies the source; the colour word does. (Scenes with same-colour
distractors were harder than a CPU-trained tiny model could learn in its budget; see
``benchmarks/train_tabletop.md``.)

Everything is a deterministic function of the seed (``numpy.random.default_rng(seed)``).

Example::

    scene = sample_scene(7)
    scene.prompt               # 'pick up the blue mug and place it on the blue bowl'
    scene.source_object.name   # 'blue mug'
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flowlens.errors import FlowlensError

TABLE_SIZE = (1.3, 1.0)  # (x extent, y extent) in table units
TABLE_RGB_JITTER = 6  # per-scene variation of the table colour, per channel
KINDS = ("bowl", "plate", "cube", "mug")
PICKABLE = ("cube", "mug", "bowl")
RECEPTACLES = ("plate", "bowl")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (235, 200, 30),
}
# Footprint radius (table units) per kind; a cube's radius is half its side.
RADIUS = {"plate": 0.19, "bowl": 0.15, "mug": 0.11, "cube": 0.10}
TEMPLATES = (
    "pick up the {source} and place it on the {target}",
    "put the {source} {prep} the {target}",
    "move the {source} to the {target}",
    "place the {source} on the {target}",
)


@dataclasses.dataclass(frozen=True)
class TableObject:
    """One object on the table.

    Attributes:
      kind: one of KINDS.
      color: one of COLORS.
      x, y: centre in table units.
    """

    kind: str
    color: str
    x: float
    y: float

    @property
    def name(self) -> str:
        """'red bowl'."""
        return f"{self.color} {self.kind}"

    @property
    def radius(self) -> float:
        return RADIUS[self.kind]

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLORS[self.color]

    def at(self, x: float, y: float) -> TableObject:
        return dataclasses.replace(self, x=float(x), y=float(y))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "color": self.color, "name": self.name, "x": self.x, "y": self.y}


@dataclasses.dataclass(frozen=True)
class Scene:
    """Objects, the task (source → target) and its prompt.

    Attributes:
      objects: the objects; indices are object ids (masks are per id).
      source: id of the object to pick.
      target: id of the receptacle.
      prompt: the instruction naming source and target by colour and kind.
      start: initial gripper position (x, y, z).
      seed: the seed the scene came from (None for hand-made scenes).
    """

    objects: tuple[TableObject, ...]
    source: int
    target: int
    prompt: str
    start: tuple[float, float, float]
    seed: int | None = None

    @property
    def source_object(self) -> TableObject:
        return self.objects[self.source]

    @property
    def target_object(self) -> TableObject:
        return self.objects[self.target]

    def with_prompt(self, source: int, target: int | None = None, template: int = 0) -> Scene:
        """The same objects with a prompt naming other objects (the scene is unchanged)."""
        target = self.target if target is None else target
        for name, i in (("source", source), ("target", target)):
            if not 0 <= i < len(self.objects):
                raise FlowlensError(f"{name}={i} is not an object id of this scene (0–{len(self.objects) - 1}).")
        prompt = make_prompt(self.objects[source], self.objects[target], template)
        return dataclasses.replace(self, source=source, target=target, prompt=prompt)

    def to_dict(self) -> dict:
        return {
            "objects": [o.to_dict() for o in self.objects],
            "source": self.source,
            "target": self.target,
            "prompt": self.prompt,
            "start": list(self.start),
            "seed": self.seed,
        }


def make_prompt(source: TableObject, target: TableObject, template: int = 0) -> str:
    """The instruction for ``source`` → ``target`` from template ``template`` (0–3)."""
    if not 0 <= template < len(TEMPLATES):
        raise FlowlensError(f"template must be 0–{len(TEMPLATES) - 1}, got {template}.")
    prep = "in" if target.kind == "bowl" else "on"
    return TEMPLATES[template].format(source=source.name, target=target.name, prep=prep)


def all_prompts() -> list[str]:
    """Every prompt the task can produce (the tokenizer's training corpus)."""
    out = []
    for sk in PICKABLE:
        for tk in RECEPTACLES:
            for sc in COLORS:
                for tc in COLORS:
                    if (sk, sc) == (tk, tc):
                        continue
                    for t in range(len(TEMPLATES)):
                        out.append(make_prompt(TableObject(sk, sc, 0, 0), TableObject(tk, tc, 0, 0), t))
    return out


def _place(rng: np.random.Generator, kinds: list[str], tries: int = 200) -> list[tuple[float, float]] | None:
    placed: list[tuple[float, float, float]] = []
    margin = 0.02
    for kind in kinds:
        r = RADIUS[kind] + (0.05 if kind == "mug" else 0.0)  # the mug's handle
        for _ in range(tries):  # rejection sampling
            x = rng.uniform(r + margin, TABLE_SIZE[0] - r - margin)
            y = rng.uniform(r + margin, TABLE_SIZE[1] - r - margin)
            if all(np.hypot(x - px, y - py) > r + pr + 0.03 for px, py, pr in placed):
                placed.append((x, y, r))
                break
        else:
            return None
    return [(x, y) for x, y, _ in placed]


def sample_scene(seed: int, *, num_objects: int | None = None) -> Scene:
    """A random scene, deterministic in ``seed``.

    Args:
      seed: any non-negative int.
      num_objects: 3 or 4 objects; None draws it from the seed. 2 gives source and target
        alone (no distractor; the first stage of the training curriculum).

    Returns:
      Scene with source, target and 1–2 distractors, the first of the source's kind, all
      objects of different colours, in random order, and a prompt from one of the TEMPLATES.
    """
    if num_objects is not None and not 2 <= num_objects <= 4:
        raise FlowlensError(
            f"num_objects must be 2, 3 or 4, got {num_objects} (2: source and target only, no distractor)."
        )
    # objects are large (a bowl is about one 14-px patch wide in the 56-px model input), so the
    # default is 3 or 4 of them; 5 still fit
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 5)) if num_objects is None else num_objects
    if n > len(COLORS):
        raise FlowlensError(f"num_objects={n} needs more than the {len(COLORS)} colours.")
    colors = [str(c) for c in rng.permutation(list(COLORS))[:n]]
    # source, target, a distractor of the source's kind, then any kinds
    kinds = [str(rng.choice(PICKABLE)), str(rng.choice(RECEPTACLES))]
    if n >= 3:
        kinds.append(kinds[0])
    kinds += [str(rng.choice(KINDS)) for _ in range(n - len(kinds))]
    specs = list(zip(kinds[:n], colors, strict=True))
    order = rng.permutation(n)
    kinds = [specs[i][0] for i in order]
    for _ in range(50):
        xy = _place(rng, kinds)
        if xy is not None:
            break
    else:  # pragma: no cover - 5 objects always fit on the table
        raise FlowlensError(f"could not place {n} objects for seed {seed}.")
    objects = tuple(TableObject(kinds[j], specs[i][1], float(xy[j][0]), float(xy[j][1])) for j, i in enumerate(order))
    source = int(np.flatnonzero(order == 0)[0])
    target = int(np.flatnonzero(order == 1)[0])
    template = int(rng.integers(len(TEMPLATES)))
    start = (
        float(rng.uniform(0.1, TABLE_SIZE[0] - 0.1)),
        float(rng.uniform(0.1, TABLE_SIZE[1] - 0.1)),
        float(rng.uniform(0.12, 0.25)),
    )
    return Scene(
        objects=objects,
        source=source,
        target=target,
        prompt=make_prompt(objects[source], objects[target], template),
        start=start,
        seed=int(seed),
    )
