#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
deploy/cluster/install-cni.sh, the meshd DaemonSet's init container, run for
real on temporary CNI folders, as root without any capability and with
no_new_privs, as the DaemonSet's securityContext runs it.

Checked: with no network config it changes nothing and says so, waits a
bounded time and fails; it picks up a conflist that appears while it
waits; it installs build/skmesh-cni into the bin folder and appends its
entry as the last plugin of the conflist the runtime uses (the first by
name), keeping every other byte, the file's mode and the other files,
through a rename, with no temporary file left; a second run changes
nothing; changed settings replace the entry; a single-plugin .conf sorted
first, an unsupported cniVersion and broken JSON are refused with nothing
changed. The installed conflist then works as a runtime runs it: Debian's
bridge + host-local and the installed skmesh-cni for a real pod network
namespace, ADD (meshd down: the pod's pending record appears in the
pendingDir the installer wrote) and DEL (record and address released).
--uninstall restores the original bytes, and is a no-op when run again.
"""
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "deploy", "cluster", "install-cni.sh")
DEB_CNI = "/usr/lib/cni"
SUBNET = "10.99.210.0/24"
# what the init container's securityContext leaves root: no capability,
# no privilege gained by exec (allowPrivilegeEscalation: false)
NO_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--"]

# a conflist as a network plugin might write it: its own layout, a
# number jq would print otherwise, keys in no particular order
CONFLIST = """{
    "name": "skm-install-test",
    "cniVersion": "1.0.0",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "icbr0",
            "isGateway": true,
            "skmTestNumber": 10.50,
            "ipam": {
                "type": "host-local",
                "subnet": "%s",
                "dataDir": "%s"
            }
        }
    ]
}
"""
OTHER = '{"cniVersion":"1.0.0","name":"later","plugins":[{"type":"ptp"}]}\n'


class Dirs:
    """The run's folders: CNI conf and bin, meshd's (absent) socket and
    the pending records, host-local's data."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.conf = os.path.join(tmp, "net.d")
        self.bin = os.path.join(tmp, "bin")
        self.run = os.path.join(tmp, "run")
        self.ipam = os.path.join(tmp, "ipam")
        for d in (self.conf, self.bin, self.run):
            os.mkdir(d)
        self.socket = os.path.join(self.run, "cni.sock")
        self.pending = os.path.join(self.run, "cni-pending")
        self.plugin = os.path.join(topolib.build_dir(), "skmesh-cni")

    def install(self, *extra, wait=0):
        """(rc, output) of install-cni.sh on these folders."""
        argv = NO_CAPS + [
            SCRIPT, "--conf-dir=" + self.conf, "--bin-dir=" + self.bin,
            "--plugin=" + self.plugin, "--socket=" + self.socket,
            "--pending-dir=" + self.pending, "--wait=%d" % wait] + list(extra)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60 + wait)
        return r.returncode, r.stdout + r.stderr

    def uninstall(self):
        r = subprocess.run(NO_CAPS + [SCRIPT, "--uninstall", "--conf-dir=" + self.conf],
                           capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout + r.stderr

    def snapshot(self):
        """{folder/name: (bytes, mode, inode)} of the conf and bin folders,
        hidden files included."""
        out = {}
        for d in (self.conf, self.bin):
            for n in os.listdir(d):
                p = os.path.join(d, n)
                st = os.stat(p)
                with open(p, "rb") as f:
                    out[os.path.join(os.path.basename(d), n)] = (f.read(), stat.S_IMODE(st.st_mode),
                                                                 st.st_ino)
        return out

    def write(self, name, text, mode=0o644):
        p = os.path.join(self.conf, name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        return p

    def clear(self):
        for d in (self.conf, self.bin):
            for n in os.listdir(d):
                os.unlink(os.path.join(d, n))


def read(p, mode="rb"):
    with open(p, mode) as f:
        return f.read()


def insertion(old, new):
    """The bytes added to old to make new, when new is old with one run of
    bytes inserted; else None."""
    if len(new) <= len(old):
        return None
    i = 0
    while i < len(old) and old[i] == new[i]:
        i += 1
    if new[i + len(new) - len(old):] != old[i:]:
        return None
    return new[i:i + len(new) - len(old)]


def entry(d, **more):
    e = {"type": "skmesh-cni", "socket": d.socket, "pendingDir": d.pending}
    e.update(more)
    return e


def check_no_config(t, d):
    t0 = time.monotonic()
    rc, out = d.install(wait=2)
    dt = time.monotonic() - t0
    t.check("no network config: exit 1 after waiting --wait (2 s; took %.1f s)" % dt,
            rc == 1 and 1.5 < dt < 10, "rc %d\n%s" % (rc, out))
    t.check("... saying why and that nothing changed",
            "no network config" in out and "nothing changed" in out, out)
    t.eq("... and nothing is written to either folder", d.snapshot(), {})

    # a conflist that appears while it waits is taken
    p = subprocess.Popen(NO_CAPS + [SCRIPT, "--conf-dir=" + d.conf, "--bin-dir=" + d.bin,
                                    "--plugin=" + d.plugin, "--socket=" + d.socket,
                                    "--pending-dir=" + d.pending, "--wait=30"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.5)
        t.check("while waiting it has written nothing", d.snapshot() == {} and p.poll() is None)
        d.write("10-late.conflist", OTHER)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    doc = json.loads(read(os.path.join(d.conf, "10-late.conflist")))
    t.check("a conflist written while it waits is taken (exit 0, entry last)",
            p.returncode == 0 and doc["plugins"][-1] == entry(d), "rc %s\n%s" % (p.returncode, out))
    d.clear()


def check_refusals(t, d):
    cases = [
        ("a single-plugin .conf sorted first",
         {"05-single.conf": '{"cniVersion":"1.0.0","name":"x","type":"bridge"}\n',
          "10-list.conflist": OTHER}, "single-plugin"),
        ("an unsupported cniVersion (0.2.0)",
         {"10-old.conflist": '{"cniVersion":"0.2.0","name":"x","plugins":[{"type":"bridge"}]}\n'},
         'cniVersion "0.2.0"'),
        ("broken JSON", {"10-broken.conflist": '{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}\n'},
         "not a conflist"),
        ("an empty plugins list", {"10-empty.conflist": '{"cniVersion":"1.0.0","name":"x","plugins":[]}\n'},
         "not a conflist"),
    ]
    for what, files, says in cases:
        for n, text in files.items():
            d.write(n, text)
        before = d.snapshot()
        rc, out = d.install()
        t.check("%s is refused: exit 1, says %r and that nothing changed" % (what, says),
                rc == 1 and says in out and "nothing changed" in out, "rc %d\n%s" % (rc, out))
        t.eq("... and nothing changed (no binary, same files)", d.snapshot(), before)
        d.clear()


def check_install(t, d, topo):
    orig = CONFLIST % (SUBNET, d.ipam)
    path = d.write("10-skm.conflist", orig, mode=0o640)
    d.write("20-later.conflist", OTHER)
    d.write("99-single.conf", '{"cniVersion":"1.0.0","name":"y","type":"bridge"}\n')
    before = d.snapshot()

    rc, out = d.install()
    t.check("install: exit 0", rc == 0, out)
    t.diag(out.strip())
    after = d.snapshot()
    b = after.get("bin/skmesh-cni")
    t.check("skmesh-cni is in the bin folder, the build's bytes, mode 0755",
            b and b[0] == read(d.plugin) and b[1] == 0o755, b and b[1:])
    new = read(path)
    doc = json.loads(new)
    t.eq("the conflist's plugins are the old ones plus the entry, last",
         doc["plugins"], json.loads(orig)["plugins"] + [entry(d)])
    added = insertion(orig.encode(), new)
    t.check("every other byte of the file is kept: one insertion, the entry (%r)" % added,
            added is not None and json.loads(added.lstrip(b",\n ")) == entry(d),
            "old:\n%s\nnew:\n%s" % (orig, new.decode()))
    t.check("the file was replaced by a rename (new inode), its mode kept (0640)",
            after["net.d/10-skm.conflist"][2] != before["net.d/10-skm.conflist"][2]
            and after["net.d/10-skm.conflist"][1] == 0o640, after["net.d/10-skm.conflist"][1:])
    t.eq("the other configs are untouched, and no temporary file is left",
         {k: v for k, v in after.items() if k not in ("net.d/10-skm.conflist", "bin/skmesh-cni")},
         {k: v for k, v in before.items() if k != "net.d/10-skm.conflist"})

    rc, out = d.install()
    t.check("a second run: exit 0, says the entry is there", rc == 0 and "unchanged" in out, out)
    t.eq("... and changes nothing, not even an inode", d.snapshot(), after)

    run_chain(t, d, topo, path)

    rc, out = d.install("--ack-timeout-ms=1500", "--log-file=" + os.path.join(d.run, "cni.log"))
    doc = json.loads(read(path))
    t.check("changed settings replace the entry: still one, last, with them",
            rc == 0 and doc["plugins"][-1] == entry(d, ackTimeoutMs=1500,
                                                    logFile=os.path.join(d.run, "cni.log"))
            and [p["type"] for p in doc["plugins"]] == ["bridge", "skmesh-cni"], out)
    t.check("... and the rest of the file keeps its bytes", insertion(orig.encode(), read(path)), read(path))

    rc, out = d.uninstall()
    t.check("--uninstall: exit 0, says it removed the entry", rc == 0 and "removed" in out, out)
    t.eq("... the conflist is byte for byte what it was", read(path).decode(), orig)
    t.eq("... its mode too, and the other configs are untouched",
         {k: v[:2] for k, v in d.snapshot().items() if k.startswith("net.d/")},
         {k: v[:2] for k, v in before.items()})
    t.check("... the binary stays (a runtime may be running it)",
            os.path.exists(os.path.join(d.bin, "skmesh-cni")))
    rc, out = d.uninstall()
    t.check("--uninstall again: exit 0, nothing to do", rc == 0 and "nothing to do" in out
            and read(path).decode() == orig, out)

    # a one-line conflist, as some plugins write it: the same round trip
    d.clear()
    one = '{"cniVersion":"0.4.0","name":"flat","plugins":[{"type":"ptp","ipam":{"type":"host-local"}}]}'
    p1 = d.write("10-flat.conflist", one)
    rc, out = d.install()
    t.eq("a one-line conflist gets the entry appended in place",
         (rc, insertion(one.encode(), read(p1))),
         (0, b"," + json.dumps(entry(d), separators=(",", ":")).encode()))
    rc, out = d.uninstall()
    t.eq("... and --uninstall restores it", (rc, read(p1).decode()), (0, one))

    # a config that is a symbolic link: the file it names is edited
    d.clear()
    real_dir = os.path.join(d.tmp, "real")
    os.mkdir(real_dir)
    real = os.path.join(real_dir, "net.conflist")
    with open(real, "w") as f:
        f.write(OTHER)
    link = os.path.join(d.conf, "10-link.conflist")
    os.symlink(real, link)
    rc, out = d.install()
    t.check("a conflist that is a link: the file it names gets the entry, the link stays",
            rc == 0 and os.path.islink(link) and os.readlink(link) == real
            and json.loads(read(real))["plugins"][-1] == entry(d)
            and os.listdir(real_dir) == ["net.conflist"], out)
    rc, out = d.uninstall()
    t.check("... and --uninstall restores that file", rc == 0 and os.path.islink(link)
            and read(real).decode() == OTHER, out)
    os.unlink(link)

    # an entry someone wrote by hand (not last, other layout): removed by jq
    d.clear()
    hand = ('{\n  "cniVersion": "1.0.0", "name": "hand",\n  "plugins": [\n'
            '    { "type" : "skmesh-cni" },\n    {"type": "ptp"}\n  ]\n}\n')
    p2 = d.write("10-hand.conflist", hand)
    rc, out = d.install()
    t.check("install refuses to rewrite an entry it did not write (exit 1, names --uninstall)",
            rc == 1 and "--uninstall" in out and read(p2).decode() == hand, out)
    rc, out = d.uninstall()
    t.check("--uninstall removes it with jq and says the formatting changes",
            rc == 0 and json.loads(read(p2)) == {"cniVersion": "1.0.0", "name": "hand",
                                                 "plugins": [{"type": "ptp"}]}
            and "formatting" in out, out)


def run_plugin(topo, d, conflist, plugin, cmd, cid, netns, prev):
    """One plugin of the list, as a runtime calls it (in the node's
    namespace, CNI_PATH the installed bin folder, then Debian's)."""
    conf = dict(plugin, cniVersion=conflist["cniVersion"], name=conflist["name"])
    if prev is not None:
        conf["prevResult"] = prev
    binary = next(p for p in (os.path.join(x, plugin["type"]) for x in (d.bin, DEB_CNI))
                  if os.access(p, os.X_OK))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": cmd, "CNI_CONTAINERID": cid,
           "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": d.bin + ":" + DEB_CNI,
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;"
                       "K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=7d6a1c2e-0000-4000-8000-000000000001"
                       % cid}
    r = subprocess.run(topo.node_argv(1, [binary]), env=env, input=json.dumps(conf).encode(),
                       capture_output=True, timeout=60)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"), binary


def run_chain(t, d, topo, path):
    conflist = json.loads(read(path))
    ns = "%s-icpod" % topo.prefix
    topolib.sh(["ip", "netns", "add", ns])
    netns = os.path.join(topolib.NETNS_DIR, ns)
    cid = "1c0ffee%s" % topo.rid
    try:
        prev, log = None, []
        for p in conflist["plugins"]:
            rc, out, err, binary = run_plugin(topo, d, conflist, p, "ADD", cid, netns, prev)
            log.append("%s ADD: rc %d\n%s%s" % (binary, rc, out, err))
            if rc != 0:
                break
            prev = json.loads(out)
        t.check("ADD through the installed conflist (bridge, then %s): every plugin exits 0"
                % os.path.join(d.bin, "skmesh-cni"), rc == 0, "\n".join(log))
        ips = [i["address"].split("/")[0] for i in (prev or {}).get("ips", [])]
        rec = os.path.join(d.pending, cid + ".json")
        r = json.loads(read(rec)) if os.path.exists(rec) else None
        t.check("meshd being down, skmesh-cni left the pod's record in the installer's "
                "pendingDir (%s)" % rec,
                r and r.get("op") == "add" and r.get("netns") == netns and r.get("ips") == ips
                and r.get("podName") == "web-0", "\n".join(log))
        got = topolib.sh(["ip", "-n", ns, "-j", "addr", "show", "eth0"]).stdout
        t.check("the pod's eth0 has the address of the chain's result (%s)" % ips,
                ips and ips[0] in got, got)
        log = []
        for p in reversed(conflist["plugins"]):
            rc, out, err, binary = run_plugin(topo, d, conflist, p, "DEL", cid, netns, prev)
            log.append("%s DEL: rc %d\n%s%s" % (binary, rc, out, err))
        t.check("DEL through the chain, in reverse: every plugin exits 0",
                all(": rc 0\n" in x for x in log), "\n".join(log))
        leases = [n for n in os.listdir(os.path.join(d.ipam, conflist["name"]))
                  if n[0].isdigit()] if os.path.isdir(d.ipam) else []
        t.check("... the pending record and the address lease are gone",
                not os.path.exists(rec) and not leases, leases)
    finally:
        topolib.sh(["ip", "netns", "del", ns], check=False)


def body(t, topo):
    missing = [x for x in ("jq", "setpriv") if not shutil.which(x)]
    t.require("jq and setpriv are installed (make deps)", not missing, missing)
    tmp = tempfile.mkdtemp(prefix="%s-instcni-" % topo.prefix)
    try:
        d = Dirs(tmp)
        check_no_config(t, d)
        check_refusals(t, d)
        check_install(t, d, topo)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t.check("cleanup: the temporary folder is gone", not os.path.exists(tmp))


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=1, need=("skmesh-cni",))
