"""A local search API that speaks SearXNG's and Brave Search's JSON, scriptable per test.

A real HTTP server on 127.0.0.1 (random free port, background thread), so tests and the bench
exercise the real httpx stack, our retries, pacing and error handling. Two routes:

* ``GET /search?q=...&format=json``: SearXNG. With ``json_enabled=False`` it answers 403, as a
  SearXNG whose ``search.formats`` lacks ``json`` does.
* ``GET /res/v1/web/search?q=...&count=...``: Brave; a missing or wrong ``X-Subscription-Token``
  gets 401 with Brave's error JSON.

Results come from ``results`` (query -> list of ``{"title", "url", "snippet"}``), else from
``responder(query)``, else none. :class:`NearMissWeb` is a responder that plays a search engine
over a catalog's product pages: each known product's page among pages of the same maker's other
products and of accessories and variants of it (see its docstring). Behaviours queued with :meth:`FakeSearch.script` apply to the
next requests (``ok`` once the queue is empty): ``rate_limit`` (429 + Retry-After), ``error``
(503), ``slow`` (answers after ``slow_s``: a client timeout), ``malformed`` (200 with a body
that is not JSON). ``qps_limit`` adds a token bucket (burst = one second's worth) that answers
429 with Retry-After when exceeded; ``latency_s`` delays every answer.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

from tests.servers import QuietHandler, ScriptedServer

BEHAVIOURS = ("ok", "rate_limit", "error", "slow", "malformed")
BRAVE_KEY = "test-brave-key"

Responder = Callable[[str], list[dict[str, str]]]


@dataclass
class Received:
    at: float
    route: str
    path: str
    query: str
    status: int


@dataclass
class FakeSearch(ScriptedServer):
    behaviours = BEHAVIOURS
    latency_s: float = 0.0
    qps_limit: float | None = None
    retry_after_s: float = 1.0
    slow_s: float = 3.0
    json_enabled: bool = True
    brave_key: str = BRAVE_KEY
    results: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    responder: Responder | None = None
    received: list[Received] = field(default_factory=list)

    # -- control -------------------------------------------------------------------------

    def query_counts(self) -> Counter[str]:
        return Counter(r.query for r in self.received)

    # -- serving -------------------------------------------------------------------------

    def rate_per_second(self) -> float | None:
        return self.qps_limit

    def respond(self, route: str, path: str, params: dict[str, str], headers: Any) -> tuple[int, dict[str, str], bytes, float]:
        """Status, headers, body and delay for one request."""
        query = params.get("q", "")
        status, extra, body, delay = self._answer(route, query, params, headers)
        with self._lock:
            self.received.append(Received(time.monotonic(), route, path, query, status))
        return status, extra, body, delay

    def _answer(self, route: str, query: str, params: dict[str, str], headers: Any) -> tuple[int, dict[str, str], bytes, float]:
        if route == "searxng" and (not self.json_enabled or params.get("format") != "json"):
            return 403, {"content-type": "text/html"}, b"<html><body><h1>403 Forbidden</h1></body></html>", 0.0
        if route == "brave" and headers.get("x-subscription-token") != self.brave_key:
            return 401, {}, _json(
                {"type": "ErrorResponse", "error": {"status": 401, "code": "SUBSCRIPTION_TOKEN_INVALID", "detail": "The provided subscription token is invalid."}}
            ), 0.0
        behaviour, wait = self._next()
        if behaviour == "rate_limit":
            retry_after = wait if wait is not None else self.retry_after_s
            return 429, {"retry-after": str(max(1, math.ceil(retry_after)))}, _json({"error": "Too Many Requests"}), 0.0
        if behaviour == "error":
            return 503, {}, _json({"error": "Service Unavailable"}), 0.0
        if behaviour == "malformed":
            return 200, {}, b'{"results": [{"title": "cut', self.latency_s
        delay = self.slow_s if behaviour == "slow" else self.latency_s
        found = self.results.get(query)
        if found is None:
            found = self.responder(query) if self.responder else []
        if route == "brave":
            found = found[: int(params.get("count") or 20)]
            payload = {
                "type": "search",
                "query": {"original": query},
                "web": {"type": "search", "results": [{"title": r["title"], "url": r["url"], "description": r["snippet"]} for r in found]},
            }
        else:
            payload = {
                "query": query,
                "number_of_results": len(found),
                "results": [{"title": r["title"], "url": r["url"], "content": r["snippet"], "engine": "fake"} for r in found],
                "answers": [],
                "suggestions": [],
                "unresponsive_engines": [],
            }
        return 200, {}, _json(payload), delay


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()


_ROUTES = {"/search": "searxng", "/res/v1/web/search": "brave"}


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx's connection pool expects
    fake: FakeSearch

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        route = _ROUTES.get(parts.path.rstrip("/"))
        if route is None:
            self._send(404, {}, _json({"error": f"no route {parts.path}"}))
            return
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        status, headers, body, delay = self.fake.respond(route, self.path, params, self.headers)
        if delay:
            time.sleep(delay)
        self._send(status, headers, body)


FakeSearch.handler = _Handler


# -- a web of near misses -----------------------------------------------------------------------

_SHOPS = ("ElectroMart", "GadgetDepot", "ValueTech", "ShopRight")
_ACCESSORIES = ("Carrying Case", "Replacement Remote Control", "Screen Protector", "AC Power Adapter", "Wall Mount Bracket")
_VARIANT_LETTERS = {"B": "Black", "W": "White", "S": "Silver", "R": "Red"}
_COLOUR_WORDS = frozenset("black white silver red blue green pink gray grey gold purple".split())
"""Dropped from a variant's name, which states its own colour or generation instead."""
_CODE = re.compile(r"^(?=[^ ]*\d)[A-Za-z0-9][A-Za-z0-9./_-]*$")
_MIXED = re.compile(r"\b(?=\w*\d)(?=\w*[A-Za-z])[\w-]{4,}\b")
_WORDS = re.compile(r"[a-z0-9]+")


def _stable(*parts: str) -> int:
    """A hash that is the same in every process (``hash`` of a str is salted per process)."""
    return zlib.crc32("\x1f".join(parts).encode())


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _norm(text: str) -> str:
    return " ".join(_WORDS.findall(str(text).lower()))


@dataclass(frozen=True)
class _Product:
    """A catalog entry as the web knows it: a maker, a name and the code printed on its pages."""

    key: str
    title: str
    maker: str
    name: str
    code: str | None
    details: str


def _product(row: dict[str, Any]) -> _Product:
    title = " ".join(str(row["description"]).split())
    maker = str(row.get("manufacturer") or "").strip() or title.split()[0]
    segments = title.split(" - ")
    part = str(row.get("part_number") or "").strip()
    if part:
        code, name = part, title
    elif len(segments) > 1 and _CODE.match(segments[-1]):
        code, name = segments[-1], " - ".join(segments[:-1])
    else:
        mixed = _MIXED.findall(title)
        code, name = (max(mixed, key=len) if mixed else None), title
    details = row.get("details")
    details = " ".join(str(details).split()) if isinstance(details, str) and details.strip() else ""
    return _Product(str(row["catalog_id"]), title, maker, name, code, details)


class NearMissWeb:
    """A search engine that knows each product's web page and answers as real engines do: the
    right page among near misses of the same maker. Use an instance as ``FakeSearch.responder``.

    Built from a catalog (``catalog_id``, ``description``; optional ``manufacturer``,
    ``part_number``, and ``details``, a longer text that snippets quote) and ``known``: text a
    searcher types for a product (say, an item's description) -> catalog id of the true product.
    A query containing a known text (or contained in one: queries are cut to a length) gets

    * the true product's page, unless left out (``true_page_rate`` < 1: engines miss pages too);
    * pages of the ``near_misses`` other products of the same maker whose titles are nearest to
      the query by word TF-IDF: the catalog's other model numbers, sizes, colours, previous
      generations and accessories of that maker, each page naming its own code;
    * an accessory page for the true product ("Carrying Case for <maker> <code>", with a code of
      its own) and a page of a colour or previous-generation variant whose code differs from the
      true one in its last character;

    shuffled by a hash of the query, so the true page is not always first and may fall past the
    number of results a client reads. Pages are shop or maker pages in a few title and URL styles;
    the code appears in the title and (mostly) the URL, as the catalog prints it. Nothing names a
    catalog id. Unknown queries get no results.

    Generic by construction: an entry's maker is its ``manufacturer``, else the first word of
    its title (shop titles lead with the brand); its code is its ``part_number``, else the last
    " - " segment of its title when that is one code-like token, else its longest word mixing
    letters and digits.
    """

    def __init__(
        self,
        catalog: pd.DataFrame,
        known: Mapping[str, str],
        *,
        near_misses: int = 3,
        true_page_rate: float = 1.0,
        synthetic: bool = True,
    ):
        self.products = [_product(row) for row in catalog.to_dict("records")]
        self.position = {p.key: i for i, p in enumerate(self.products)}
        self.by_maker: dict[str, list[int]] = {}
        for i, p in enumerate(self.products):
            self.by_maker.setdefault(_norm(p.maker), []).append(i)
        self.known = {_norm(text): str(key) for text, key in known.items() if _norm(text)}
        self.near_misses = near_misses
        self.true_page_rate = true_page_rate
        self.synthetic = synthetic
        self._vectorizer = TfidfVectorizer(sublinear_tf=True)
        self._matrix = self._vectorizer.fit_transform([_norm(p.title) for p in self.products])

    def subject(self, query: str) -> _Product | None:
        """The product a query is about, as the engine's knowledge of the web tells it."""
        q = _norm(query)
        hits = [text for text in self.known if text in q or (len(q) >= 20 and q in text)]
        return self.products[self.position[self.known[max(hits, key=len)]]] if hits else None

    def __call__(self, query: str) -> list[dict[str, str]]:
        true = self.subject(query)
        if true is None:
            return []
        pages = [self._near_miss(query, true)]
        if _stable("present", query) % 1000 < self.true_page_rate * 1000:
            pages.append([self.page(true)])
        if self.synthetic:
            pages.append([self._accessory(true), *self._variant(true)])
        found = [p for group in pages for p in group]
        random.Random(_stable("order", query)).shuffle(found)
        return found

    def _near_miss(self, query: str, true: _Product) -> list[dict[str, str]]:
        siblings = [i for i in self.by_maker.get(_norm(true.maker), []) if self.products[i].key != true.key]
        if not siblings:
            return []
        scores = (self._matrix[siblings] @ self._vectorizer.transform([_norm(query)]).T).toarray().ravel()
        nearest = sorted(range(len(siblings)), key=lambda j: (-scores[j], j))[: self.near_misses]
        return [self.page(self.products[siblings[j]]) for j in nearest]

    def page(self, product: _Product) -> dict[str, str]:
        """The product's page in one of a few shop or maker styles, chosen by a hash of its key."""
        style = _stable("style", product.key)
        shop = _SHOPS[style % len(_SHOPS)]
        host = f"https://www.{shop.lower()}.example"
        code, name, maker = product.code, product.name, product.maker
        snippet = product.details[:240] or f"{name}. Free shipping on orders over $35. In stock."
        if code is None:
            return {"title": f"{name} | {shop}", "url": f"{host}/p/{_slug(name)}", "snippet": snippet}
        rest = name[len(maker) :].strip() if name.lower().startswith(maker.lower()) else name
        styles = [
            (f"{name} - {code} | {shop}", f"{host}/p/{_slug(name)}-{_slug(code)}"),
            (f"{maker} {code} {rest}", f"https://www.{_slug(maker)}.example/products/{_slug(code)}"),
            (f"Buy {name} ({code}) - {shop}", f"{host}/{_slug(maker)}/{_slug(code)}.html"),
            (f"{name} {code} : {shop}", f"{host}/product/{style % 999_983}/{_slug(name)}"),
        ]
        title, url = styles[(style // len(_SHOPS)) % len(styles)]
        return {"title": title, "url": url, "snippet": snippet}

    def _accessory(self, true: _Product) -> dict[str, str]:
        style = _stable("accessory", true.key)
        noun, shop = _ACCESSORIES[style % len(_ACCESSORIES)], _SHOPS[style % len(_SHOPS)]
        own = f"{_slug(true.maker)[:3].upper()}-A{style % 9000 + 1000}"
        named = f"{true.maker} {true.code}" if true.code else true.name
        return {
            "title": f"{noun} for {named} - {own} | {shop}",
            "url": f"https://www.{shop.lower()}.example/accessories/{_slug(noun)}-for-{_slug(named)}",
            "snippet": f"{noun} designed for the {true.name}. Part {own}. {true.maker} product sold separately.",
        }

    def _variant(self, true: _Product) -> list[dict[str, str]]:
        code = true.code
        if not code or not code[-1].isalnum():
            return []
        last = code[-1].upper()
        if last.isdigit():
            variant, label = code[:-1] + str((int(last) + 9) % 10), "Previous Model"
        else:
            other = next(letter for letter in _VARIANT_LETTERS if letter != last)
            variant, label = code[:-1] + other, _VARIANT_LETTERS[other]
        shop = _SHOPS[_stable("variant", true.key) % len(_SHOPS)]
        name = " ".join(w for w in true.name.split() if w.lower().strip("(),") not in _COLOUR_WORDS)
        return [
            {
                "title": f"{name} ({label}) - {variant} | {shop}",
                "url": f"https://www.{shop.lower()}.example/p/{_slug(name)}-{_slug(variant)}",
                "snippet": f"{true.maker} {variant}: {label.lower()} version of the {name}. Compare with similar items.",
            }
        ]
