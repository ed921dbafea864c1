"""Property check of the URL fetcher: whatever string a client sends as an image URL, and
whatever its host resolves to inside the refused ranges, the answer is a documented error and
nothing is dialled (the test network records and refuses any dial that is not loopback)."""

from __future__ import annotations

import asyncio
import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dupify.config import ImageUrlSettings
from dupify.errors import ApiError
from dupify.images.fetch import UrlFetcher
from dupify.images.urlguard import IPAddress
from support.image_server import RecordingNetwork

DOCUMENTED = {"url_forbidden", "url_unreachable", "invalid_request"}
REFUSED_ANSWERS = [
    "127.0.0.1",
    "10.1.2.3",
    "169.254.169.254",
    "100.64.0.9",
    "::1",
    "fe80::1",
    "::ffff:192.168.0.1",
    "0.0.0.0",
]

hosts = st.one_of(
    st.sampled_from(["images.test", "localhost", "127.1", "2130706433", "0x7f.0.0.1", "[::1]"]),
    st.sampled_from(REFUSED_ANSWERS).map(lambda a: f"[{a}]" if ":" in a else a),
    st.text(min_size=0, max_size=30),
)
urls = st.builds(
    lambda scheme, userinfo, host, port, path: f"{scheme}{userinfo}{host}{port}{path}",
    st.sampled_from(["https://", "http://", "HTTPS://", "https:/", "https:\\\\"]),
    st.sampled_from(["", "user@", "a:b@", "@"]),
    hosts,
    st.sampled_from(["", ":443", ":80", ":8080", ":0", ":99999", ":x"]),
    st.text(max_size=40),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=urls, answer=st.lists(st.sampled_from(REFUSED_ANSWERS), min_size=1, max_size=3))
def test_any_url_is_refused_with_a_documented_error_and_never_dialled(
    url: str, answer: list[str]
) -> None:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(address) for address in answer]

    network = RecordingNetwork()
    fetcher = UrlFetcher(
        ImageUrlSettings(allow_http=True, timeout_s=2), 1024, resolver=resolve, network=network
    )
    (outcome,) = asyncio.run(fetcher.fetch_all([("input", url)]))
    assert isinstance(outcome, ApiError)
    assert outcome.code in DOCUMENTED, outcome.message
    assert outcome.param == "input"
    assert network.dials == [] and network.refused_dials == []
