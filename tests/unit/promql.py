"""A parser of the PromQL the dashboard uses (tests/unit/test_grafana_dashboard.py):
selectors with label matchers and ranges, aggregations with by/without, function
calls, numbers, strings and binary operators.  It refuses what it does not know (an
unknown function, a range given to a function that takes an instant vector, an
unbalanced bracket), so a query that would fail in Prometheus fails here too as far
as the subset goes; it returns the metric names the query selects.

No PromQL parser is packaged for Python; Prometheus' grammar is
promql/parser/generated_parser.y, of which this is a recursive-descent subset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

AGGREGATIONS = {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar",
                "topk", "bottomk", "quantile", "count_values"}
WITH_PARAMETER = {"topk", "bottomk", "quantile", "count_values"}
RANGE_FUNCTIONS = {"rate", "irate", "increase", "delta", "idelta", "deriv", "changes",
                   "resets", "avg_over_time", "min_over_time", "max_over_time",
                   "sum_over_time", "count_over_time", "last_over_time"}
INSTANT_FUNCTIONS = {"histogram_quantile", "abs", "ceil", "floor", "round", "clamp_min",
                     "clamp_max", "clamp", "scalar", "vector", "time", "sort", "sort_desc",
                     "label_replace", "absent", "sgn", "exp", "ln", "sqrt"}
BINARY = {"+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "and", "or",
          "unless"}
MATCHERS = {"=", "!=", "=~", "!~"}

TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+|\$__\w+|\$\w+)(?=\s*\])
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^=<>(){}\[\],])
""", re.VERBOSE)


class PromQLError(ValueError):
    """The query is not PromQL of the subset (the message says where)."""


@dataclass
class Token:
    kind: str
    text: str
    at: int


def tokens(query: str) -> list[Token]:
    out: list[Token] = []
    at = 0
    while at < len(query):
        m = TOKEN.match(query, at)
        if m is None:
            raise PromQLError(f"unexpected {query[at:at + 10]!r} at {at}")
        assert m.lastgroup is not None
        if m.lastgroup != "space":
            out.append(Token(m.lastgroup, m.group(), at))
        at = m.end()
    return out


@dataclass
class Parser:
    query: str
    toks: list[Token] = field(default_factory=list)
    pos: int = 0
    names: set[str] = field(default_factory=set)

    def parse(self) -> set[str]:
        self.toks = tokens(self.query)
        kind = self.expr()
        if self.pos != len(self.toks):
            raise self.error("end of query")
        if kind == "range":
            raise PromQLError("a range vector cannot be graphed")
        return self.names

    # helpers
    def peek(self, offset: int = 0) -> Token | None:
        i = self.pos + offset
        return self.toks[i] if i < len(self.toks) else None

    def error(self, wanted: str) -> PromQLError:
        t = self.peek()
        got = f"{t.text!r} at {t.at}" if t else "the end"
        return PromQLError(f"{wanted} expected, got {got} in {self.query!r}")

    def take(self, text: str | None = None, kind: str | None = None) -> Token:
        t = self.peek()
        if t is None or (text is not None and t.text != text) or (
                kind is not None and t.kind != kind):
            raise self.error(text or kind or "a token")
        self.pos += 1
        return t

    def at(self, text: str) -> bool:
        t = self.peek()
        return t is not None and t.text == text

    # grammar; each returns the kind of value: "instant", "range" or "scalar"
    def expr(self) -> str:
        kind = self.unary()
        while (t := self.peek()) is not None and t.text in BINARY:
            self.pos += 1
            if self.at("bool"):
                self.pos += 1
            right = self.unary()
            if "range" in (kind, right):
                raise PromQLError(f"binary {t.text} on a range vector in {self.query!r}")
            kind = "instant" if "instant" in (kind, right) else "scalar"
        return kind

    def unary(self) -> str:
        if self.at("-") or self.at("+"):
            self.pos += 1
        return self.primary()

    def primary(self) -> str:
        t = self.peek()
        if t is None:
            raise self.error("an expression")
        if t.kind == "number":
            self.pos += 1
            return "scalar"
        if t.kind == "string":
            self.pos += 1
            return "string"
        if t.text == "(":
            self.pos += 1
            kind = self.expr()
            self.take(")")
            return kind
        if t.text == "{":
            return self.selector(None)
        if t.kind == "ident":
            if t.text in AGGREGATIONS:
                return self.aggregation()
            nxt = self.peek(1)
            if nxt is not None and nxt.text == "(":
                return self.call()
            self.pos += 1
            return self.selector(t.text)
        raise self.error("an expression")

    def labels(self) -> None:
        self.take("(")
        while not self.at(")"):
            self.take(kind="ident")
            if not self.at(")"):
                self.take(",")
        self.take(")")

    def aggregation(self) -> str:
        op = self.take(kind="ident").text
        if self.at("by") or self.at("without"):
            self.pos += 1
            self.labels()
        self.take("(")
        if op in WITH_PARAMETER:
            self.expr()
            self.take(",")
        if self.expr() != "instant":
            raise PromQLError(f"{op} takes an instant vector in {self.query!r}")
        self.take(")")
        if self.at("by") or self.at("without"):
            self.pos += 1
            self.labels()
        return "instant"

    def call(self) -> str:
        name = self.take(kind="ident").text
        if name not in RANGE_FUNCTIONS | INSTANT_FUNCTIONS:
            raise PromQLError(f"unknown function {name} in {self.query!r}")
        self.take("(")
        kinds: list[str] = []
        while not self.at(")"):
            kinds.append(self.expr())
            if not self.at(")"):
                self.take(",")
        self.take(")")
        if name in RANGE_FUNCTIONS and kinds != ["range"]:
            raise PromQLError(f"{name} takes one range vector in {self.query!r}")
        if name in INSTANT_FUNCTIONS and "range" in kinds:
            raise PromQLError(f"{name} takes no range vector in {self.query!r}")
        if name == "histogram_quantile" and kinds != ["scalar", "instant"]:
            raise PromQLError(f"histogram_quantile(φ, buckets) in {self.query!r}")
        return "instant"

    def selector(self, name: str | None) -> str:
        if name is not None:
            if name in BINARY or name in {"by", "without", "bool"}:
                raise PromQLError(f"{name} is a keyword, not a metric, in {self.query!r}")
            self.names.add(name)
        if self.at("{"):
            self.pos += 1
            while not self.at("}"):
                label = self.take(kind="ident").text
                op = self.take().text
                if op not in MATCHERS:
                    raise PromQLError(f"matcher {op!r} of {label} in {self.query!r}")
                value = self.take(kind="string").text
                if label == "__name__" and op == "=":
                    self.names.add(value[1:-1])
                if not self.at("}"):
                    self.take(",")
            self.take("}")
        kind = "instant"
        if self.at("["):
            self.pos += 1
            self.take(kind="duration")
            self.take("]")
            kind = "range"
        return kind


def metric_names(query: str) -> set[str]:
    """The metric names `query` selects; PromQLError if it does not parse."""
    return Parser(query).parse()
