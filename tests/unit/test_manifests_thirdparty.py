"""Manifests nobody here wrote (tests/data/manifests/thirdparty, each file names its source repository and path):
a Helm-rendered ingress-nginx install, kube-prometheus CRDs (Go's YAML writer leaves `=` unquoted), a Knative
`serving.knative.dev/v1` Service dumped next to the core ExternalName Service Knative created under the same name,
the multi-cluster (KEP-1645) ServiceImport and v1beta1 EndpointSlice, and the Endpoints example of the Kubernetes
API documentation (two subsets with their own ports).

Each file must be read without any error, with exactly the objects of ours listed here; everything else in it is
skipped (counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dnsd.sources.manifests import parse_file
from dnsd.store.model import EndpointPort, EndpointSlice, Service, ServicePort, object_key

THIRDPARTY = Path(__file__).resolve().parent.parent / "data" / "manifests" / "thirdparty"

Key = tuple[str, str, str]


@dataclass(frozen=True)
class ThirdParty:
    file: str
    keys: list[Key]  # our objects, in file order
    skipped: int  # objects that are not ours


CASES = [
    ThirdParty("ingress-nginx-deploy.yaml", [
        ("Namespace", "", "ingress-nginx"),
        ("Service", "ingress-nginx", "ingress-nginx-controller"),
        ("Service", "ingress-nginx", "ingress-nginx-controller-admission"),
    ], 4),  # ServiceAccount, ConfigMap, IngressClass, ValidatingWebhookConfiguration
    ThirdParty("kube-prometheus-setup.yaml", [("Service", "monitoring", "prometheus-operator")], 1),  # the CRD
    ThirdParty("knative-horse-jaskier.yaml", [("Service", "default", "horse-jaskier")], 2),  # Deployment, ksvc
    ThirdParty("mcs-kep-1645.yaml", [], 2),  # ServiceImport, v1beta1 EndpointSlice without the service label
    ThirdParty("endpoints-api-doc-example.yaml",
               [("Endpoints", "default", "mysvc"), ("Service", "default", "mysvc")], 0),
]  # fmt: skip


def test_every_thirdparty_file_is_in_the_table() -> None:
    assert sorted(p.name for p in THIRDPARTY.iterdir()) == sorted(c.file for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_thirdparty_file(case: ThirdParty) -> None:
    path = THIRDPARTY / case.file
    assert path.read_text().startswith("# Source: "), "each file names where it comes from"
    parsed = parse_file(path)
    assert parsed.objects is not None, parsed.error
    assert parsed.errors == ()
    assert [object_key(obj) for obj, _ in parsed.objects] == case.keys
    assert parsed.skipped == case.skipped


def _objects(name: str) -> dict[Key, object]:
    parsed = parse_file(THIRDPARTY / name)
    assert parsed.objects is not None, parsed.error
    return {object_key(obj): obj for obj, _ in parsed.objects}


def test_knative_service_does_not_replace_the_core_externalname() -> None:
    """The later `serving.knative.dev/v1` Service of the same name is not a core Service (defect 3)."""
    svc = _objects("knative-horse-jaskier.yaml")[("Service", "default", "horse-jaskier")]
    assert svc == Service("default", "horse-jaskier", "ExternalName", (), False, (ServicePort("http2", 80, "tcp"),),
                          "kourier-internal.kourier-system.svc.cluster.local", False)  # fmt: skip


def test_endpoints_subsets_keep_their_own_ports() -> None:
    """The API doc's example: 10.10.1.1 and 10.10.2.2 serve a=8675 b=309, 10.10.3.3 serves a=93 b=76 (defect 5)."""
    eps = _objects("endpoints-api-doc-example.yaml")[("Endpoints", "default", "mysvc")]
    assert isinstance(eps, EndpointSlice)
    got = [([a for ep in part.endpoints for a in ep.addresses], part.ports) for part in eps.subsets]
    assert got == [
        (["10.10.1.1", "10.10.2.2"], (EndpointPort("a", 8675, "tcp"), EndpointPort("b", 309, "tcp"))),
        (["10.10.3.3"], (EndpointPort("a", 93, "tcp"), EndpointPort("b", 76, "tcp"))),
    ]


def test_helm_rendered_services() -> None:
    """A LoadBalancer Service rendered before the API server allocates its IP: it exists, with no address yet."""
    svc = _objects("ingress-nginx-deploy.yaml")[("Service", "ingress-nginx", "ingress-nginx-controller")]
    assert svc == Service("ingress-nginx", "ingress-nginx-controller", "LoadBalancer", (), False,
                          (ServicePort("http", 80, "tcp"), ServicePort("https", 443, "tcp")), "", False)  # fmt: skip
