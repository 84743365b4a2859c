"""The embedded Wikipedia and Commons servers: real HTTP on 127.0.0.1 against the tiny world.

Expected texts, sizes and names are computed from the world (texts.intro, FileInfo), never
written down, so the tests follow the world when it changes.
"""

from __future__ import annotations

import io
import threading
import time
import xml.etree.ElementTree as ET
from typing import Iterator
from urllib.parse import quote

import pytest
import requests
from PIL import Image

from mlm_pipeline.world import World
from mlm_pipeline.world import imagegen
from mlm_pipeline.world.commons_server import OVERSIZE_BYTES, STANDARD_WIDTHS, metadata_gap, start_commons_server
from mlm_pipeline.world.serving import RunningServer
from mlm_pipeline.world.texts import LANGS, full_text, intro
from mlm_pipeline.world.wiki_server import (
    EXTRACTS_LIMIT,
    MAX_TITLES,
    normalize_title,
    place_facts,
    start_wiki_server,
    user_agent_problem,
)

UA = "mlm-pipeline-tests/1.0 (https://example.org/mlm-pipeline; tests@example.org) requests/2"
MAXLAG = {"maxlag": "5"}  # Wikimedia asks every non-interactive Action API client for it


def session(agent: str | None = UA) -> requests.Session:
    s = requests.Session()
    if agent is None:
        del s.headers["User-Agent"]
    else:
        s.headers["User-Agent"] = agent
    return s


@pytest.fixture(scope="module")
def wiki(tiny_world: World) -> Iterator[RunningServer]:
    """One fault-free Wikipedia server for the module; tests compare counters before and after."""
    server = start_wiki_server(tiny_world, "")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def commons(tiny_world: World) -> Iterator[RunningServer]:
    server = start_commons_server(tiny_world, "")
    yield server
    server.stop()


class Changes:
    """Counter changes on a shared server since the object was made."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.before = dict(server.counters)

    def __getitem__(self, key: str) -> int:
        return self.server.counters.get(key, 0) - self.before.get(key, 0)


def extracts(server: RunningServer, lang: str, titles: list[str], **extra: str) -> dict:
    params = {**MAXLAG, "action": "query", "prop": "extracts", "exintro": "1", "explaintext": "1", "titles": "|".join(titles),
              "format": "json", "formatversion": "2", **extra}
    response = session().get(f"{server.url}/{lang}/w/api.php", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def articles(world: World, lang: str) -> list:
    """Places whose sitelink in ``lang`` is a plain existing article (no redirect, not missing)."""
    return [p for p in world.places if lang in p.sitelinks and p.sitelinks[lang] == p.pages.get(lang)
            and lang not in p.redirects and lang not in p.missing_articles]


def filepath_url(server: RunningServer, name: str) -> str:
    return f"{server.url}/wiki/Special:FilePath/{quote(name.replace(' ', '_'), safe='')}"


def photo(world: World, fmt: str = "jpeg", min_width: int = 1300) -> str:
    return next(n for n, f in world.files.items() if f.format == fmt and f.kind == "photo" and f.width >= min_width)


# --- Wikipedia: TextExtracts -------------------------------------------------------------------


def test_a_batch_of_20_then_continuation_gives_every_intro(tiny_world: World, wiki: RunningServer) -> None:
    places = articles(tiny_world, "en")[:25]
    titles = [p.sitelinks["en"] for p in places]
    first = extracts(wiki, "en", titles)
    got = {page["title"]: page["extract"] for page in first["query"]["pages"] if "extract" in page}
    assert len(first["query"]["pages"]) == 25 and len(got) == EXTRACTS_LIMIT
    assert first["continue"]["excontinue"] == EXTRACTS_LIMIT and "batchcomplete" not in first
    assert "extracts" in first["warnings"]
    second = extracts(wiki, "en", titles, excontinue=str(first["continue"]["excontinue"]))
    got.update({page["title"]: page["extract"] for page in second["query"]["pages"] if "extract" in page})
    assert second["batchcomplete"] is True and "continue" not in second
    assert got == {p.sitelinks["en"]: intro(place_facts(tiny_world, p), "en") for p in places}


def test_each_language_has_its_own_intro(tiny_world: World, wiki: RunningServer) -> None:
    for lang in LANGS:
        place = articles(tiny_world, lang)[0]
        (page,) = extracts(wiki, lang, [place.sitelinks[lang]])["query"]["pages"]
        assert page["extract"] == intro(place_facts(tiny_world, place), lang)
        assert place.labels.get("en", place.name) in page["extract"]
    texts = {lang: intro(place_facts(tiny_world, articles(tiny_world, "en")[0]), lang) for lang in LANGS}
    assert len(set(texts.values())) == 3


def test_intros_vary_between_places(tiny_world: World) -> None:
    populated = [place_facts(tiny_world, p) for p in tiny_world.places if p.population and p.coords]
    for lang in LANGS:
        # The population sentence: its first two words tell the templates apart.
        shapes = {tuple(intro(facts, lang).split(". ")[1].split()[:2]) for facts in populated}
        assert len(shapes) >= 3, (lang, shapes)


def test_more_than_50_titles_are_cut_with_a_warning(tiny_world: World, wiki: RunningServer) -> None:
    titles = [p.sitelinks["en"] for p in articles(tiny_world, "en")[: MAX_TITLES + 5]]
    answer = extracts(wiki, "en", titles)
    assert "The limit is 50" in answer["warnings"]["main"]["warnings"]
    assert len(answer["query"]["pages"]) == MAX_TITLES


def test_titles_are_normalised_and_reported(tiny_world: World, wiki: RunningServer) -> None:
    (edge,) = tiny_world.with_edge("title_normalise")
    plain = articles(tiny_world, "en")[0].sitelinks["en"]
    underscored = plain.replace(" ", "_")
    lowered = plain[0].lower() + underscored[1:]
    answer = extracts(wiki, "en", [edge.sitelinks["en"], lowered])
    normalized = {n["from"]: n["to"] for n in answer["query"]["normalized"]}
    assert normalized[edge.sitelinks["en"]] == edge.pages["en"] == normalize_title(edge.sitelinks["en"])
    assert normalized[lowered] == plain
    assert {p["title"] for p in answer["query"]["pages"]} == {edge.pages["en"], plain}
    assert all(p["extract"] for p in answer["query"]["pages"])


def test_redirects_are_followed_only_when_asked(tiny_world: World, wiki: RunningServer) -> None:
    (edge,) = tiny_world.with_edge("title_redirect")
    source, target = edge.sitelinks["de"], edge.redirects["de"]
    followed = extracts(wiki, "de", [source], redirects="1")
    assert followed["query"]["redirects"] == [{"from": source, "to": target}]
    (page,) = followed["query"]["pages"]
    assert page["title"] == target and page["extract"] == intro(place_facts(tiny_world, edge), "de")
    (raw,) = extracts(wiki, "de", [source])["query"]["pages"]
    assert raw["title"] == source and raw["extract"] == "" and "redirects" not in extracts(wiki, "de", [source])["query"]


def test_missing_pages_in_both_format_versions(tiny_world: World, wiki: RunningServer) -> None:
    (edge,) = tiny_world.with_edge("article_missing")
    title = edge.sitelinks["fr"]
    existing = articles(tiny_world, "fr")[0].sitelinks["fr"]
    v2 = extracts(wiki, "fr", [title, existing])
    pages = {p["title"]: p for p in v2["query"]["pages"]}
    assert pages[title]["missing"] is True and "extract" not in pages[title] and pages[existing]["extract"]
    v1 = extracts(wiki, "fr", [title, existing], formatversion="1")
    missing = [p for key, p in v1["query"]["pages"].items() if key.startswith("-")]
    assert missing == [{"ns": 0, "title": title, "missing": ""}] and v1["batchcomplete"] == ""


def test_without_exintro_one_whole_article(tiny_world: World, wiki: RunningServer) -> None:
    places = articles(tiny_world, "en")[:3]
    params = {**MAXLAG, "action": "query", "prop": "extracts", "explaintext": "1", "format": "json", "formatversion": "2",
              "titles": "|".join(p.sitelinks["en"] for p in places)}
    answer = session().get(f"{wiki.url}/en/w/api.php", params=params, timeout=10).json()
    with_text = [p for p in answer["query"]["pages"] if "extract" in p]
    assert len(with_text) == 1 and "continue" in answer
    place = next(p for p in places if p.sitelinks["en"] == with_text[0]["title"])
    assert with_text[0]["extract"] == full_text(place_facts(tiny_world, place), "en") and "==" in with_text[0]["extract"]


def test_api_posts_and_errors(tiny_world: World, wiki: RunningServer) -> None:
    changes = Changes(wiki)
    title = articles(tiny_world, "en")[0].sitelinks["en"]
    posted = session().post(f"{wiki.url}/en/w/api.php", data={**MAXLAG, "action": "query", "prop": "extracts", "exintro": "1",
                                                               "explaintext": "1", "titles": title, "format": "json"}, timeout=10)
    assert list(posted.json()["query"]["pages"].values())[0]["extract"]
    assert session().get(f"{wiki.url}/en/w/api.php", params={**MAXLAG, "action": "parse", "format": "json"}, timeout=10).json()["error"]["code"] == "badvalue"
    assert session().get(f"{wiki.url}/xx/w/api.php", timeout=10).status_code == 404
    assert changes["violations"] == 0 and changes["served:api"] == 1  # errors are no answers


# --- Commons: files, thumbnails, metadata ------------------------------------------------------


def test_thumbnails_at_standard_widths(tiny_world: World, commons: RunningServer) -> None:
    changes = Changes(commons)
    name = photo(tiny_world)
    info = tiny_world.files[name]
    s = session()
    for width in (120, 250, 330, 960):
        hop = s.get(filepath_url(commons, name), params={"width": width}, allow_redirects=False, timeout=10)
        assert hop.status_code == 302 and f"/{width}px-" in hop.headers["Location"]
        thumb = s.get(hop.headers["Location"], timeout=10)
        assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"
        img = Image.open(io.BytesIO(thumb.content))
        img.load()
        assert img.format == "JPEG" and img.size == (width, imagegen.thumb_height(width, (info.width, info.height)))
    assert s.get(filepath_url(commons, name), params={"width": 250}, timeout=10).content == thumb_bytes(commons, name, 250)
    assert changes["violations"] == 0 and changes["served:thumb"] == 6


def thumb_bytes(server: RunningServer, name: str, width: int) -> bytes:
    return session().get(filepath_url(server, name), params={"width": width}, timeout=10).content


def test_svg_thumbnails_are_png_and_originals_svg(tiny_world: World, commons: RunningServer) -> None:
    name = next(n for n, f in tiny_world.files.items() if f.format == "svg")
    s = session()
    hop = s.get(filepath_url(commons, name), params={"width": 250}, allow_redirects=False, timeout=10)
    assert hop.headers["Location"].endswith(quote(f"250px-{name}.png".replace(" ", "_"), safe="()!,;:@$*'"))
    thumb = s.get(hop.headers["Location"], timeout=10)
    assert thumb.headers["Content-Type"] == "image/png" and Image.open(io.BytesIO(thumb.content)).format == "PNG"
    original = s.get(filepath_url(commons, name), timeout=10)
    assert original.headers["Content-Type"] == "image/svg+xml"
    assert ET.fromstring(original.content).tag == "{http://www.w3.org/2000/svg}svg"


def test_wide_requests_get_the_original_of_the_size_imageinfo_reports(tiny_world: World, commons: RunningServer) -> None:
    name = next(n for n, f in tiny_world.files.items() if f.format == "jpeg" and f.width <= 1024)
    info = tiny_world.files[name]
    s = session()
    hop = s.get(filepath_url(commons, name), params={"width": 1280}, allow_redirects=False, timeout=10)
    assert "/w/images/" in hop.headers["Location"]
    original = s.get(hop.headers["Location"], timeout=30)
    assert Image.open(io.BytesIO(original.content)).size == (info.width, info.height)
    meta = s.get(f"{commons.url}/w/api.php", params={**MAXLAG, "action": "query", "prop": "imageinfo", "iiprop": "size|url|mime",
                                                     "titles": f"File:{name}", "format": "json", "formatversion": "2"}, timeout=10).json()
    (page,) = meta["query"]["pages"]
    assert page["imageinfo"][0]["size"] == len(original.content) and page["imageinfo"][0]["url"] == hop.headers["Location"]


def test_imageinfo_licence_attribution_normalisation_and_missing(tiny_world: World, commons: RunningServer) -> None:
    names = [n for n in tiny_world.files if tiny_world.files[n].license and metadata_gap(n) is None][:3]
    titles = [f"File:{names[0]}", f"file:{names[1].replace(' ', '_')}", f"Image:{names[2]}", "File:No such file.jpg"]
    params = {**MAXLAG, "action": "query", "prop": "imageinfo", "iiprop": "extmetadata|url|size|mime", "titles": "|".join(titles),
              "format": "json", "formatversion": "2", "iiurlwidth": "250"}
    answer = session().get(f"{commons.url}/w/api.php", params=params, timeout=10).json()
    pages = {p["title"]: p for p in answer["query"]["pages"]}
    assert {n["to"] for n in answer["query"]["normalized"]} == {f"File:{names[1]}", f"File:{names[2]}"}
    assert pages["File:No such file.jpg"]["missing"] is True
    for name in names:
        info = pages[f"File:{name}"]["imageinfo"][0]
        meta = info["extmetadata"]
        assert meta["LicenseShortName"]["value"] == tiny_world.files[name].license
        assert tiny_world.files[name].author in meta["Artist"]["value"]
        assert info["mime"] == imagegen_mime(tiny_world.files[name].format)
        assert (info["width"], info["height"]) == (tiny_world.files[name].width, tiny_world.files[name].height)
        assert info["thumbwidth"] == min(250, info["width"]) or tiny_world.files[name].format == "svg"


def imagegen_mime(fmt: str) -> str:
    return {"jpeg": "image/jpeg", "png": "image/png", "svg": "image/svg+xml"}[fmt]


def test_tricky_file_names_are_served(tiny_world: World, commons: RunningServer) -> None:
    tricky = [n for p in tiny_world.with_edge("tricky_file_names") + tiny_world.with_edge("tricky_file_names_2")
              for n in p.images["P18"]]
    assert any("/" in n for n in tricky) and any("?" in n for n in tricky)
    for name in tricky:
        response = session().get(filepath_url(commons, name), params={"width": 120}, timeout=10)
        assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).width == 120
    assert session().get(filepath_url(commons, "No such file.jpg"), timeout=10).status_code == 404


# --- Wikimedia's rules -------------------------------------------------------------------------


def test_nonstandard_widths_get_429_and_count(tiny_world: World, commons: RunningServer) -> None:
    changes = Changes(commons)
    name = photo(tiny_world)
    s = session()
    hop = s.get(filepath_url(commons, name), params={"width": 251}, allow_redirects=False, timeout=10)
    refused = s.get(hop.headers["Location"], timeout=10)
    # As upload.wikimedia.org: no Retry-After, since waiting cures nothing (clients must not
    # take it for throttling).
    assert refused.status_code == 429 and "Retry-After" not in refused.headers and "w.wiki/GHai" in refused.text
    assert 251 not in STANDARD_WIDTHS
    assert changes["violation:thumb_width"] == 1 == changes["violations"]


@pytest.mark.parametrize("agent", [None, "", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "python-requests/2.32.0",
                                   "my-bot/1.0", "aiohttp/3.9"])
def test_bad_user_agents_get_403(tiny_world: World, wiki: RunningServer, commons: RunningServer, agent: str | None) -> None:
    assert user_agent_problem(agent) is not None
    on_commons, on_wiki = Changes(commons), Changes(wiki)
    s = session(agent)
    assert s.get(filepath_url(commons, photo(tiny_world)), params={"width": 250}, timeout=10).status_code == 403
    assert s.get(f"{wiki.url}/en/w/api.php", params={**MAXLAG, "action": "query", "titles": "X", "format": "json"}, timeout=10).status_code == 403
    assert on_commons["violation:user_agent"] == 1 == on_commons["violations"]
    assert on_wiki["violation:user_agent"] == 1 == on_wiki["violations"]


def test_policy_user_agents_pass() -> None:
    for agent in (UA, "mlm-pipeline/0.1.0 (https://github.com/mlm-pipeline/mlm-pipeline (offline embedded world)) aiohttp/3.14.5",
                  "CoolBot/0.1 (jane@example.org) pywikibot/9"):
        assert user_agent_problem(agent) is None


def parallel_get(urls: list[str], agents: list[str]) -> list[requests.Response]:
    results: list[requests.Response | None] = [None] * len(urls)
    start = threading.Barrier(len(urls))

    def fetch(i: int) -> None:
        s = session(agents[i])
        start.wait()
        results[i] = s.get(urls[i], timeout=30)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results  # type: ignore[return-value]


def test_media_concurrency_limit_per_client(tiny_world: World) -> None:
    # Latency keeps each request in flight long enough for the others to arrive.
    server = start_commons_server(tiny_world, "latency=0.6")
    try:
        names = [n for n, f in tiny_world.files.items() if f.format == "jpeg" and f.width > 500][:4]
        urls = [f"{filepath_url(server, n)}?width=120" for n in names]
        two_clients = parallel_get(urls, [UA, UA, UA + " second", UA + " second"])
        assert all(r.status_code == 200 for r in two_clients)
        assert server.counters.get("violations", 0) == 0
        over = parallel_get(urls, [UA] * len(urls))
        refused = [r for r in over if r.status_code == 429]
        assert refused and all(r.headers["Retry-After"] == "1" for r in refused)
        assert server.counters["violation:concurrency"] == len(refused) == server.counters["violations"]
        assert server.counters["max_inflight:media"] == 2
    finally:
        server.stop()


@pytest.mark.parametrize("which", ["wiki", "commons"])
def test_action_api_calls_go_in_series_with_maxlag(tiny_world: World, wiki: RunningServer, commons: RunningServer,
                                                   which: str) -> None:
    """API:Etiquette: requests in series, not in parallel; Manual:Maxlag_parameter: maxlag=5 on
    every non-interactive request. A second call in flight is refused and counted; a call
    without maxlag is answered and counted."""
    # A second of latency keeps the first call in flight until the others arrive, even on a busy machine.
    server = start_wiki_server(tiny_world, "latency=1") if which == "wiki" else start_commons_server(tiny_world, "latency=1")
    try:
        url = f"{server.url}/en/w/api.php" if which == "wiki" else f"{server.url}/w/api.php"
        urls = [f"{url}?action=query&format=json&maxlag=5&titles=A{i}" for i in range(3)]
        together = parallel_get(urls, [UA] * 3)
        assert sorted(r.status_code for r in together) == [200, 429, 429]
        assert server.counters["violation:concurrency"] == 2 == server.counters["violations"]
        assert server.counters["max_inflight:api"] == 1
        others = [u.replace("titles=A", "titles=C") for u in urls]  # not what was refused: no Retry-After pending
        other_clients = parallel_get(others, [UA, UA + " b", UA + " c"])  # one call at a time per client
        assert [r.status_code for r in other_clients] == [200] * 3
        assert session().get(url, params={"action": "query", "format": "json", "titles": "B"}, timeout=10).status_code == 200
        assert server.counters["violation:maxlag"] == 1 and server.counters["violations"] == 3
    finally:
        server.stop()


def test_a_lagged_api_answers_as_mediawiki_documents(tiny_world: World) -> None:
    server = start_wiki_server(tiny_world, "wiki.maxlag=1,retry_after=5")
    try:
        s = session()
        lagged = s.get(f"{server.url}/en/w/api.php", params={**MAXLAG, "action": "query", "format": "json", "titles": "A"},
                       timeout=10)
        assert lagged.status_code == 200  # an error in the body, HTTP 200 all the same (T33156)
        error = lagged.json()["error"]
        assert error["code"] == "maxlag" and error["lag"] > 5 and "seconds lagged" in error["info"]
        assert lagged.headers["Retry-After"] == "5" and int(lagged.headers["X-Database-Lag"]) == error["lag"]
        s.get(f"{server.url}/en/w/api.php", params={**MAXLAG, "action": "query", "format": "json", "titles": "A"},
              timeout=10)  # at once, not after the five seconds asked for
        assert server.counters["violation:retry_after"] == 1 == server.counters["violations"]
    finally:
        server.stop()


def test_an_oversized_api_answer_is_valid_json_far_too_large(tiny_world: World) -> None:
    server = start_wiki_server(tiny_world, "wiki.oversize=1")
    try:
        title = articles(tiny_world, "en")[0].sitelinks["en"]
        answer = session().get(f"{server.url}/en/w/api.php", params={**MAXLAG, "action": "query", "format": "json",
                                                                     "titles": title}, timeout=30)
        assert len(answer.content) > OVERSIZE_BYTES and answer.json()["query"]["pages"]
    finally:
        server.stop()


def test_asking_again_before_retry_after_is_a_violation(tiny_world: World) -> None:
    server = start_commons_server(tiny_world, "commons.http429=1,retry_after=0.3")
    try:
        url = f"{filepath_url(server, photo(tiny_world))}?width=250"
        s = session()
        first = s.get(url, allow_redirects=False, timeout=10)
        assert first.status_code == 429 and first.headers["Retry-After"] == "1"
        time.sleep(0.4)
        s.get(url, allow_redirects=False, timeout=10)
        assert server.counters.get("violations", 0) == 0
        s.get(url, allow_redirects=False, timeout=10)  # at once, after the second 429
        assert server.counters["violation:retry_after"] == 1 == server.counters["violations"]
    finally:
        server.stop()


# --- faults ------------------------------------------------------------------------------------


def faulty_commons(world: World, kind: str, extra: str = "") -> RunningServer:
    return start_commons_server(world, f"commons.{kind}=1{extra}")


def get_thumb(server: RunningServer, name: str, width: int = 250) -> requests.Response:
    """The thumbnail URL itself, so that the fault under test hits the thumbnail and not the redirect."""
    return session().get(thumb_url(server, name, width), timeout=10)


def thumb_url(server: RunningServer, name: str, width: int) -> str:
    from mlm_pipeline.world.commons_server import hash_dirs, thumb_name, url_name

    as_png = server.server.RequestHandlerClass.files.find(name).renders_as_png()  # type: ignore[attr-defined]
    a, ab = hash_dirs(name)
    return f"{server.url}/w/thumb/{a}/{ab}/{url_name(name)}/{url_name(thumb_name(name, width, as_png))}"


def undecodable(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return False
    except (OSError, Image.DecompressionBombError, SyntaxError):
        return True


def test_fault_kinds_on_thumbnails(tiny_world: World) -> None:
    name = photo(tiny_world)
    good = imagegen.thumbnail_bytes(server_picture(tiny_world, name), 250)
    observed: dict[str, bool] = {}
    for kind in ("http429", "http5xx", "truncate", "corrupt", "content_type", "garbage"):
        server = faulty_commons(tiny_world, kind)
        try:
            if kind == "truncate":
                with pytest.raises(requests.exceptions.RequestException):
                    get_thumb(server, name).content
                observed[kind] = True
            else:
                r = get_thumb(server, name)
                observed[kind] = {
                    "http429": r.status_code == 429 and "Retry-After" in r.headers,
                    "http5xx": 500 <= r.status_code <= 504,
                    "corrupt": r.status_code == 200 and r.content[:2] == good[:2] and undecodable(r.content),
                    "content_type": r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"),
                    "garbage": r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg" and undecodable(r.content),
                }[kind]
            assert server.counters[f"fault:{kind}"] == 1 == server.counters["faults"]
            assert server.counters.get("violations", 0) == 0
        finally:
            server.stop()
    assert observed == dict.fromkeys(observed, True)


def server_picture(world: World, name: str) -> imagegen.Picture:
    from mlm_pipeline.world.commons_server import FileIndex

    return FileIndex(world).find(name).pic  # type: ignore[union-attr]


def test_timeout_fault_leaves_the_client_waiting(tiny_world: World) -> None:
    server = faulty_commons(tiny_world, "timeout", ",hang=2")
    try:
        with pytest.raises(requests.exceptions.ReadTimeout):
            session().get(thumb_url(server, photo(tiny_world), 250), timeout=0.5)
        assert server.counters["fault:timeout"] == 1
    finally:
        server.stop()


def test_redirect_loop_fault(tiny_world: World) -> None:
    server = faulty_commons(tiny_world, "redirect_loop")
    try:
        with pytest.raises(requests.exceptions.TooManyRedirects):
            session().get(filepath_url(server, photo(tiny_world)), params={"width": 250}, timeout=10)
        assert server.counters["fault:redirect_loop"] == 1
    finally:
        server.stop()


def test_oversize_fault_variants(tiny_world: World) -> None:
    server = faulty_commons(tiny_world, "oversize")
    names = [n for n, f in tiny_world.files.items() if f.format == "jpeg" and f.width >= 800][:10]
    forms = set()
    try:
        for name in names:
            r = session().get(thumb_url(server, name, 120), timeout=30)
            assert r.status_code == 200
            if len(r.content) >= OVERSIZE_BYTES:
                forms.add("padded")
                continue
            try:
                with Image.open(io.BytesIO(r.content)) as img:
                    assert img.size == (tiny_world.files[name].width, tiny_world.files[name].height)
                    forms.add("original")
            except Image.DecompressionBombError:
                forms.add("bomb")
        assert forms == {"padded", "original", "bomb"}
        assert server.counters["fault:oversize"] == len(names)
    finally:
        server.stop()


def test_api_faults_and_retries_that_succeed(tiny_world: World) -> None:
    title = articles(tiny_world, "en")[0].sitelinks["en"]
    for kind in ("garbage", "corrupt", "content_type"):
        server = start_wiki_server(tiny_world, f"wiki.{kind}=1")
        try:
            r = session().get(f"{server.url}/en/w/api.php", params={**MAXLAG, "action": "query", "titles": title, "format": "json"}, timeout=10)
            assert r.status_code == 200
            if kind == "content_type":
                assert r.headers["Content-Type"].startswith("text/html")
            else:
                with pytest.raises(ValueError):
                    r.json()
        finally:
            server.stop()
    server = start_wiki_server(tiny_world, "wiki.http5xx=0.5,seed=11")
    try:
        statuses = []
        s = session()
        while not statuses or statuses[-1] != 200:
            statuses.append(s.get(f"{server.url}/en/w/api.php", params={**MAXLAG, "action": "query", "titles": title, "format": "json"}, timeout=10).status_code)
            assert len(statuses) < 30
        assert server.counters.get("fault:http5xx", 0) == len(statuses) - 1
    finally:
        server.stop()


def test_served_counts_name_each_success(tiny_world: World, commons: RunningServer) -> None:
    from mlm_pipeline.world.wiki_server import served_counts

    name = photo(tiny_world, min_width=300)
    before = served_counts(commons)[f"thumb:{name}:250"]
    thumb_bytes(commons, name, 250)
    thumb_bytes(commons, name, 250)
    assert served_counts(commons)[f"thumb:{name}:250"] == before + 2


# --- pictures ----------------------------------------------------------------------------------


def test_pictures_are_deterministic_and_vary_with_the_place() -> None:
    a = imagegen.Picture("Town.jpg", "photo", "jpeg", 48.0, 2.0, 4000, 3000)
    b = imagegen.Picture("Town.jpg", "photo", "jpeg", -33.0, 151.0, 4000, 3000)
    assert imagegen.encode(imagegen.raster(a, 250), "jpeg") == imagegen.encode(imagegen.raster(a, 250), "jpeg")
    pixels_a = imagegen.raster(a, 120).convert("L").tobytes()
    pixels_b = imagegen.raster(b, 120).convert("L").tobytes()
    assert pixels_a != pixels_b
    assert len(set(pixels_a)) > 50  # a scene, not a flat colour
    assert imagegen.declared_size(a) == len(imagegen.original_bytes(a))
