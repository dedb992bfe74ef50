"""bench/gen.py: its manifests are what yaml.dump writes and dnsd reads, its zone is one NSD loads, its query files
hold the mix it reports and names that never repeat, and a rerun with the same parameters writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from support import REPO

from dnsd.sources.manifests import parse_file

GEN = REPO / "bench" / "gen.py"
sys.path.insert(0, str(REPO / "bench"))
import gen  # noqa: E402  (bench/gen.py)

# services, namespaces, headless every Nth: small, and each with headless services (hostnames and dashed IPs),
# not-ready endpoints, unnamed and several named ports (gen.build_model's rules)
SIZES = [
    pytest.param(40, 6, 10, id="40-services-6-ns"),
    pytest.param(120, 3, 4, id="120-services-3-ns-headless-every-4"),
    pytest.param(35, 1, 10, id="35-services-1-ns"),
]


def run_gen(out: Path, *args: str) -> str:
    cmd = [sys.executable, str(GEN), "--out", str(out), *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.mark.parametrize(("services", "namespaces", "every"), SIZES)
def test_manifest_text_is_what_yaml_dump_writes(services: int, namespaces: int, every: int) -> None:
    """The templates against the dicts through yaml.safe_dump, document by document (the reference the text
    writer replaced for speed)."""
    model = gen.build_model(services, namespaces, every, seed=1)
    assert any(s.headless for s in model) and any(not e.ready for s in model for e in s.endpoints)
    assert any(e.hostname for s in model for e in s.endpoints) and any(not p.name for s in model for p in s.ports)
    for s in model:
        assert gen.service_yaml(s) == yaml.safe_dump(gen.service_manifest(s), sort_keys=False), s.name
        assert gen.slice_yaml(s, "abc12") == yaml.safe_dump(gen.slice_manifest(s, "abc12"), sort_keys=False), s.name
    assert gen.namespace_yaml("shop") == yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop"}},
        },
        sort_keys=False,
    )


@pytest.mark.parametrize("value", ["8r6v7", "yes", "null", "1e5", "a b", "Api", "x:y", ""])
def test_a_value_that_would_need_quoting_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="quoting"):
        gen._plain(value)


@pytest.mark.parametrize(("services", "namespaces", "every"), SIZES)
def test_output_is_served_by_dnsd_and_nsd(tmp_path: Path, services: int, namespaces: int, every: int) -> None:
    run_gen(tmp_path, "--services", str(services), "--namespaces", str(namespaces), "--headless-every", str(every),
            "--queries", "500", "--unique", "3000")  # fmt: skip
    summary = json.loads((tmp_path / "expected.json").read_text())
    # the manifests, through dnsd's own parser: no error, every object kept
    kinds: Counter[str] = Counter()
    for f in sorted((tmp_path / "cluster").glob("*.yaml")):
        parsed = parse_file(f)
        assert parsed.objects is not None, parsed.error
        assert not parsed.errors and not parsed.skipped, (parsed.errors, parsed.skipped)
        kinds.update(type(obj).__name__ for obj, _line in parsed.objects)
    assert kinds == {"Namespace": namespaces, "Service": services, "EndpointSlice": services}
    assert summary["manifest_files"] == namespaces
    # the zone, through NSD's own checker
    zone = tmp_path / "nsd" / "cluster.local.zone"
    check = subprocess.run(["nsd-checkzone", "cluster.local", str(zone)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    owners = {ln.split()[0].lower() for ln in zone.read_text().splitlines() if ln and not ln.startswith((";", "$"))}
    # the query mix: the counts expected.json reports, A and SRV names that exist, NXDOMAIN names that do not
    lines = (tmp_path / "queries.txt").read_text().splitlines()
    by_type = Counter(ln.split()[1] for ln in lines)
    mix = summary["query_mix"]
    assert by_type == {"A": mix["A"] + mix["NXDOMAIN"], "SRV": mix["SRV"]}
    missing = Counter(f"{ln.split()[0]}." in owners for ln in lines)
    assert missing == {True: mix["A"] + mix["SRV"], False: mix["NXDOMAIN"]}
    # the never-repeated stream: as many as asked, no name twice, all under default.svc.cluster.local, none a name
    unique = [ln.split() for ln in (tmp_path / "unique.txt").read_text().splitlines()]
    names = [name for name, _ in unique]
    assert len(names) == 3000 == summary["unique_queries"]
    assert len(set(names)) == len(names)
    assert {qtype for _, qtype in unique} == {"A"}
    assert all(n.endswith(".default.svc.cluster.local") and n.count(".") == 4 for n in names)
    assert not {f"{n}." for n in names} & owners


def test_same_seed_same_output_other_seed_other_queries(tmp_path: Path) -> None:
    outputs = {}
    for run, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        run_gen(tmp_path / run, "--services", "30", "--queries", "200", "--unique", "100", "--seed", seed)
        files = [
            "queries.txt",
            "unique.txt",
            "nsd/cluster.local.zone",
            *(f"cluster/{ns}.yaml" for ns in gen.NAMESPACES[:6]),
        ]
        outputs[run] = {f: (tmp_path / run / f).read_bytes() for f in files}
    assert outputs["a"] == outputs["b"]
    assert outputs["a"]["queries.txt"] != outputs["c"]["queries.txt"]
    assert outputs["a"]["unique.txt"] != outputs["c"]["unique.txt"]


@pytest.mark.parametrize(
    ("change", "regenerated"),
    [
        pytest.param([], False, id="same-parameters"),
        pytest.param(["--services", "31"], True, id="other-size"),
        pytest.param(["--unique", "50"], True, id="other-unique-count"),
        pytest.param(["--seed", "3"], True, id="other-seed"),
        pytest.param("delete queries.txt", True, id="a-file-gone"),
        pytest.param("delete gen-params.json", True, id="no-stamp"),
    ],
)
def test_cached_rerun(tmp_path: Path, change: list[str] | str, regenerated: bool) -> None:
    base = ["--services", "30", "--queries", "200", "--unique", "100", "--cached"]
    run_gen(tmp_path, *base)
    zone = tmp_path / "nsd" / "cluster.local.zone"
    os.utime(zone, (1, 1))  # a rewrite changes it
    extra: list[str] = []
    if isinstance(change, str):
        (tmp_path / change.split()[1]).unlink()
    else:
        extra = change
    out = run_gen(tmp_path, *base, *extra)
    assert (", cached in " not in out) == regenerated, out
    assert (zone.stat().st_mtime != 1) == regenerated
    assert (tmp_path / "queries.txt").exists() and (tmp_path / "gen-params.json").exists()
