"""Attributes that make two listings different products, read from titles with data-file vocabularies.

Text similarity cannot see that a magenta cartridge is not the yellow one, that an upgrade is
not the full licence, or that a case for an iPod is not the iPod: the titles share almost every
word. What tells them apart is a small set of attribute kinds (colour, edition, platform,
measures with units, condition, bundle and accessory markers, maker, version), each named by a
short vocabulary. The vocabularies are data files in ``core/vocabulary`` that a user extends
without touching code (see its README), so no rule here mentions a product, shop or data set.

Two kinds of disagreement block an automatic accept:

* **both-sided** attributes (colour, edition, platform, named size, measures, version, year)
  conflict only when both listings state one and they share no value: catalogs often omit them.
* **one-sided** markers (upgrade, academic, refurbished, compatible, bundle, kit, accessory kind,
  a book about the product) conflict when one listing has one the other lacks, because their
  presence alone changes what the product is.

Every scan here is a single pass over a bounded prefix of the text (linear time, no regex that
can backtrack), because a description is user input of any length.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from matching_pipeline.core.normalize import fold_unicode

VOCABULARY_DIR = Path(__file__).parent / "vocabulary"

MAX_ATTRIBUTE_CHARS = 2_000
"""Characters of a title read for attributes. Titles are far shorter; a pasted essay is cut so
extraction stays bounded whatever the input."""

MAKER_WINDOW = 3
"""A maker named in a title leads it ("Sony Cyber-shot ..."); only its first words are read, so a
maker mentioned later ("... for Canon cameras") is not taken for the product's own."""

BOTH_SIDED: tuple[str, ...] = ("colours", "editions", "platforms", "named_sizes")
ONE_SIDED: tuple[str, ...] = ("edition_markers", "conditions", "bundles", "publications")
PHRASE_FILES: tuple[str, ...] = (*BOTH_SIDED, *ONE_SIDED, "accessories", "not_attributes")
_LABELS = {
    "colours": "colour",
    "editions": "edition",
    "platforms": "platform",
    "named_sizes": "size",
    "edition_markers": "edition",
    "conditions": "condition",
    "bundles": "bundle",
    "publications": "publication",
}

MEASURE_TOLERANCE = 0.02
"""Relative difference under which two measures of a dimension agree (6 ft and 1.8 m do)."""
LENGTH_TOLERANCE_M = 0.0127
"""Half an inch: a 31.5in panel is sold as a 32in TV."""

_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_INCH_MARK = re.compile(r"(?<=\d) ?(?:\"|''|\u201d|\u2033)")
_NUMBER_UNIT = re.compile(r"(\d+(?:\.\d+)?)([a-z]+)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_INCLUDES = frozenset({"with", "w", "and", "plus", "includes", "including", "incl", "featuring"})
"""Words after which an accessory is part of the package, not the product's kind."""
_ROMAN = re.compile(r"(?<![A-Za-z0-9])(VIII|VII|VI|IX|IV|XII|XI|III|II)(?![A-Za-z0-9])")
ROMAN_SEQUELS = {"II": 2, "III": 3, "IV": 4, "VI": 6, "VII": 7, "VIII": 8, "IX": 9, "XI": 11, "XII": 12}
_COMPATIBILITY_WORDS = frozenset({"for", "fits", "compatible", "replaces"})
_PACK_WORDS = frozenset({"pack", "pk", "count", "ct", "pcs", "packs", "set", "sets"})
_NOT_A_PLAIN_NUMBER_BEFORE = frozenset({"x", "of", "by", "no", "number", "version", "ver", "v", "gen", "mark", "mk", "series"})


def _lines(path: Path) -> Iterable[str]:
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            yield line


def _words(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(fold_unicode(text).lower()))


@dataclass(frozen=True)
class Measure:
    dimension: str
    value: float
    """In the dimension's base unit (metres, GB, kg, litres...)."""


@dataclass
class Vocabulary:
    """Every word list the attribute checks use, loaded from ``core/vocabulary`` and extra folders."""

    phrases: dict[tuple[str, ...], list[tuple[str, str]]] = field(default_factory=dict)
    """Phrase (as words) -> every (category, canonical value) it names."""
    units: dict[tuple[str, ...], tuple[str, float]] = field(default_factory=dict)
    makers: dict[tuple[str, ...], str] = field(default_factory=dict)
    """Maker name or alias (as words, suffixes dropped) -> canonical maker."""
    maker_suffixes: frozenset[str] = frozenset()
    _taught: set[str] = field(default_factory=set)
    """Raw names already taught: every block of a run teaches its catalog's makers again."""

    @classmethod
    def load(cls, *extra_dirs: Path | str | None) -> Vocabulary:
        """The packaged vocabularies plus same-named files in each of ``extra_dirs``."""
        vocabulary = cls()
        for folder in (VOCABULARY_DIR, *(Path(d) for d in extra_dirs if d)):
            vocabulary._read(folder)
        return vocabulary

    def _read(self, folder: Path) -> None:
        if folder != VOCABULARY_DIR and not folder.is_dir():
            raise ValueError(f"vocabulary folder {folder} does not exist")
        suffixes = folder / "maker_suffixes.txt"
        if suffixes.exists():
            self.maker_suffixes = self.maker_suffixes | {w for line in _lines(suffixes) for w in _words(line)}
        for category in PHRASE_FILES:
            path = folder / f"{category}.txt"
            for canonical, aliases in _entries(path):
                for phrase in (canonical, *aliases):
                    words = _words(phrase)
                    if words and (category, canonical) not in self.phrases.get(words, []):
                        self.phrases.setdefault(words, []).append((category, canonical))
        for canonical, aliases in _entries(folder / "units.txt"):
            dimension, _, factor = aliases[0].rpartition(" ") if aliases else ("", "", "")
            if not dimension:
                raise ValueError(f"{folder / 'units.txt'}: {canonical!r} needs 'dimension factor'")
            self.units[_words(canonical)] = (dimension, float(factor))
        for canonical, aliases in _entries(folder / "makers.txt"):
            self.add_makers([canonical, *aliases], canonical=canonical)

    def add_makers(self, names: Iterable[str], canonical: str | None = None) -> None:
        """Teach the vocabulary maker names (a catalog's or item list's own manufacturer values)."""
        target = " ".join(self.maker_words(canonical)) if canonical else None
        for name in names:
            if canonical is None:
                if name in self._taught:
                    continue
                self._taught.add(name)
            words = self.maker_words(name)
            if words and len(words) <= MAKER_WINDOW and words not in self.makers:
                self.makers[words] = target or " ".join(words)

    def maker_words(self, name: str) -> tuple[str, ...]:
        return tuple(w for w in _words(name) if w not in self.maker_suffixes)

    def canonical_maker(self, name: str | None) -> str | None:
        """The maker a manufacturer field names, as comparable words; None when it names none."""
        if not name:
            return None
        words = self.maker_words(name)
        if not words:
            return None
        for size in range(min(len(words), MAKER_WINDOW), 0, -1):
            known = self.makers.get(words[:size])
            if known:
                return known
        return " ".join(words)

    @cached_property
    def longest_phrase(self) -> int:
        return max((len(p) for p in self.phrases), default=1)

    @cached_property
    def first_words(self) -> frozenset[str]:
        """Words a phrase can start with, plurals included: the scan's fast path skips the rest."""
        firsts = {phrase[0] for phrase in self.phrases}
        return frozenset(firsts | {f"{w}s" for w in firsts})

    @cached_property
    def longest_unit(self) -> int:
        return max((len(u) for u in self.units), default=1)


def _entries(path: Path) -> Iterable[tuple[str, list[str]]]:
    if not path.exists():
        return
    for line in _lines(path):
        canonical, _, rest = line.partition(":")
        yield canonical.strip(), [a.strip() for a in rest.split(",") if a.strip()]


@dataclass(frozen=True)
class Attributes:
    """What a title states about variant and kind, as comparable values."""

    values: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Both-sided and one-sided categories -> canonical values found."""
    measures: frozenset[Measure] = frozenset()
    years: frozenset[str] = frozenset()
    releases: frozenset[str] = frozenset()
    """Decimal release numbers not followed by a unit ("Acrobat 7.0", "USB 2.0")."""
    sequels: frozenset[int] = frozenset()
    """Upper-case Roman numerals standing alone ("Rebel XT II"): a sequel or generation."""
    numbers: frozenset[str] = frozenset()
    """Plain whole numbers below 100 that measure nothing ("HP 56", "Sims 2")."""
    lead: tuple[str, ...] = ()
    """The title's first words, where its maker stands (see :func:`title_maker`). Kept as words,
    not as a maker, so makers learnt later from manufacturer fields apply to cached titles too."""
    for_clause: tuple[str, ...] = ()
    """Words after "for", "fits" or "compatible with": what an accessory belongs to."""

    def get(self, category: str) -> frozenset[str]:
        return self.values.get(category, frozenset())


def read_attributes(text: str, vocabulary: Vocabulary) -> Attributes:
    """One linear pass over the title's words: phrases longest first, numbers with their units."""
    original = fold_unicode((text or "")[:MAX_ATTRIBUTE_CHARS])
    lowered = _INCH_MARK.sub(" in ", original).lower()
    spans = list(_TOKEN.finditer(lowered))
    words = [m.group() for m in spans]
    found: dict[str, set[str]] = {}
    measures: set[Measure] = set()
    years: set[str] = set()
    releases: set[str] = set()
    numbers: set[str] = set()
    for_clause: list[str] = []
    in_for_clause = included = False
    i = 0
    while i < len(words):
        word = words[i]
        if in_for_clause:
            for_clause.append(word)
        elif word in _COMPATIBILITY_WORDS and not _compatible_as_condition(words, i):
            in_for_clause = True
        included = included or word in _INCLUDES
        if not word[0].isdigit() and word not in vocabulary.first_words:
            i += 1  # most words of a title name nothing: one set look-up and on
            continue
        number, unit_words, used = _measure_at(words, i, vocabulary) if word[0].isdigit() else (None, (), 1)
        if number is not None and unit_words:
            dimension, factor = vocabulary.units[unit_words]
            measures.add(Measure(dimension, round(float(number) * factor, 9)))
            i += used
            continue
        if number is not None and _NUMBER.fullmatch(word):
            if _names_the_product(lowered, spans, i, vocabulary):
                _plain_number(word, words, i, years, releases, numbers)
            i += 1
            continue
        size, named = _phrase_at(words, i, vocabulary)
        for category, canonical in named:
            if category == "conditions" and canonical == "compatible" and not _compatible_as_condition(words, i):
                continue
            if category == "accessories" and included:
                category = "included_accessories"  # "TV with wall mount": a feature, not the product's kind
            found.setdefault(category, set()).add(canonical)
        i += size
    found.pop("not_attributes", None)
    return Attributes(
        values={k: frozenset(v) for k, v in found.items()},
        measures=frozenset(measures),
        years=frozenset(years),
        releases=frozenset(releases),
        sequels=frozenset(ROMAN_SEQUELS[m] for m in _ROMAN.findall(original)),
        numbers=frozenset(numbers),
        lead=tuple(words[: MAKER_WINDOW + 2]),
        for_clause=tuple(for_clause),
    )


def _phrase_at(words: list[str], i: int, vocabulary: Vocabulary) -> tuple[int, list[tuple[str, str]]]:
    """(words used, what they name) for the longest vocabulary phrase at ``words[i]``."""
    for size in range(min(vocabulary.longest_phrase, len(words) - i), 0, -1):
        named = vocabulary.phrases.get(tuple(words[i : i + size]))
        if named is not None:
            return size, named
    word = words[i]
    if len(word) > 3 and word.endswith("s"):  # "mounts", "cases": plural of a listed word
        return 1, vocabulary.phrases.get((word[:-1],), [])
    return 1, []


def _names_the_product(lowered: str, spans: list[re.Match[str]], i: int, vocabulary: Vocabulary) -> bool:
    """True when a plain number is part of the product's name ("HP 56 Black", "Sims 2: ...").

    A number followed by a word the vocabulary does not know counts something ("5 wash
    cycles", "14 place settings"); one that ends the title or a segment, or is followed by a
    colour, edition or "for", names the product.
    """
    if i + 1 >= len(spans):
        return True
    gap = lowered[spans[i].end() : spans[i + 1].start()]
    following = spans[i + 1].group()
    return (
        bool(gap.strip(" -"))
        or bool(_NUMBER.fullmatch(following))
        or following in _COMPATIBILITY_WORDS
        or (following,) in vocabulary.phrases
    )


def _compatible_as_condition(words: list[str], i: int) -> bool:
    """"Compatible toner for HP" leads with it; "Vista compatible" or "network client compatible
    dock" describe a feature. Only a title that starts by saying so is a third-party part."""
    return words[i] == "compatible" and i < 2 and (i + 1 >= len(words) or words[i + 1] not in ("with", "w"))


def _measure_at(words: list[str], i: int, vocabulary: Vocabulary) -> tuple[str | None, tuple[str, ...], int]:
    """(number, unit words, words used) of a measure starting at ``words[i]``; no unit -> ()."""
    word = words[i]
    glued = _NUMBER_UNIT.fullmatch(word)
    if glued:
        unit: tuple[str, ...] = (glued.group(2),)
        return (glued.group(1), unit, 1) if unit in vocabulary.units else (None, (), 1)
    if not _NUMBER.fullmatch(word):
        return None, (), 1
    for size in range(min(vocabulary.longest_unit, len(words) - i - 1), 0, -1):
        unit = tuple(words[i + 1 : i + 1 + size])
        if unit not in vocabulary.units or (size == 1 and len(unit[0]) == 1):
            continue  # a lone letter after a space ("5 x 7", "Model 3 i") is no unit
        if unit == ("in",) and i + 2 < len(words) and _NUMBER.fullmatch(words[i + 2]):
            continue  # "3 in 1" is a count of functions, not three inches
        return word, unit, 1 + size
    return word, (), 1


def _plain_number(word: str, words: list[str], i: int, years: set[str], releases: set[str], numbers: set[str]) -> None:
    following = words[i + 1] if i + 1 < len(words) else ""
    previous = words[i - 1] if i else ""
    if following in _PACK_WORDS or previous in _NOT_A_PLAIN_NUMBER_BEFORE:
        return
    if "." in word:
        releases.add(word.rstrip("0").rstrip(".") if word.endswith(".0") else word)
    elif len(word) == 4 and ("1950" <= word <= "2049"):
        years.add(word)
    elif len(word) <= 2 and word.isdigit():
        numbers.add(str(int(word)))


def title_maker(words: list[str] | tuple[str, ...], vocabulary: Vocabulary) -> str | None:
    """The known maker the title starts with (a maker named later is usually another's: "Terk XM
    Antenna", "Case for Canon ..."), up to :data:`MAKER_WINDOW` words long."""
    leading = [w for w in words[: MAKER_WINDOW + 2] if w not in vocabulary.maker_suffixes][:MAKER_WINDOW]
    for size in range(len(leading), 0, -1):
        maker = vocabulary.makers.get(tuple(leading[:size]))
        if maker:
            return maker
    return None


def makers_agree(a: str, b: str) -> bool:
    """Canonical makers agree when equal, or one's words begin the other's ("Monster" and
    "Monster Cable"), or they differ only by spacing ("TomTom" and "Tom Tom")."""
    if a == b or a.replace(" ", "") == b.replace(" ", ""):
        return True
    short, long = sorted((a.split(), b.split()), key=len)
    return long[: len(short)] == short


def maker_conflict(item_maker: str | None, entry_maker: str | None) -> str | None:
    """Why two canonical makers cannot be one product's, or None when either is unknown."""
    if item_maker and entry_maker and not makers_agree(item_maker, entry_maker):
        return f"maker: {item_maker} vs {entry_maker}"
    return None


def _fmt(values: Iterable[object]) -> str:
    return "/".join(sorted(f"{v:g}" if isinstance(v, float) else str(v) for v in values))


def _measures_agree(mine: list[float], theirs: list[float], dimension: str) -> bool:
    for x in mine:
        for y in theirs:
            tolerance = max(MEASURE_TOLERANCE * max(abs(x), abs(y)), LENGTH_TOLERANCE_M if dimension == "length" else 0.0)
            if abs(x - y) <= tolerance:
                return True
    return False


def attribute_conflict(a: Attributes, b: Attributes) -> str | None:
    """Why listings with attributes ``a`` and ``b`` are different products, or None.

    See the module docstring for which disagreements count. The first found is returned, as a
    short reason that names the attribute and both values ("colour: magenta vs yellow").
    """
    for category in BOTH_SIDED:
        mine, theirs = a.get(category), b.get(category)
        if not (mine and theirs):
            continue
        # Editions nest ("Home Premium" states "home" too): only two sets neither of which
        # contains the other disagree. The other kinds name one value per product.
        disagree = (mine - theirs and theirs - mine) if category == "editions" else not mine & theirs
        if disagree:
            return f"{_LABELS[category]}: {_fmt(mine)} vs {_fmt(theirs)}"
    for category in ONE_SIDED:
        mine, theirs = a.get(category), b.get(category)
        if mine != theirs:
            return f"{_LABELS[category]}: {_fmt(mine) or 'none'} vs {_fmt(theirs) or 'none'}"
    for side, other in ((a, b), (b, a)):
        if side.get("accessories") and not (other.get("accessories") or other.get("included_accessories")):
            kinds = (_fmt(side.get("accessories")), "none")
            return f"accessory: {kinds[0]} vs {kinds[1]}" if side is a else f"accessory: none vs {kinds[0]}"
    dimensions = {m.dimension for m in a.measures} & {m.dimension for m in b.measures}
    for dimension in sorted(dimensions):
        mine_values = [m.value for m in a.measures if m.dimension == dimension]
        their_values = [m.value for m in b.measures if m.dimension == dimension]
        if not _measures_agree(mine_values, their_values, dimension):
            return f"{dimension}: {_fmt(mine_values)} vs {_fmt(their_values)}"
    for label, mine_set, their_set in (
        ("year", a.years, b.years),
        ("release", a.releases, b.releases),
        ("number", a.numbers, b.numbers),
    ):
        if mine_set and their_set and not mine_set & their_set:
            return f"{label}: {_fmt(mine_set)} vs {_fmt(their_set)}"
    return None


_active = Vocabulary.load()
_on_change: list[Callable[[], None]] = []


def use_vocabulary(vocabulary: Vocabulary) -> None:
    """Make ``vocabulary`` the one every extraction uses (the definitions load it from settings)."""
    global _active
    _active = vocabulary
    for clear in _on_change:
        clear()


def register_makers(names: Iterable[object]) -> None:
    """Teach the active vocabulary the makers a catalog or item list names in its manufacturer
    field, so titles that lead with them are read as theirs (titles keep their leading words, so
    no cache needs dropping)."""
    _active.add_makers(str(n) for n in names if isinstance(n, str) and n.strip())


def active_vocabulary() -> Vocabulary:
    return _active


def on_vocabulary_change(clear: Callable[[], None]) -> None:
    """Register a cache of derived features to drop when the vocabulary changes."""
    _on_change.append(clear)
