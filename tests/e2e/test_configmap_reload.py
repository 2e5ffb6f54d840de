#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
A config mounted from a Kubernetes ConfigMap is reloaded when kubelet
updates it. kubelet's atomic writer never touches the file names the pod
sees: it writes the new files into a fresh ..<timestamp> folder, points a
..data_tmp symlink at it, renames that over ..data, and removes the old
folder; mesh.yaml is a symlink to ..data/mesh.yaml throughout. meshd must
follow that, with --config naming the folder and with --config naming
the file.

1 node x 2 pods.
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402


def kubelet_write(d, stamp, text):
    """Write text as mesh.yaml of a ConfigMap folder d, the way kubelet's
    atomic writer does it."""
    new = os.path.join(d, "..%s" % stamp)
    os.mkdir(new)
    with open(os.path.join(new, "mesh.yaml"), "w") as f:
        f.write(text)
    old = None
    data = os.path.join(d, "..data")
    if os.path.islink(data):
        old = os.path.join(d, os.readlink(data))
    tmp = os.path.join(d, "..data_tmp")
    os.symlink("..%s" % stamp, tmp)
    os.rename(tmp, data)
    link = os.path.join(d, "mesh.yaml")
    if not os.path.islink(link):
        os.symlink("..data/mesh.yaml", link)
    if old:
        shutil.rmtree(old)


def vips(topo):
    return sorted(s["vip"] for s in topo.meshctl_json(1, "services"))


def body(t, topo):
    p1, p2 = topo.node_pods(1)

    def svc(vip):
        return [{"name": "web", "vip": vip, "ports": [{"port": 80, "targetPort": 8080}],
                 "endpoints": [(p2.ip, 1)]}]
    for mode in ("folder", "file"):
        d = os.path.join(topo.logdir, "cm-" + mode)
        os.makedirs(d)
        kubelet_write(d, "2026_11_29_00_00_01.1", topo.config_text(svc("10.96.9.1")))
        h = topo.start_meshd(1, d if mode == "folder" else os.path.join(d, "mesh.yaml"))
        t.eq("--config %s: the first ConfigMap version applied" % mode, vips(topo),
             ["10.96.9.1"])
        kubelet_write(d, "2026_11_29_00_00_02.2", topo.config_text(svc("10.96.9.2")))
        t.check("--config %s: kubelet's ..data swap reloads within 2 s" % mode,
                tap.wait_until(lambda: vips(topo) == ["10.96.9.2"], timeout=2),
                "%s\n%s" % (vips(topo), h.log_tail(5)))
        kubelet_write(d, "2026_11_29_00_00_03.3", "kind: [broken\n")
        t.check("--config %s: a broken version is refused, the running one kept" % mode,
                tap.wait_until(lambda: "keeping the running config" in h.log_text(), 2) and
                vips(topo) == ["10.96.9.2"], h.log_tail(5))
        topo.stop_meshd(h)


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=2)
