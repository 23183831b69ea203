"""Lists of metrics and metric groups: pages and their links, sort, and the filter language."""

from __future__ import annotations

import urllib.parse

import pytest

from proxy.launchdarkly.api.listing import parse_filter
from tests.ld_support import BETA, FACTS, HEADERS, LD_SETTINGS, custom_metric, error_of, group_body


@pytest.fixture
async def ld(make_client):
    return await make_client(launchdarkly=LD_SETTINGS)


async def make_metrics(ld, clock, count: int, project: str = "proj") -> None:
    for n in range(count):
        clock.advance(1)
        response = await ld.post(f"/api/v2/metrics/{project}", json=custom_metric(f"m-{n:03d}"), headers=HEADERS)
        assert response.status == 201


def offsets(links: dict) -> dict[str, int]:
    return {name: int(urllib.parse.parse_qs(urllib.parse.urlsplit(link["href"]).query)["offset"][0])
            for name, link in links.items()}


@pytest.mark.parametrize(("count", "expected"), [
    (0, {"self": 0, "first": 0, "last": 0}),
    (1, {"self": 0, "first": 0, "last": 0}),
    (20, {"self": 0, "first": 0, "last": 0}),
    (21, {"self": 0, "first": 0, "last": 20, "next": 20}),
    (51, {"self": 0, "first": 0, "last": 40, "next": 20}),
])
async def test_the_first_page_and_its_links(ld, clock, count, expected):
    await make_metrics(ld, clock, count)
    page = await (await ld.get("/api/v2/metrics/proj", headers=HEADERS)).json()
    assert page["totalCount"] == count
    assert len(page["items"]) == min(count, FACTS["list"]["default_limit"])
    assert offsets(page["_links"]) == expected
    for link in page["_links"].values():
        assert link["href"].startswith("/api/v2/metrics/proj?") and link["type"] == "application/json"


async def test_following_next_visits_every_item_once(ld, clock):
    await make_metrics(ld, clock, 51)
    seen, href, pages = [], "/api/v2/metrics/proj?limit=20", 0
    while href:
        page = await (await ld.get(href, headers=HEADERS)).json()
        seen += [item["key"] for item in page["items"]]
        pages += 1
        if pages > 1:
            assert "prev" in page["_links"]
        href = page["_links"].get("next", {}).get("href")
    assert pages == 3 and seen == [f"m-{n:03d}" for n in range(51)]
    middle = await (await ld.get("/api/v2/metrics/proj?limit=20&offset=20", headers=HEADERS)).json()
    assert offsets(middle["_links"]) == {"self": 20, "first": 0, "last": 40, "prev": 0, "next": 40}
    assert len((await (await ld.get("/api/v2/metrics/proj?limit=50", headers=HEADERS)).json())["items"]) == 50


@pytest.mark.parametrize("query", ["limit=0", "limit=51", "limit=x", "offset=-1", "limit=1&limit=2"])
async def test_bad_page_parameters_are_400(ld, query):
    await error_of(await ld.get(f"/api/v2/metrics/proj?{query}", headers=HEADERS), 400, "invalid_request")


async def test_links_keep_the_filter_and_sort(ld, clock):
    await make_metrics(ld, clock, 3)
    query = urllib.parse.urlencode({"filter": "query equals 'm-'", "sort": "-name", "limit": 1})
    page = await (await ld.get(f"/api/v2/metrics/proj?{query}", headers=HEADERS)).json()
    assert [i["key"] for i in page["items"]] == ["m-002"]
    following = await (await ld.get(page["_links"]["next"]["href"], headers=HEADERS)).json()
    assert [i["key"] for i in following["items"]] == ["m-001"]


async def test_sort(ld, clock):
    for key, name in (("a", "Zulu"), ("b", "alpha"), ("c", "Mike")):
        clock.advance(1)
        await ld.post("/api/v2/metrics/proj", json=custom_metric(key, name=name), headers=HEADERS)

    async def keys(sort):
        page = await (await ld.get(f"/api/v2/metrics/proj?sort={sort}", headers=HEADERS)).json()
        return [i["key"] for i in page["items"]]

    assert await keys("name") == ["b", "c", "a"]
    assert await keys("-name") == ["a", "c", "b"]
    assert await keys("createdAt") == ["a", "b", "c"]
    assert await keys("-createdAt") == ["c", "b", "a"]
    message = await error_of(await ld.get("/api/v2/metrics/proj?sort=colour", headers=HEADERS), 400,
                             "invalid_request")
    assert "colour" in message


@pytest.mark.parametrize(("text", "clauses"), [
    ("tags contains [\"a\", \"b\"]", [("tags", "contains", ["a", "b"])]),
    ("tags contains ['a','b']", [("tags", "contains", ["a", "b"])]),
    ("  query   equals   'two words'  ", [("query", "equals", "two words")]),
    ("query equals \"it's\"", [("query", "equals", "it's")]),
    ("query equals 'a\\'b'", [("query", "equals", "a'b")]),
    ("isNumeric equals true and eventKind equals custom",
     [("isNumeric", "equals", "true"), ("eventKind", "equals", "custom")]),
    ("isNumeric equals true,eventKind equals custom",
     [("isNumeric", "equals", "true"), ("eventKind", "equals", "custom")]),
    ("query equals 'métrique ✓'", [("query", "equals", "métrique ✓")]),
    ("query equals métrique", [("query", "equals", "métrique")]),
    ("query equals 'and'", [("query", "equals", "and")]),
    ("tags contains []", [("tags", "contains", [])]),
    ("", []),
])
def test_filter_parsing(text, clauses):
    assert [(c.field, c.op, c.value) for c in parse_filter(text)] == clauses


@pytest.mark.parametrize(("text", "named"), [
    ("colour equals red", "colour"),
    ("query matches 'x'", "matches"),
    ("tags equals ['a']", "equals"),
    ("eventKind equals banana", "banana"),
    ("query equals 'unclosed", "not closed"),
    ("tags contains ['a'", "not closed"),
    ("query", "operator"),
    ("query equals", "value"),
    ("query equals x or kind equals y", "between clauses"),
])
async def test_a_bad_filter_is_a_400_that_names_it(ld, text, named):
    query = urllib.parse.urlencode({"filter": text})
    message = await error_of(await ld.get(f"/api/v2/metrics/proj?{query}", headers=HEADERS), 400, "invalid_request")
    assert named in message


async def test_filters_select_metrics(ld, clock):
    bodies = [
        custom_metric("conv", tags=["a", "b"], maintainerId="alice"),
        {"key": "num", "kind": "custom", "isNumeric": True, "eventKey": "e", "successCriteria": "HigherThanBaseline",
         "unitAggregationType": "sum", "tags": ["a"], "maintainerId": "bob", "name": "Revenue"},
        {"key": "page", "kind": "pageview", "urls": [{"kind": "exact", "url": "https://x.example"}]},
    ]
    for body in bodies:
        clock.advance(1)
        assert (await ld.post("/api/v2/metrics/proj", json=body, headers=HEADERS)).status == 201

    async def keys(text: str, raw: bool = False) -> list[str]:
        query = f"filter={text}" if raw else urllib.parse.urlencode({"filter": text})
        response = await ld.get(f"/api/v2/metrics/proj?{query}", headers=HEADERS)
        assert response.status == 200, await response.text()
        return [i["key"] for i in (await response.json())["items"]]

    assert await keys("tags contains [\"a\", \"b\"]") == ["conv"]
    assert await keys("tags contains %5B%22a%22%5D", raw=True) == ["conv", "num"]  # URL-encoded brackets
    assert await keys("isNumeric equals true") == ["num"]
    assert await keys("eventKind equals pageview") == ["page"]
    assert await keys("maintainerIds anyOf [\"bob\", \"carol\"]") == ["num"]
    assert await keys("query equals 'REVEN'") == ["num"]
    assert await keys("query equals conv") == ["conv"]
    assert await keys("unitAggregationType equals sum") == ["num"]
    assert await keys("hasConnections equals false") == ["conv", "num", "page"]
    assert await keys("hasConnections equals true") == []
    assert await keys("metricUsedIn equals none") == ["conv", "num", "page"]
    assert await keys("metricUsedIn equals experiments") == []
    assert await keys("maintainerTeamKey equals 'team-x'") == []
    assert await keys("tags contains ['a'] and isNumeric equals false") == ["conv"]
    assert await keys("tags contains ['a'],isNumeric equals false") == ["conv"]
    page = await (await ld.get("/api/v2/metrics/proj?filter=" + urllib.parse.quote("tags contains ['a']"),
                               headers=HEADERS)).json()
    assert page["totalCount"] == 2


async def test_metric_groups_list_with_filter_sort_and_pages(ld, clock):
    for key in ("m1", "m2"):
        await ld.post("/api/v2/metrics/proj", json=custom_metric(key), headers=HEADERS)
    for n, kind in enumerate(["funnel", "standard", "funnel"]):
        clock.advance(1)
        body = group_body(f"g{n}", ["m2", "m1"], kind=kind, name=f"Group {2 - n}")
        assert (await ld.post("/api/v2/projects/proj/metric-groups", json=body, headers=BETA)).status == 201
    page = await (await ld.get("/api/v2/projects/proj/metric-groups?limit=2", headers=BETA)).json()
    assert page["totalCount"] == 3 and [g["key"] for g in page["items"]] == ["g0", "g1"]
    assert offsets(page["_links"]) == {"self": 0, "first": 0, "last": 2, "next": 2}
    assert page["_links"]["self"]["href"].startswith("/api/v2/projects/proj/metric-groups?")
    by_name = await (await ld.get("/api/v2/projects/proj/metric-groups?sort=name", headers=BETA)).json()
    assert [g["key"] for g in by_name["items"]] == ["g2", "g1", "g0"]
    funnels = await (await ld.get("/api/v2/projects/proj/metric-groups?" + urllib.parse.urlencode(
        {"filter": "kind equals 'funnel'", "sort": "-createdAt"}), headers=BETA)).json()
    assert [g["key"] for g in funnels["items"]] == ["g2", "g0"]
    for text in ("experimentStatus equals 'running'", "hasConnections equals true"):
        none = await (await ld.get("/api/v2/projects/proj/metric-groups?" + urllib.parse.urlencode(
            {"filter": text}), headers=BETA)).json()
        assert none["items"] == []
    mine = await (await ld.get("/api/v2/projects/proj/metric-groups?" + urllib.parse.urlencode(
        {"filter": "maintainerIds anyOf ['member-1'] and query equals 'group 1'"}), headers=BETA)).json()
    assert [g["key"] for g in mine["items"]] == ["g1"]
    await error_of(await ld.get("/api/v2/projects/proj/metric-groups?filter=eventKind%20equals%20custom",
                                headers=BETA), 400, "invalid_request")
    await error_of(await ld.get("/api/v2/projects/proj/metric-groups?limit=51", headers=BETA), 400,
                   "invalid_request")
