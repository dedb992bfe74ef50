"""Loading one zone file: the origin rule, the files never read, and the `PATH:LINE: reason` of a broken file."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsd.proto.answer import zone_tag
from dnsd.zones import source
from dnsd.zones.zone import ZoneError, is_zone_file, load_zone

HEAD = "$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\n"


@pytest.mark.parametrize(
    ("filename", "text", "origin"),
    [
        ("example.org.zone", HEAD, "example.org"),  # no $ORIGIN: the file name less .zone
        ("example.org", HEAD, "example.org"),
        ("Example.ORG.zone", HEAD, "example.org"),  # origins are compared lower-case
        ("whatever.zone", "$ORIGIN corp.example.\n" + HEAD, "corp.example"),  # $ORIGIN wins over the file name
        ("db.txt.zone", "$ORIGIN a.b.\n" + HEAD, "a.b"),
    ],
)
def test_origin(tmp_path: Path, filename: str, text: str, origin: str) -> None:
    path = tmp_path / filename
    path.write_text(text)
    zone = load_zone(path)
    assert zone.origin == tuple(origin.split("."))
    assert zone.tag == zone_tag(origin)


@pytest.mark.parametrize(
    ("filename", "read"),
    [
        ("example.org.zone", True),
        ("example.org", True),
        ("README.md", False),
        ("notes.txt", False),
        (".example.org.zone.swp", False),
        ("example.org.zone~", False),
        ("example.org.zone.tmp", False),
        ("example.org.zone.bak", False),
        ("example.org.zone.dpkg-old", False),
        (".hidden", False),
    ],
)
def test_which_files_are_zones(filename: str, read: bool) -> None:
    assert is_zone_file(Path(filename)) is read


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("bad IN A 999.1.2.3\n", ":5: "),  # dnspython sees this one only after the line's end: still line 5
        ("bad IN FOO 1\n", ":5: unknown rdatatype 'FOO'"),
        ("bad IN MX 10\n", ":5: expecting an identifier"),
        ("bad IN A 192.0.2.1 extra\n", ':5: expected EOL or EOF, got 3 "extra"'),
        ("ok IN A 192.0.2.2\nbad IN SOA ( a b 1 2\n 3 4 5 6 )\n", ':7: expected EOL or EOF, got 3 "6"'),  # multi-line
        ("$INCLUDE /etc/passwd\n", ":5: "),  # $INCLUDE is refused: a zone file names no other file
        # CNAME and other data (RFC 1034 3.6.2): found when the zone is checked as a whole, so no line
        ("www IN CNAME a\nwww IN A 192.0.2.3\n", ": rdataset type is not compatible with a CNAME node"),
    ],
)
def test_broken_file_names_path_and_line(tmp_path: Path, body: str, error: str) -> None:
    path = tmp_path / "example.org.zone"
    path.write_text(HEAD + body)
    with pytest.raises(ZoneError) as exc:
        load_zone(path)
    assert str(exc.value).startswith(f"{path}{error}"), str(exc.value)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("$TTL 300\n@ IN NS ns1\n", ": no SOA record at the zone apex"),
        ("$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n", ": no NS records at the zone apex"),
        ("", ": no SOA record at the zone apex"),
    ],
)
def test_incomplete_zone(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "example.org.zone"
    path.write_text(text)
    with pytest.raises(ZoneError) as exc:
        load_zone(path)
    assert str(exc.value) == f"{path}{error}"


def test_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "example.org.zone"
    with pytest.raises(ZoneError) as exc:
        load_zone(path)
    assert str(exc.value) == f"{path}: No such file or directory"


@pytest.mark.parametrize(
    ("soa", "neg_ttl"),
    [
        ("@ 300 IN SOA ns1 h 1 2 3 4 60", 60),  # MINIMUM below the SOA TTL
        ("@ 30 IN SOA ns1 h 1 2 3 4 600", 30),  # the SOA TTL below MINIMUM (RFC 2308 3)
    ],
)
def test_negative_ttl(tmp_path: Path, soa: str, neg_ttl: int) -> None:
    path = tmp_path / "example.org.zone"
    path.write_text(f"{soa}\n@ 300 IN NS ns1\n")
    assert load_zone(path).soa_neg.ttl == neg_ttl


@pytest.mark.parametrize(
    ("size", "error"),
    [
        (100, None),
        (10, ": larger than {limit} octets; not read"),  # the limit, lowered for the test, is below the file
    ],
)
def test_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, error: str | None) -> None:
    """A zone file bigger than the limit is reported and never read into memory."""
    path = tmp_path / "example.org.zone"
    path.write_text(HEAD)
    limit = len(HEAD) * size // 50
    monkeypatch.setattr(source, "MAX_ZONE_BYTES", limit)
    got = source.scan(tmp_path, {}).parsed[path]
    if error is None:
        assert not isinstance(got, ZoneError), got
    else:
        assert isinstance(got, ZoneError) and str(got) == f"{path}{error.format(limit=limit)}"
