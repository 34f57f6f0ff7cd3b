"""Hypothesis strategies for fuzzing the API node over HTTP: every query route and method,
every content type, bodies of any JSON shape, MLflow formats, CSV, API keys.

Shared by the in-process fuzzer (tests/engine/apinode/test_fuzz.py, Litestar's TestClient)
and the real-process one (tests/e2e/test_fuzz_serve.py, the httptools direct lane).

Every string a request carries may be a *canary* (``qzx123456qzx``): an answer must never
contain one (``echoes``), except where the protocol returns what was sent (a lookup's
``data``) or names what was asked for (``dispatch.forcedGeneration``, made of no canary).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from nodal_demo import demo
from tests.engine.apinode.test_api_serving import GOOD

SERVICE, ENDPOINT, LOOKUP = demo.SERVICE, demo.ENDPOINT, "card_profile"
PREFIX = "/public/api/v1"
CANARY = re.compile(r"qzx\d{6}qzx")
canaries = st.integers(0, 999_999).map(lambda n: f"qzx{n:06d}qzx")

# --- scalars -------------------------------------------------------------------------------

TIMESTAMPS = [
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59+01:00",
    "9999-12-31T23:59:59.999999-23:59",
    "9999-12-31",
    "0001-01-01",
    "2026-02-29T00:00:00",
    "2026-11-10T25:00:00",
    "2026-11-10T02:13:00+24:00",
    "2026-11-10 02:13",
    "2026-W46-2",
    "20261110T021300",
    "",
    "T",
]
integers = st.integers() | st.sampled_from(
    [0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**400), 10**4000]
)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [5e-324, -5e-324, 1e-310, 1e299, 1e300, -1e300, 1.7976931348623157e308, -0.0]
)
texts = (
    st.text(max_size=12)
    | canaries
    | st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e999",
            "null",
            "true",
            "",
            " ",
            "\x00",
            "\u202e",
            "☃" * 3,
        ]
    )
)
timestamps = st.sampled_from(TIMESTAMPS) | st.datetimes().map(lambda d: d.isoformat())
scalars = st.none() | st.booleans() | integers | floats | texts | timestamps


def json_of(leaves: st.SearchStrategy[Any], keys: st.SearchStrategy[str]) -> Any:
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=10,
    )


keys = st.text(max_size=8) | canaries | st.sampled_from(list(GOOD))
json_values = json_of(scalars, keys)
# Values without canaries, for what the protocol names back (forcedGeneration).
plain_values = json_of(
    st.none() | st.booleans() | integers | floats | st.sampled_from(["v1", "v2", "v9", ""]),
    st.sampled_from(["a", "forcedGeneration", "dispatchKey"]),
)

# --- records and bodies ----------------------------------------------------------------------

# Each field: the good value, or anything (a nested shape where a scalar belongs, a huge
# number, a calendar limit…); plus unknown fields.
features = st.builds(
    lambda f, extra: {**f, **extra},
    st.fixed_dictionaries(
        {},
        optional={
            name: st.just(GOOD[name]) | (timestamps if name == "ts" else json_values)
            for name in GOOD
        },
    ),
    st.dictionaries(keys, json_values, max_size=3),
)
mostly_good = st.builds(
    lambda name, value: {**GOOD, name: value},
    st.sampled_from(list(GOOD)),
    timestamps | scalars | json_values,
)
records = mostly_good | mostly_good | features | json_values
dispatch = (
    st.fixed_dictionaries(
        {},
        optional={
            "forcedGeneration": st.sampled_from(["v1", "v2", "v9"]) | plain_values,
            "dispatchKey": json_values,
        },
    )
    | plain_values
)
explanations = (
    st.fixed_dictionaries(
        {},
        optional={"enabled": st.booleans() | json_values, "nExplanations": integers | json_values},
    )
    | json_values
)
extras = st.fixed_dictionaries(
    {},
    optional={
        "dispatch": dispatch,
        "explanations": explanations,
        "context": json_values,
        "qzx000000qzx": json_values,
    },
)


def with_extras(body: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda b, e: {**e, **b}, body, extras)


predict_bodies = with_extras(st.builds(lambda f: {"features": f}, records))
item_lists = st.lists(st.builds(lambda f: {"features": f}, records) | json_values, max_size=5)
multi_bodies = with_extras(st.builds(lambda i: {"items": i}, item_lists | json_values))
lookup_data = (
    st.fixed_dictionaries(
        {}, optional={"card": st.just("C0000042") | json_values, "card_id": json_values}
    )
    | json_values
)
lookup_bodies = with_extras(st.builds(lambda d: {"data": d}, lookup_data))
lookup_multi_bodies = with_extras(
    st.builds(
        lambda i: {"items": i},
        st.lists(st.builds(lambda d: {"data": d}, lookup_data) | json_values, max_size=5)
        | json_values,
    )
)
columns = st.lists(st.sampled_from(list(GOOD)) | keys, max_size=6) | json_values
mlflow_bodies = with_extras(
    st.one_of(
        st.builds(
            lambda c, rows: {"dataframe_split": {"columns": c, "data": rows}},
            columns,
            st.lists(st.lists(scalars | json_values, max_size=6), max_size=3) | json_values,
        ),
        st.builds(
            lambda r: {"dataframe_split": {"columns": list(GOOD), "data": [list(r.values())]}},
            mostly_good,
        ),
        st.builds(lambda r: {"dataframe_records": r}, st.lists(records, max_size=3) | json_values),
        st.builds(lambda r: {"instances": r}, st.lists(records, max_size=3) | json_values),
        st.builds(lambda r: {"inputs": r}, st.lists(records, max_size=3) | json_values),
        st.builds(
            lambda r: {"inputs": {k: [v] for k, v in r.items()}},
            mostly_good,
        ),
        st.builds(lambda c: {"inputs": c}, st.dictionaries(keys, st.lists(scalars, max_size=3))),
    )
)


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


csv_cells = (
    texts
    | timestamps
    | st.sampled_from(
        ["1e999", "nan", "-inf", "1" + "0" * 400, "TRUE", "no", "'", '"', '""', "a,b", "a\nb"]
    )
    | scalars.map(_cell)
)


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    def cell(c: str) -> str:
        return '"' + c.replace('"', '""') + '"' if any(x in c for x in ',"\n\r') else c

    lines = [",".join(cell(h) for h in header)] + [",".join(cell(c) for c in r) for r in rows]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


csv_bodies = st.one_of(
    st.builds(
        _csv,
        st.lists(st.sampled_from(list(GOOD)) | keys, max_size=6),
        st.lists(st.lists(csv_cells, max_size=6), max_size=3),
    ),
    st.builds(
        lambda r: _csv(list(r), [[_cell(v) for v in r.values()]]),
        mostly_good,
    ),
    st.binary(max_size=40),
)

# --- the bytes on the wire -------------------------------------------------------------------


def encode(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")


garbage = st.sampled_from(
    [
        b"",
        b" ",
        b"{",
        b"nul",
        b"[]",
        b'"x"',
        b"\xff\xfe",
        b"\x00",
        b'{"features": NaN}',
        b'{"features": {"amount": Infinity}}',
        b'{"features": {"amount": 1' + b"0" * 400 + b"}}",
        b"[" * 3000 + b"]" * 3000,
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b'{"features": {"ts": "\\ud800"}}',
        b'{"features": 1, "features": 2}',
    ]
) | st.binary(max_size=60)

CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "text/csv",
    "text/csv; charset=utf-8",
    "TEXT/CSV",
    "text/csvx",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    ";;;",
    "",
]
content_types = st.sampled_from(CONTENT_TYPES)


@dataclass(frozen=True)
class Auth:
    """Authorization header values; ``secret`` is a valid key of the service. (No value
    with whitespace around it: h11 refuses to send one; the raw-socket cases send them.)"""

    secret: str

    def strategy(self) -> st.SearchStrategy[str | None]:
        basic = base64.b64encode(f"{self.secret}:".encode()).decode()
        return (
            st.sampled_from(
                [
                    None,
                    f"Basic {basic}",
                    f"Bearer {self.secret}",
                    f"bearer   {self.secret}",
                    f"Basic {base64.b64encode(self.secret.encode()).decode()}",
                    "Bearer",
                    "Bearer ",
                    "Basic",
                    "Basic ",
                    "Basic !!!",
                    "Basic Og==",
                    "Basic " + base64.b64encode(b"\xff\xfe:").decode(),
                    "Basic " + base64.b64encode(b"a:b:c").decode(),
                    "Bearer nk_x_y",
                    f"Bearer {self.secret}x",
                    "Digest x",
                    "Basic=abc",
                    ",",
                ]
            )
            | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
        ).map(lambda v: v if v is None else v.strip())


QUERY_METHODS = ("predict", "predict-multi", "lookup", "lookup-multi", "invocations")
BODIES = {
    "predict": predict_bodies,
    "predict-multi": multi_bodies,
    "lookup": lookup_bodies,
    "lookup-multi": lookup_multi_bodies,
    "invocations": mlflow_bodies,
}


def paths(method: str) -> st.SearchStrategy[str]:
    """URLs of one query method: the fraud endpoints, unknown names, a trailing slash."""
    names = [
        (SERVICE, ENDPOINT),
        (SERVICE, LOOKUP),
        (SERVICE, "unknown"),
        ("unknown", ENDPOINT),
    ]
    urls = [f"{PREFIX}/{s}/{e}/{method}" for s, e in names]
    urls += [u + "/" for u in urls[:2]]
    own = urls[1] if method.startswith("lookup") else urls[0]
    urls += [own] * 6  # mostly the endpoint of the method's own kind
    if method == "invocations":
        urls += ["/invocations", "/invocations/"]
    return st.sampled_from(urls)


@st.composite
def requests(draw: Any, method: str) -> tuple[str, bytes, str | None]:
    """(path, body, content type) of one query to ``method``: mostly its own body shape,
    sometimes another route's, CSV or garbage."""
    path = draw(paths(method))
    kind = draw(st.sampled_from(["own"] * 8 + ["other", "csv", "garbage", "any"]))
    if kind == "own":
        body = encode(draw(BODIES[method]))
    elif kind == "other":
        body = encode(draw(st.sampled_from(list(BODIES.values())).flatmap(lambda s: s)))
    elif kind == "csv":
        body = draw(csv_bodies)
    elif kind == "garbage":
        body = draw(garbage)
    else:
        body = encode(draw(json_values))
    ctype = draw(content_types)
    if kind == "csv" and draw(st.booleans()):
        ctype = "text/csv"
    return path, body, ctype


def check_answer(path: str, status: int, headers: Any, text: str) -> None:
    """What every answer must be: no 5xx, an error in the node's format, no canary echoed."""
    assert status < 500, (status, text[:500])
    if status >= 400:
        body = json.loads(text)
        assert {"errorType", "message", "detailedMessage"} <= set(body), text[:500]
    if status == 200 and "/lookup" in path:
        return  # a lookup answers the record it was sent, as Dataiku's does
    assert not CANARY.search(text), (status, text[:500])
