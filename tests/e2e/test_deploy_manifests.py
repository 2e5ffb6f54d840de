#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
test_deploy_manifests.py - the Kubernetes manifests of deploy/ are accepted
by a real API server, and meshd's RBAC is what it reads and nothing more.

Starts etcd and kube-apiserver through tests/lib/kube.py and sends every
object of deploy/cluster/*.yaml (and of the standalone deploy/daemonset.yaml)
as a server-side apply with dryRun=All and fieldValidation=Strict, as
`kubectl apply --server-side --dry-run=server` does: each must be accepted
and must not exist afterwards. The namespace is then created for real (the
namespaced dry runs need it). An unknown field and an invalid value in the
DaemonSet are refused, which shows the dry run validates. The DaemonSet's
pod template, sent as a Pod bound to a node, passes pod admission (its
priority class, Pod Security with the namespace's label), while the same
Pod in a namespace that enforces the restricted level is refused.

RBAC: the ClusterRole allows only get/list/watch on exactly the resources
meshd watches; created for real, SubjectAccessReviews show that the
DaemonSet's service account may read each of them and may not read
Secrets, write anything, or read what it does not watch.
Also checked: the DaemonSet's settings that cluster mode depends on, and
that the paths it names are the ones deploy/Containerfile puts the files at.
TAP output; exit status 0 only when every line is ok.
"""

import copy
import glob
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
sys.dont_write_bytecode = True

import yaml  # noqa: E402  (python3-yaml)

import kube  # noqa: E402

CLUSTER_DIR = os.path.join(ROOT, "deploy", "cluster")
STANDALONE = os.path.join(ROOT, "deploy", "daemonset.yaml")
CONTAINERFILE = os.path.join(ROOT, "deploy", "Containerfile")
NS = "skmesh-system"
# the API server's Pod Security admission enforces "restricted" wherever a
# namespace does not say otherwise, as hardened clusters do
PSA_CONFIG = """apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults: {enforce: restricted, enforce-version: latest}
    exemptions: {}
"""
MANAGER = "skmesh-deploy-test"
VERBS = {"get", "list", "watch"}
# the CA service's manifests, checked apart from meshd's
CA_FILE = "30-ca.yaml"
# what meshd lists and watches: (API group, resource)
READS = {("", "pods"), ("", "services"), ("", "namespaces"),
         ("discovery.k8s.io", "endpointslices"),
         ("security.istio.io", "authorizationpolicies"),
         ("security.istio.io", "peerauthentications")}


def load(path):
    """The objects of one manifest file, each with the file it came from."""
    with open(path) as f:
        return [(os.path.relpath(path, ROOT), d) for d in yaml.safe_load_all(f) if d]


class Api:
    """Resource paths of kinds, from the API server's own discovery."""

    def __init__(self, k):
        self.k = k
        self.kinds = {}

    def resource(self, api_version, kind):
        """(plural, namespaced) of a kind, or None when the server has none."""
        if api_version not in self.kinds:
            base = "/api/v1" if api_version == "v1" else "/apis/" + api_version
            status, out = self.k.request("GET", base)
            self.kinds[api_version] = {}
            if status == 200:
                for r in out.get("resources", []):
                    if "/" not in r["name"]:
                        self.kinds[api_version][r["kind"]] = (r["name"], r["namespaced"])
        return self.kinds[api_version].get(kind)

    def path(self, obj):
        """The object's own URL path."""
        av, kind = obj["apiVersion"], obj["kind"]
        res = self.resource(av, kind)
        if res is None:
            raise kube.KubeError("the API server knows no %s %s" % (av, kind))
        plural, namespaced = res
        base = "/api/v1" if av == "v1" else "/apis/" + av
        if namespaced:
            base += "/namespaces/" + obj["metadata"].get("namespace", "default")
        return "%s/%s/%s" % (base, plural, obj["metadata"]["name"])

    def collection(self, obj):
        """The URL path of the object's collection."""
        return self.path(obj).rsplit("/", 1)[0]

    def create(self, obj):
        """Dry-run POST of obj with strict field validation: (status, answer)."""
        return self.k.request("POST", self.collection(obj) + "?dryRun=All&fieldValidation=Strict",
                              obj)

    def apply(self, obj, dry_run=True):
        """Server-side apply of obj, strict field validation: (status, answer)."""
        q = "?fieldManager=%s&fieldValidation=Strict&force=true" % MANAGER
        if dry_run:
            q += "&dryRun=All"
        return self.k.request("PATCH", self.path(obj) + q, obj,
                              content_type="application/apply-patch+yaml")


def name_of(src, obj):
    return "%s: %s %s" % (src, obj["kind"], obj["metadata"]["name"])


def brief(out):
    """The API's answer, short, for a failed line."""
    if isinstance(out, dict):
        return "%s: %s" % (out.get("reason"), out.get("message", out))[:2000]
    return str(out)[:2000]


def find(objs, kind):
    return [o for _, o in objs if o["kind"] == kind]


def dry_run_all(t, k, api, objs):
    ns_objs = [(s, o) for s, o in objs if o["kind"] == "Namespace"]
    rest = [(s, o) for s, o in objs if o["kind"] != "Namespace"]
    for src, o in ns_objs:
        dry_run(t, k, api, src, o)
    # namespaced objects, even in a dry run, need their namespace: the
    # first manifest's (deploy/cluster's) is created for real
    status, out = api.apply(ns_objs[0][1], dry_run=False)
    t.require("namespace %s created for the namespaced dry runs" % NS,
              status in (200, 201), brief(out))
    for src, o in rest:
        dry_run(t, k, api, src, o)


def dry_run(t, k, api, src, o):
    status, out = api.apply(o)
    t.check("%s is accepted by a dry-run server-side apply (HTTP %d)" % (name_of(src, o), status),
            status in (200, 201), brief(out))
    status, out = api.create(o)
    t.check("%s is accepted by a dry-run create, strict fields (HTTP %d)" % (name_of(src, o), status),
            status == 201, brief(out))
    gone, _ = k.request("GET", api.path(o))
    t.eq("%s: the dry runs stored nothing" % name_of(src, o), gone, 404)


def check_refusals(t, api, ds):
    bad = copy.deepcopy(ds)
    bad["spec"]["template"]["spec"]["hostNetwrk"] = True
    status, out = api.create(bad)
    t.check("a DaemonSet with an unknown field (hostNetwrk) is refused by a strict "
            "dry-run create (HTTP %d)" % status,
            status == 400 and "unknown field" in str(out) and "hostNetwrk" in str(out), brief(out))
    status, out = api.apply(bad)
    # the API server answers an apply patch outside the schema with 500
    t.check("... and by a dry-run server-side apply (HTTP %d)" % status,
            status in (400, 422, 500) and "hostNetwrk" in str(out), brief(out))

    bad = copy.deepcopy(ds)
    meshd = [c for c in bad["spec"]["template"]["spec"]["containers"] if c["name"] == "meshd"][0]
    meshd["securityContext"]["privileged"] = False
    status, out = api.create(bad)
    t.check("a DaemonSet whose Bidirectional bpffs mount is in an unprivileged "
            "container is refused as invalid (HTTP %d)" % status,
            status == 422 and "Bidirectional" in str(out), brief(out))


def template_pod(ds, ns, node):
    """The DaemonSet's pod as the DaemonSet controller would make it."""
    tpl = copy.deepcopy(ds["spec"]["template"])
    tpl["metadata"]["name"] = "meshd-dryrun"
    tpl["metadata"]["namespace"] = ns
    tpl["spec"]["nodeName"] = node
    return dict(apiVersion="v1", kind="Pod", **tpl)


def check_pod_admission(t, k, dss):
    for src, ds in dss:
        pod = template_pod(ds, NS, "node-1")
        status, out = k.request("POST", "/api/v1/namespaces/%s/pods?dryRun=All&fieldValidation=Strict"
                                % NS, pod)
        t.check("%s: its pod template passes pod admission in %s (HTTP %d)"
                % (name_of(src, ds), NS, status), status == 201, brief(out))
        if status == 201:
            t.eq("... its priority class resolves to system-node-critical's priority",
                 (out["spec"].get("priorityClassName"), out["spec"].get("priority")),
                 ("system-node-critical", 2000001000))
    ds = dss[0][1]

    # the server's Pod Security default is "restricted" (PSA_CONFIG): a
    # namespace without the label refuses the same pod
    other = "skmesh-psa-%d" % os.getpid()
    k.create("/api/v1/namespaces", {"metadata": {"name": other}})
    pod = template_pod(ds, other, "node-1")
    status, out = k.request("POST", "/api/v1/namespaces/%s/pods?dryRun=All" % other, pod)
    t.check("the same pod is refused in a namespace without %s's label, the cluster "
            "enforcing restricted by default (HTTP %d)" % (NS, status),
            status == 403 and "PodSecurity" in str(out), brief(out))


def rules_of(role):
    """{(group, resource): set of verbs} of a ClusterRole, and what else it grants."""
    grants, extra = {}, []
    for r in role.get("rules", []):
        for key in ("nonResourceURLs", "resourceNames"):
            if r.get(key):
                extra.append("%s %s" % (key, r[key]))
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                grants.setdefault((g, res), set()).update(r.get("verbs", []))
    return grants, extra


def check_rbac(t, k, api, objs):
    roles, bindings = find(objs, "ClusterRole"), find(objs, "ClusterRoleBinding")
    sas, dss = find(objs, "ServiceAccount"), find(objs, "DaemonSet")
    t.require("deploy/cluster has one ServiceAccount, ClusterRole, ClusterRoleBinding and DaemonSet",
              len(roles) == len(bindings) == len(sas) == len(dss) == 1,
              "roles %d, bindings %d, service accounts %d, daemonsets %d"
              % (len(roles), len(bindings), len(sas), len(dss)))
    role, binding, sa, ds = roles[0], bindings[0], sas[0], dss[0]
    grants, extra = rules_of(role)
    t.eq("the ClusterRole names exactly the resources meshd watches",
         sorted(grants), sorted(READS))
    t.check("it grants only get, list and watch, all three on each",
            all(v == VERBS for v in grants.values()),
            {"%s/%s" % gr: sorted(v) for gr, v in grants.items()})
    t.check("no wildcard, resourceNames or nonResourceURLs", not extra and not any(
        "*" in (g, r) for g, r in grants), extra)
    user = "system:serviceaccount:%s:%s" % (sa["metadata"]["namespace"], sa["metadata"]["name"])
    t.eq("the binding gives that role to the ServiceAccount the DaemonSet runs as",
         (binding["roleRef"], binding["subjects"], ds["spec"]["template"]["spec"].get("serviceAccountName")),
         ({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
           "name": role["metadata"]["name"]},
          [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NS}],
          sa["metadata"]["name"]))

    for o in (sa, role, binding):
        status, out = api.apply(o, dry_run=False)
        t.require("%s %s created for the access reviews" % (o["kind"], o["metadata"]["name"]),
                  status in (200, 201), brief(out))

    def allowed(group, resource, verb, ns=None, sub=None):
        return sar(k, user, NS, group, resource, verb, at_ns=ns, sub=sub)

    may = [(g, r, v) for g, r in sorted(READS) for v in sorted(VERBS)]
    got = [x for x in may if not allowed(*x)]
    t.eq("%s may get, list and watch each of the %d resources (%d reviews)"
         % (user, len(READS), len(may)), got, [])
    # across namespaces too: meshd watches the whole cluster
    t.check("... also within any one namespace (pods in kube-system)",
            allowed("", "pods", "watch", ns="kube-system"))
    may_not = [("", "secrets", "get"), ("", "secrets", "list"), ("", "secrets", "watch"),
               ("", "configmaps", "list"), ("", "nodes", "list"),
               ("", "serviceaccounts", "get"), ("", "endpoints", "list"),
               ("", "pods", "create"), ("", "pods", "delete"), ("", "pods", "patch"),
               ("", "pods", "update", None, "status"), ("", "pods", "create", None, "exec"),
               ("", "services", "update"), ("", "namespaces", "delete"),
               ("discovery.k8s.io", "endpointslices", "create"),
               ("security.istio.io", "authorizationpolicies", "create"),
               ("security.istio.io", "peerauthentications", "delete"),
               ("rbac.authorization.k8s.io", "clusterroles", "list"),
               ("apps", "daemonsets", "get"), ("authentication.k8s.io", "tokenreviews", "create")]
    got = [x for x in may_not if allowed(*x)]
    t.eq("it may not read Secrets, write anything, or read what it does not "
         "watch (%d reviews)" % len(may_not), got, [])


def sar(k, user, ns, group, resource, verb, at_ns=None, sub=None):
    """Whether service account USER of namespace NS may VERB RESOURCE."""
    attrs = {"group": group, "resource": resource, "verb": verb}
    if at_ns:
        attrs["namespace"] = at_ns
    if sub:
        attrs["subresource"] = sub
    status, out = k.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": ["system:serviceaccounts", "system:serviceaccounts:" + ns,
                                          "system:authenticated"],
                 "resourceAttributes": attrs}})
    if status != 201:
        raise kube.KubeError("SubjectAccessReview: HTTP %d: %s" % (status, brief(out)))
    return out["status"].get("allowed", False)


def check_ca(t, k, api, objs):
    """30-ca.yaml: skmesh-ca may create TokenReviews and read pods, nothing
    else; its Deployment runs as that account, non-root, read-only, with
    the root CA from its own Secret."""
    roles, bindings = find(objs, "ClusterRole"), find(objs, "ClusterRoleBinding")
    sas, deps = find(objs, "ServiceAccount"), find(objs, "Deployment")
    t.require("%s has one ServiceAccount, ClusterRole, ClusterRoleBinding, Deployment and Service"
              % CA_FILE, len(roles) == len(bindings) == len(sas) == len(deps) == 1 and
              len(find(objs, "Service")) == 1)
    role, sa, dep = roles[0], sas[0], deps[0]
    grants, extra = rules_of(role)
    t.eq("skmesh-ca's ClusterRole: create tokenreviews, get/list/watch pods",
         {gr: sorted(v) for gr, v in grants.items()},
         {("authentication.k8s.io", "tokenreviews"): ["create"],
          ("", "pods"): ["get", "list", "watch"]})
    t.check("... no wildcard, resourceNames or nonResourceURLs", not extra, extra)
    for o in (sa, role, bindings[0]):
        status, out = api.apply(o, dry_run=False)
        t.require("%s %s created for the access reviews" % (o["kind"], o["metadata"]["name"]),
                  status in (200, 201), brief(out))
    ns = sa["metadata"]["namespace"]
    user = "system:serviceaccount:%s:%s" % (ns, sa["metadata"]["name"])
    t.check("%s may create TokenReviews and list pods of any node" % user,
            sar(k, user, ns, "authentication.k8s.io", "tokenreviews", "create") and
            sar(k, user, ns, "", "pods", "list") and sar(k, user, ns, "", "pods", "get",
                                                         at_ns="kube-system"))
    may_not = [("", "secrets", "get"), ("", "secrets", "list"), ("", "pods", "create"),
               ("", "pods", "delete"), ("", "serviceaccounts", "create", None, "token"),
               ("", "configmaps", "list"), ("certificates.k8s.io", "certificatesigningrequests",
                                            "create"),
               ("authorization.k8s.io", "subjectaccessreviews", "create")]
    got = [x for x in may_not if sar(k, user, ns, x[0], x[1], x[2], sub=x[4] if len(x) > 4 else None)]
    t.eq("... and may not read Secrets, write pods, mint tokens (%d reviews)" % len(may_not),
         got, [])
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    sc, psc = c.get("securityContext", {}), spec.get("securityContext", {})
    t.check("the Deployment runs as skmesh-ca, non-root, read-only root, no capabilities, "
            "no privilege escalation",
            spec.get("serviceAccountName") == sa["metadata"]["name"] and
            psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0 and
            sc.get("readOnlyRootFilesystem") is True and
            sc.get("allowPrivilegeEscalation") is False and
            sc.get("capabilities", {}).get("drop") == ["ALL"], (spec, c))
    secrets = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    t.check("the root CA comes from its own Secret, not meshd's",
            "skmesh-ca-root" in secrets and "--ca-key=/etc/skmesh-ca/root/ca-key.pem" in
            c.get("args", []), (secrets, c.get("args")))


def container(spec, name, init=False):
    cs = spec.get("initContainers" if init else "containers", [])
    found = [c for c in cs if c["name"] == name]
    return found[0] if found else None


def check_daemonset(t, ds):
    spec = ds["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    meshd = container(spec, "meshd")
    cni = container(spec, "install-cni", init=True)
    t.require("the DaemonSet has a meshd container and an install-cni init container",
              meshd and cni)
    t.eq("host network, not the host's PID namespace, ClusterFirstWithHostNet DNS, "
         "system-node-critical",
         (spec.get("hostNetwork"), spec.get("hostPID", False), spec.get("dnsPolicy"),
          spec.get("priorityClassName")),
         (True, False, "ClusterFirstWithHostNet", "system-node-critical"))
    t.eq("rolling update, one node at a time",
         ds["spec"].get("updateStrategy"), {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxUnavailable": 1}})
    tol = spec.get("tolerations", [])
    t.check("it tolerates every NoSchedule and NoExecute taint",
            all(any(x.get("operator") == "Exists" and x.get("effect") == e and "key" not in x
                    for x in tol) for e in ("NoSchedule", "NoExecute")), tol)
    env = {e["name"]: e for e in meshd.get("env", [])}
    t.eq("NODE_NAME comes from spec.nodeName",
         env.get("NODE_NAME", {}).get("valueFrom"), {"fieldRef": {"fieldPath": "spec.nodeName"}})
    args = meshd.get("args", [])
    t.check("meshd runs in cluster mode for its node (--kube --node=$(NODE_NAME)), "
            "no --config", "--kube" in args and "--node=$(NODE_NAME)" in args
            and not any(a.startswith("--config") for a in args), args)
    toks = [src["serviceAccountToken"] for v in vols.values()
            for src in v.get("projected", {}).get("sources", []) if "serviceAccountToken" in src]
    t.check("meshd gets certificates from skmesh-ca (--ca-addr, --ca-root, --ca-token), "
            "has no --ca-dir and mounts no Secret: no CA key on a node",
            any(a.startswith("--ca-addr=skmesh-ca.skmesh-system.svc:") for a in args) and
            any(a.startswith("--ca-root=") for a in args) and
            any(a.startswith("--ca-token=") for a in args) and
            not any(a.startswith("--ca-dir") for a in args) and
            not any("secret" in v for v in vols.values()), (args, list(vols.values())))
    t.check("its CA token is a projected service-account token for the CA's audience "
            "(istio-ca), as skmesh-ca's --audience", toks and
            all(x.get("audience") == "istio-ca" for x in toks), toks)
    t.eq("readiness probe: GET :15021/healthz/ready",
         meshd.get("readinessProbe", {}).get("httpGet"), {"path": "/healthz/ready", "port": 15021})
    t.check("meshd has requests and a memory limit",
            meshd.get("resources", {}).get("requests") and
            meshd.get("resources", {}).get("limits", {}).get("memory"), meshd.get("resources"))

    def mounts(c):
        return {m["mountPath"]: (vols[m["name"]].get("hostPath", {}).get("path"),
                                 m.get("mountPropagation"), bool(m.get("readOnly")))
                for m in c.get("volumeMounts", []) if "hostPath" in vols.get(m["name"], {})}
    mm, cm = mounts(meshd), mounts(cni)
    want = {"/sys/fs/bpf": ("/sys/fs/bpf", "Bidirectional", False),
            "/host/proc": ("/proc", None, True),
            "/var/run/skmesh": ("/var/run/skmesh", None, False),
            "/var/run/netns": ("/var/run/netns", "HostToContainer", False)}
    t.eq("meshd mounts bpffs (Bidirectional), the host's /proc read-only, "
         "/var/run/skmesh and /var/run/netns (HostToContainer)",
         {p: mm.get(p) for p in want}, want)
    flag = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    t.eq("--cgroup is the host's cgroup root, --proc-root its /proc",
         (mm.get(flag.get("cgroup"), (None,))[0], mm.get(flag.get("proc-root"), (None,))[0]),
         ("/sys/fs/cgroup", "/proc"))
    t.eq("meshd's CNI socket and pending folder are on the shared /var/run/skmesh",
         (os.path.dirname(flag.get("cni-socket", "")), os.path.dirname(flag.get("cni-pending-dir", ""))),
         ("/var/run/skmesh", "/var/run/skmesh"))

    cargs = dict(a[2:].split("=", 1) for a in cni.get("args", []) if "=" in a)
    t.eq("install-cni writes to the node's /etc/cni/net.d and /opt/cni/bin",
         (cm.get(cargs.get("conf-dir"), (None,))[0], cm.get(cargs.get("bin-dir"), (None,))[0]),
         ("/etc/cni/net.d", "/opt/cni/bin"))
    t.eq("the entry install-cni writes names meshd's socket and pending folder",
         (cargs.get("socket"), cargs.get("pending-dir")),
         (flag.get("cni-socket"), flag.get("cni-pending-dir")))
    pre = meshd.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    t.check("meshd's preStop hook runs install-cni.sh --uninstall on the same folder",
            pre[:1] == cni.get("command", [])[:1] and "--uninstall" in pre
            and "--conf-dir=" + cargs.get("conf-dir", "?") in pre, pre)

    with open(CONTAINERFILE) as f:
        cf = f.read()
    copies = {m.group(2): m.group(1) for m in re.finditer(r"^COPY\s+(?:--from=\S+\s+)?(\S+)\s+(\S+)\s*$",
                                                          cf, re.M)}
    t.eq("deploy/Containerfile puts install-cni.sh and skmesh-cni where the DaemonSet runs them",
         (copies.get(cni["command"][0]), copies.get(cargs.get("plugin"))),
         ("deploy/cluster/install-cni.sh", "/src/build/skmesh-cni"))
    t.check("deploy/Containerfile installs jq for install-cni.sh",
            re.search(r"apt-get install[^\n]*(\\\n[^\n]*)*\bjq\b", cf), cf)


def body(t, k):
    api = Api(k)
    objs = []
    for f in sorted(glob.glob(os.path.join(CLUSTER_DIR, "*.yaml"))):
        objs += load(f)
    t.require("deploy/cluster has manifests", objs)
    cluster_objs = list(objs)
    objs += load(STANDALONE)
    t.diag("%d objects: %s" % (len(objs), ", ".join(name_of(s, o) for s, o in objs)))

    dry_run_all(t, k, api, objs)
    ca_objs = [(s, o) for s, o in cluster_objs if s.endswith(CA_FILE)]
    meshd_objs = [(s, o) for s, o in cluster_objs if not s.endswith(CA_FILE)]
    ds = find(meshd_objs, "DaemonSet")[0]
    check_refusals(t, api, ds)
    check_pod_admission(t, k, [(s, o) for s, o in objs if o["kind"] == "DaemonSet"])
    check_daemonset(t, ds)
    check_rbac(t, k, api, meshd_objs)
    check_ca(t, k, api, ca_objs)


def main():
    fd, psa = tempfile.mkstemp(prefix="skmesh-psa-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(PSA_CONFIG)
    kube.tap_main(body, files=[psa], controller_manager=False,
                  apiserver_args=["--admission-control-config-file", psa])


if __name__ == "__main__":
    main()
