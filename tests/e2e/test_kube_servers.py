#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
test_kube_servers.py - the Kubernetes servers of the cluster-mode tests work together.

Starts etcd, kube-apiserver and kube-controller-manager (EndpointSlice
controller only) through tests/lib/kube.py, does a kubelet's part for one
pod (Node and Pod objects, pod status through the status subresource) and
checks that the controller publishes, then marks not ready, the pod's
address in the Service's EndpointSlice; then stops everything and checks
that nothing is left. TAP output; exit status 0 only when every line is ok.

Needs the binaries of scripts/k8s-servers.sh (or SKMESH_K8S_BIN):

    scripts/k8s-servers.sh && python3 tests/e2e/test_kube_servers.py   (make test does both)
"""

import os
import ssl
import sys
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
sys.dont_write_bytecode = True

import kube  # noqa: E402
import tap  # noqa: E402

POD_IP = "10.244.1.5"


def slice_endpoints(k, ns, svc):
    """The EndpointSlices of Service ns/svc (None when the list fails)."""
    status, out = k.request(
        "GET", "/apis/discovery.k8s.io/v1/namespaces/%s/endpointslices"
        "?labelSelector=kubernetes.io%%2Fservice-name%%3D%s" % (ns, svc))
    return out.get("items") if status == 200 else None


def ready_condition(value):
    return [{"type": t, "status": value} for t in ("Ready", "ContainersReady")] + \
           [{"type": t, "status": "True"} for t in ("Initialized", "PodScheduled")]


def body(t, k):
    ns, node, pod, svc = "smoke-%d" % os.getpid(), "node-1", "web-0", "web"

    # the API refuses a caller without the admin's certificate
    anon = ssl.create_default_context(cafile=os.path.join(k.dir, "ca.crt"))
    try:
        urllib.request.urlopen(k.url + "/api/v1/namespaces", context=anon, timeout=5)
        code = 200
    except urllib.error.HTTPError as e:
        code = e.code
    t.eq("a request without a client certificate gets 401", code, 401)

    k.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    # the EndpointSlice controller skips pods whose Node does not exist
    k.create("/api/v1/nodes", {"metadata": {"name": node}})
    k.create("/api/v1/namespaces/%s/pods" % ns, {
        "metadata": {"name": pod, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "serviceAccountName": "web",
                 "containers": [{"name": "app", "image": "skmesh.test/none",
                                 "ports": [{"name": "http", "containerPort": 8080}]}]},
    })
    s = k.create("/api/v1/namespaces/%s/services" % ns, {
        "metadata": {"name": svc},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    })
    vip = s["spec"].get("clusterIP", "")
    t.check("the Service got a cluster IP from --service-cluster-ip-range",
            vip.startswith("10.96."), "clusterIP %r" % vip)

    # before its status is written the pod has no IP: a slice, no endpoint
    items = tap.wait_until(lambda: slice_endpoints(k, ns, svc), timeout=30)
    t.require("the controller makes an EndpointSlice for the Service", items,
              lambda: k.log_tail("kube-controller-manager"))
    t.eq("no endpoint while the pod has no IP",
         [e for i in items for e in (i.get("endpoints") or [])], [])

    path = "/api/v1/namespaces/%s/pods/%s" % (ns, pod)
    _, p = k.request("GET", path)
    p["status"] = {"phase": "Running", "hostIP": "192.0.2.1",
                   "podIP": POD_IP, "podIPs": [{"ip": POD_IP}],
                   "conditions": ready_condition("True")}
    k.put_status(path, p)
    _, p = k.request("GET", path)
    t.eq("the status subresource kept the pod's IP and phase",
         (p["status"].get("podIP"), p["status"].get("phase")), (POD_IP, "Running"))

    def endpoint(ready):
        for i in slice_endpoints(k, ns, svc) or []:
            for e in i.get("endpoints") or []:
                if e.get("addresses") == [POD_IP] and \
                        e.get("conditions", {}).get("ready") is ready:
                    return i, e
        return None
    got = tap.wait_until(lambda: endpoint(True), timeout=30)
    t.require("the EndpointSlice lists the pod's IP as ready", got,
              lambda: "slices: %r\n%s" % (slice_endpoints(k, ns, svc),
                                          k.log_tail("kube-controller-manager")))
    sl, ep = got
    t.eq("the endpoint names the pod and its node",
         (ep.get("targetRef", {}).get("name"), ep.get("nodeName")), (pod, node))
    t.eq("the slice's port is the named target port resolved",
         [(x.get("name"), x.get("port")) for x in sl.get("ports", [])], [("http", 8080)])

    _, p = k.request("GET", path)
    p["status"]["conditions"] = ready_condition("False")
    k.put_status(path, p)
    t.check("a pod no longer Ready is listed as not ready",
            tap.wait_until(lambda: endpoint(False), timeout=30),
            lambda: "slices: %r" % slice_endpoints(k, ns, svc))


def main():
    kube.tap_main(body, up="etcd, kube-apiserver and kube-controller-manager are up")


if __name__ == "__main__":
    main()
