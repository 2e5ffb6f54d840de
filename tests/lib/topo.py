#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
topo.py - the skmesh test topology on one machine (DESIGN.md "Test topology").

A "node" is a network namespace that runs one meshd; a "pod" is a network
namespace wired to its node by a veth pair, whose processes live in a cgroup
under the node's cgroup; the nodes hang off one bridge in a "fabric"
namespace. Addressing is Calico's: a pod owns a /32 on eth0 and reaches
everything through the link-local gateway 169.254.1.1, which the node answers
by proxy ARP; the node routes each pod /32 to its veth and every other node's
10.99.<m>.0/24 over the fabric.

    fabric  skm<rid>-fab   bridge br0, 10.99.0.0/24
    node n  skm<rid>-n<n>  fab0 10.99.0.<n>/24, veth s<rid>n<n>p<i> per pod
    pod     skm<rid>-n<n>p<i>  eth0 10.99.<n>.<i+1>/32
    cgroups <cg2root>/skm<rid>/n<n>/p<i>   (meshd of node n: in n<n> itself,
                                           the cgroup it attaches to)
    pins    /sys/fs/bpf/skm<rid>-n<n>   (made by meshd, removed by down())

Everything is named after a per-run id <rid> (4 hex digits) claimed with an
O_EXCL state file, so two runs never collide, and down()/gc find every piece
by name, also after a crash. Nothing touches the host's own interfaces,
routes or cgroups; no packet leaves the test namespaces.

Used by tests/e2e, bench/ and scripts/demo.sh. As a library:

    with Topology(nodes=1, pods_per_node=2) as topo:
        p1, p2 = topo.pods
        topo.pod_run(p1, ["true"])

As a command (see `topo.py -h`): up, down, gc, exec, meshd, meshctl.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import queue
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PODTOOL = os.path.join(HERE, "podtool.py")

NETNS_DIR = "/run/netns"
BPFFS = "/sys/fs/bpf"
STATE_DIR = "/run/skmesh-test"  # one <prefix>.json per live topology

RID_RE = r"[0-9a-f]{4}"
NETNS_RE = re.compile(r"^skm(" + RID_RE + r")-(fab|n\d+(p\d+)?)$")
CGROUP_RE = re.compile(r"^skm(" + RID_RE + r")$")
PIN_RE = re.compile(r"^skm(" + RID_RE + r")-n\d+$")
STATE_RE = re.compile(r"^skm(" + RID_RE + r")\.json$")

GATEWAY = "169.254.1.1"


class TopoError(Exception):
    """A topology command failed; the message says which and why."""


def cg2_root():
    """Return the cgroup v2 mount point from /proc/self/mounts (field 3 ==
    cgroup2); raise TopoError when there is none."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                # mount points escape blanks as octal (\040)
                return re.sub(r"\\([0-7]{3})",
                              lambda m: chr(int(m.group(1), 8)),
                              fields[1])
    raise TopoError("no cgroup2 mount in /proc/self/mounts")


def bpffs_mounted():
    """True when a bpf filesystem is mounted at /sys/fs/bpf."""
    with open("/proc/self/mounts") as f:
        return any(l.split()[1:3] == [BPFFS, "bpf"] for l in f)


def build_dir():
    """$SKM_BUILD, or build/ of the repository; relative paths are taken
    from the repository root."""
    b = os.environ.get("SKM_BUILD", "build")
    return b if os.path.isabs(b) else os.path.join(REPO, b)


def sh(argv, check=True, timeout=30, input=None):
    """Run argv, capture its output (text); raise TopoError naming the
    command and its stderr when it fails and check is set."""
    try:
        r = subprocess.run(argv, input=input, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TopoError("timed out after %ss: %s" % (timeout, " ".join(argv)))
    if check and r.returncode != 0:
        raise TopoError("command failed (exit %d): %s\n%s" %
                        (r.returncode, " ".join(argv), (r.stderr or r.stdout).strip()))
    return r


def _proc_start(pid):
    """Start time (clock ticks since boot) of pid, or None if it is gone:
    (pid, start) names a process even when pids are reused."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pids_in_netns(paths):
    """Pids of every process whose network namespace is one of the nsfs
    files in paths (such as /run/netns/NAME)."""
    want = set()
    for p in paths:
        try:
            st = os.stat(p)
            want.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    pids = []
    if not want:
        return pids
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            st = os.stat("/proc/%s/ns/net" % d)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in want:
            pids.append(int(d))
    return pids


def _kill_pids(pids, wait=3.0):
    """SIGKILL pids and wait (bounded) until they are gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    for pid in pids:
        while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
            # reap it if it is our child, else wait for its parent to
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            st = _proc_state(pid)
            if st in (None, "Z", "X"):
                break
            time.sleep(0.01)


def _proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _cgroup_procs(path):
    pids = []
    for root, _dirs, _files in os.walk(path):
        try:
            with open(os.path.join(root, "cgroup.procs")) as f:
                pids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return pids


def remove_cgroup_tree(path):
    """Kill every process in the cgroup tree at path (cgroup.kill when the
    kernel has it, else SIGKILL of each pid in cgroup.procs) and remove its
    directories depth-first. Missing path: nothing to do."""
    if not os.path.isdir(path):
        return
    killf = os.path.join(path, "cgroup.kill")
    deadline = time.monotonic() + 5
    while True:
        pids = _cgroup_procs(path)
        if not pids:
            break
        if os.path.exists(killf):
            try:
                with open(killf, "w") as f:
                    f.write("1")
            except OSError:
                _kill_pids(pids, wait=0)
        else:
            _kill_pids(pids, wait=0)
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if time.monotonic() > deadline:
            raise TopoError("cgroup %s still has processes %s" % (path, pids))
        time.sleep(0.02)
    for root, dirs, _files in os.walk(path, topdown=False):
        for _ in range(100):  # a dying task can hold the dir briefly
            try:
                os.rmdir(root)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)
        else:
            os.rmdir(root)


class Pod:
    """One pod: its names, address and cgroup."""

    def __init__(self, topo, node, index):
        self.node = node
        self.index = index
        self.name = "n%dp%d" % (node, index)
        self.ns = "%s-%s" % (topo.prefix, self.name)
        self.netns_path = os.path.join(NETNS_DIR, self.ns)
        self.ip = "10.99.%d.%d" % (node, index + 1)
        self.cgroup = os.path.join(topo.node_cgroup(node), "p%d" % index)
        self.host_veth = "s%sn%dp%d" % (topo.rid, node, index)

    def to_dict(self):
        return {k: getattr(self, k) for k in
                ("name", "node", "index", "ns", "netns_path", "ip",
             "cgroup", "host_veth")}

    def __repr__(self):
        return "Pod(%s %s)" % (self.name, self.ip)


class Meshd:
    """A meshd started by Topology.start_meshd()."""

    def __init__(self, node, proc, argv, log, access_log):
        self.node = node
        self.proc = proc
        self.argv = argv
        self.log = log  # its stdout and stderr
        self.access_log = access_log  # JSON line per closed connection

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])

    def access_events(self):
        """Parsed JSON lines of the access log so far (a partial last
        line is left for the next call)."""
        out = []
        try:
            with open(self.access_log) as f:
                data = f.read()
        except OSError:
            return out
        for line in data.splitlines(keepends=True):
            if line.endswith("\n") and line.strip():
                out.append(json.loads(line))
        return out


class Topology:
    """Nodes and pods as network namespaces, with their cgroups. See the
    module comment for names and addresses."""

    def __init__(self, nodes=2, pods_per_node=2, run_id=None, owner_pid=None):
        if not 1 <= nodes <= 9 or not 0 <= pods_per_node <= 200:
            raise ValueError("1..9 nodes and 0..200 pods per node")
        self.nodes = nodes
        self.pods_per_node = pods_per_node
        self.cg2root = cg2_root()
        self.owner_pid = owner_pid or os.getpid()
        self._claimed = False
        self.rid = run_id
        self.prefix = "skm%s" % run_id if run_id else None
        self._procs = []  # Popen objects of everything we started
        self.meshds = {}  # node -> Meshd
        self.meshd_nodes = set()  # nodes that ever ran a meshd
        self.logdir = None
        if run_id:
            if not re.fullmatch(RID_RE, run_id):
                raise ValueError("run id must be 4 hex digits")
            self._names()

    # --- names ------------------------------------------------------

    def _names(self):
        self.fab_ns = "%s-fab" % self.prefix
        self.pods = [Pod(self, n, i)
                     for n in range(1, self.nodes + 1)
                     for i in range(1, self.pods_per_node + 1)]

    def node_ns(self, n):
        return "%s-n%d" % (self.prefix, n)

    def node_netns_path(self, n):
        return os.path.join(NETNS_DIR, self.node_ns(n))

    def node_ip(self, n):
        """The node's address on the fabric."""
        return "10.99.0.%d" % n

    def run_cgroup(self):
        return os.path.join(self.cg2root, self.prefix)

    def node_cgroup(self, n):
        return os.path.join(self.run_cgroup(), "n%d" % n)

    def pin_dir(self, n):
        return os.path.join(BPFFS, "%s-n%d" % (self.prefix, n))

    def pod(self, name):
        for p in self.pods:
            if p.name == name:
                return p
        raise KeyError(name)

    def node_pods(self, n):
        return [p for p in self.pods if p.node == n]

    def state_path(self):
        return os.path.join(STATE_DIR, "%s.json" % self.prefix)

    def to_dict(self):
        return {
            "id": self.rid,
            "prefix": self.prefix,
            "cg2root": self.cg2root,
            "fabric_ns": self.fab_ns,
            "logdir": self.logdir,
            "nodes": [{"node": n, "name": "node%d" % n,
                       "ns": self.node_ns(n),
                       "netns_path": self.node_netns_path(n),
                       "ip": self.node_ip(n),
                       "cgroup": self.node_cgroup(n),
                       "pin_dir": self.pin_dir(n)}
                      for n in range(1, self.nodes + 1)],
            "pods": [p.to_dict() for p in self.pods],
        }

    # --- state file: claims the id, lets down()/gc find an owner ------

    def _write_state(self):
        st = {"nodes": self.nodes, "pods_per_node": self.pods_per_node,
              "owner_pid": self.owner_pid,
              "owner_start": _proc_start(self.owner_pid),
              "logdir": self.logdir,
              "meshd_nodes": sorted(self.meshd_nodes)}
        tmp = self.state_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, self.state_path())

    def _claim(self):
        os.makedirs(STATE_DIR, exist_ok=True)
        for _ in range(64):
            rid = self.rid or os.urandom(2).hex()
            prefix = "skm%s" % rid
            busy = (any(n.startswith(prefix + "-") for n in _netns_list())
                    or os.path.exists(os.path.join(self.cg2root, prefix))
                    or any(d.startswith(prefix + "-")
                       for d in _listdir(BPFFS)))
            if not busy:
                try:
                    fd = os.open(os.path.join(STATE_DIR, prefix + ".json"),
                                 os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    os.close(fd)
                except FileExistsError:
                    busy = True
            if not busy:
                self.rid, self.prefix = rid, prefix
                self._claimed = True
                self._names()
                return
            if self.rid:
                raise TopoError("topology id %s is in use" % self.rid)
        raise TopoError("no free topology id found")

    @classmethod
    def attach(cls, rid):
        """The Topology of a live run id (made by `topo.py up`)."""
        path = os.path.join(STATE_DIR, "skm%s.json" % rid)
        try:
            with open(path) as f:
                st = json.load(f)
        except (OSError, ValueError) as e:
            raise TopoError("no topology %s (%s)" % (rid, e))
        t = cls(st["nodes"], st["pods_per_node"], rid, st.get("owner_pid"))
        t._claimed = True
        t.logdir = st.get("logdir")
        t.meshd_nodes = set(st.get("meshd_nodes", []))
        return t

    # --- lifecycle -----------------------------------------------------

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    def up(self):
        """Create every namespace, link, address, route and cgroup, then
        check a pod reaches every other pod. On any failure, remove what
        was made and re-raise."""
        self._claim()
        try:
            self.logdir = tempfile.mkdtemp(prefix="%s-logs-" % self.prefix)
            self._write_state()
            self._build()
            self._check_connectivity()
        except BaseException:
            self.down()
            raise
        return self

    def _ip(self, ns, *args):
        sh(["ip", "-n", ns] + list(args))

    def _sysctl(self, ns, settings):
        """Write /proc/sys settings inside netns ns (one process)."""
        script = "; ".join("echo %s > /proc/sys/%s" % (v, k.replace(".", "/"))
                           for k, v in settings)
        sh(["nsenter", "--net=" + os.path.join(NETNS_DIR, ns), "--",
            "sh", "-ec", script])

    def _new_netns(self, ns):
        sh(["ip", "netns", "add", ns])
        # no IPv6: keeps router solicitations and MLD off the veth counters
        self._sysctl(ns, [("net.ipv6.conf.all.disable_ipv6", 1),
                          ("net.ipv6.conf.default.disable_ipv6", 1)])
        self._ip(ns, "link", "set", "lo", "up")

    def _build(self):
        os.makedirs(self.run_cgroup())
        self._new_netns(self.fab_ns)
        self._ip(self.fab_ns, "link", "add", "br0", "type", "bridge")
        self._ip(self.fab_ns, "link", "set", "br0", "up")
        for n in range(1, self.nodes + 1):
            ns = self.node_ns(n)
            self._new_netns(ns)
            os.makedirs(self.node_cgroup(n))
            peer = "to-n%d" % n
            self._ip(ns, "link", "add", "fab0", "type", "veth",
                     "peer", "name", peer, "netns", self.fab_ns)
            self._ip(self.fab_ns, "link", "set", peer, "master", "br0", "up")
            self._ip(ns, "addr", "add", self.node_ip(n) + "/24", "dev", "fab0")
            self._ip(ns, "link", "set", "fab0", "up")
            # proxy ARP answers only for an address the node routes out
            # of another device: give the gateway a route (pods only
            # ever ARP for it; nothing is sent to it)
            self._ip(ns, "route", "add", GATEWAY + "/32", "dev", "lo")
            for m in range(1, self.nodes + 1):
                if m != n:
                    self._ip(ns, "route", "add", "10.99.%d.0/24" % m,
                             "via", self.node_ip(m), "dev", "fab0")
            # no ICMP rate limit: a connect() to an address nobody routes
            # (a VIP seen by a socket outside the mesh) fails at once
            settings = [("net.ipv4.ip_forward", 1), ("net.ipv4.icmp_ratelimit", 0)]
            for p in self.node_pods(n):
                self._build_pod(p)
                v = p.host_veth
                settings += [("net.ipv4.conf.%s.proxy_arp" % v, 1),
                             ("net.ipv4.neigh.%s.proxy_delay" % v, 0)]
            self._sysctl(ns, settings)

    def _build_pod(self, p):
        node_ns = self.node_ns(p.node)
        self._new_netns(p.ns)
        os.makedirs(p.cgroup)
        self._ip(node_ns, "link", "add", p.host_veth, "type", "veth",
                 "peer", "name", "eth0", "netns", p.ns)
        self._ip(p.ns, "addr", "add", p.ip + "/32", "dev", "eth0")
        self._ip(p.ns, "link", "set", "eth0", "up")
        self._ip(p.ns, "route", "add", GATEWAY, "dev", "eth0", "scope", "link")
        self._ip(p.ns, "route", "add", "default", "via", GATEWAY, "dev", "eth0")
        self._ip(node_ns, "link", "set", p.host_veth, "up")
        self._ip(node_ns, "route", "add", p.ip + "/32", "dev", p.host_veth)

    def _check_connectivity(self):
        if len(self.pods) < 2:
            return
        src = self.pods[0]
        dst = [p.ip for p in self.pods[1:]]
        r = sh(["nsenter", "--net=" + src.netns_path, "--",
                sys.executable, PODTOOL, "ping", "--timeout", "2"] + dst,
               check=False, timeout=20)
        if r.returncode != 0:
            raise TopoError("topology %s: %s cannot reach every pod:\n%s%s"
                            % (self.rid, src.name, r.stdout, r.stderr))

    def down(self):
        """Remove everything of this run id: processes, meshd pins and
        links, namespaces (with their veths), cgroups, pin dirs, logs,
        state file. Safe to call twice and after a partial up()."""
        if not self.prefix:
            return
        errors = []
        # meshd first, gently, so it can flush its access log
        for h in list(self.meshds.values()):
            if h.proc.poll() is None:
                try:
                    h.proc.send_signal(signal.SIGTERM)
                    h.proc.wait(3)
                except (subprocess.TimeoutExpired, OSError):
                    pass
        for p in self._procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for p in self._procs:
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                errors.append("pid %d did not die" % p.pid)
            for f in (p.stdin, p.stdout, p.stderr):
                if f:
                    try:
                        f.close()
                    except OSError:
                        pass
        self._procs = []
        self.meshds = {}
        nss = [n for n in _netns_list() if n.startswith(self.prefix + "-")]
        _kill_pids(_pids_in_netns([os.path.join(NETNS_DIR, n) for n in nss]))
        meshd = os.path.join(build_dir(), "meshd")
        for n in sorted(self.meshd_nodes):
            if os.path.exists(meshd) and os.path.exists(self.pin_dir(n)):
                argv = [meshd, "--cleanup", "--bpffs", self.pin_dir(n),
                        "--cgroup", self.node_cgroup(n)]
                if os.path.exists(self.node_netns_path(n)):
                    argv = self.node_argv(n, argv)
                try:
                    sh(argv, check=False, timeout=20)
                except TopoError as e:
                    errors.append(str(e))
        for n in nss:
            r = sh(["ip", "netns", "del", n], check=False)
            if r.returncode != 0 and n in _netns_list():
                errors.append("ip netns del %s: %s" % (n, r.stderr.strip()))
        try:
            remove_cgroup_tree(self.run_cgroup())
        except (TopoError, OSError) as e:
            errors.append(str(e))
        for d in _listdir(BPFFS):
            if PIN_RE.match(d) and d.startswith(self.prefix + "-"):
                shutil.rmtree(os.path.join(BPFFS, d), ignore_errors=True)
                if os.path.exists(os.path.join(BPFFS, d)):
                    errors.append("cannot remove %s/%s" % (BPFFS, d))
        self.sanitizer_reports = self._sanitizer_reports()
        if self.logdir and not os.environ.get("SKM_KEEP_LOGS"):
            shutil.rmtree(self.logdir, ignore_errors=True)
        if self._claimed or os.path.exists(self.state_path()):
            try:
                os.unlink(self.state_path())
            except FileNotFoundError:
                pass
            self._claimed = False
        if errors:
            raise TopoError("down %s left something behind:\n  %s"
                            % (self.rid, "\n  ".join(errors)))

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                       "runtime error:", "ERROR: UndefinedBehaviorSanitizer")

    def _sanitizer_reports(self):
        """Lines of the run's meshd logs where a sanitizer (make asan)
        reported something, as "file: line"."""
        out = []
        if not self.logdir or not os.path.isdir(self.logdir):
            return out
        for f in sorted(os.listdir(self.logdir)):
            if not f.startswith("meshd"):
                continue
            try:
                with open(os.path.join(self.logdir, f), errors="replace") as fh:
                    for line in fh:
                        if any(m in line for m in self.SANITIZER_MARKS):
                            out.append("%s: %s" % (f, line.strip()))
            except OSError:
                pass
        return out

    # --- running things in pods and nodes -----------------------------

    def pod_argv(self, pod, argv):
        """argv run in pod: join its cgroup first, then its network
        namespace (only the network namespace: /sys and the cgroup tree
        stay the host's, unlike `ip netns exec`)."""
        return self.cgroup_argv(pod.cgroup, pod.netns_path, argv)

    def netns_argv(self, netns_path, argv):
        """argv in a network namespace, in the caller's cgroup."""
        return ["nsenter", "--net=" + netns_path, "--"] + list(argv)

    def node_argv(self, n, argv):
        """argv in node n's network namespace (cgroup unchanged)."""
        return self.netns_argv(self.node_netns_path(n), argv)

    def popen(self, argv, **kw):
        """Popen tracked for down(); its own session so it can be
        killed with its children."""
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(argv, **kw)
        self._procs.append(p)
        return p

    def run(self, argv, timeout=60, check=True, **kw):
        """Run to completion, text output captured; raise TopoError when
        it fails (check) or times out. Returns CompletedProcess."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        p = self.popen(argv, **kw)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise TopoError("timed out after %ss: %s\n%s" %
                            (timeout, " ".join(argv), err))
        finally:
            self._procs.remove(p)
        r = subprocess.CompletedProcess(argv, p.returncode, out, err)
        if check and p.returncode != 0:
            raise TopoError("command failed (exit %d): %s\n%s%s" %
                            (p.returncode, " ".join(argv), out or "", err or ""))
        return r

    def pod_popen(self, pod, argv, **kw):
        return self.popen(self.pod_argv(pod, argv), **kw)

    def pod_run(self, pod, argv, **kw):
        return self.run(self.pod_argv(pod, argv), **kw)

    def node_popen(self, n, argv, **kw):
        return self.popen(self.node_argv(n, argv), **kw)

    def node_run(self, n, argv, **kw):
        return self.run(self.node_argv(n, argv), **kw)

    def podtool_argv(self, *args):
        return [sys.executable, PODTOOL] + [str(a) for a in args]

    def make_cgroup(self, name):
        """An extra cgroup <cg2root>/skm<rid>/<name>, outside every node
        (removed by down())."""
        path = os.path.join(self.run_cgroup(), name)
        os.makedirs(path, exist_ok=True)
        return path

    def cgroup_argv(self, cgroup, netns_path, argv):
        """argv in any cgroup and network namespace: the shell moves
        itself into the cgroup, then execs nsenter, which execs argv, so
        the pid stays the same all the way."""
        return ["sh", "-c",
                'echo $$ > "$1/cgroup.procs" || exit 125; n=$2; shift 2; '
                'exec nsenter --net="$n" -- "$@"',
                "sh", cgroup, netns_path] + list(argv)

    def link_stats(self, n, dev):
        """Counters (ip -s -j link show) of dev in node n."""
        r = sh(["ip", "-n", self.node_ns(n), "-s", "-j", "link", "show",
                "dev", dev])
        st = json.loads(r.stdout)[0]["stats64"]
        return {"rx_bytes": st["rx"]["bytes"], "rx_packets": st["rx"]["packets"],
                "tx_bytes": st["tx"]["bytes"], "tx_packets": st["tx"]["packets"]}

    def where_argv(self, where, argv):
        """argv run at where: a Pod (its cgroup and netns), a node number
        (its netns, our cgroup) or a (cgroup, netns_path) pair."""
        if isinstance(where, Pod):
            return self.pod_argv(where, argv)
        if isinstance(where, int):
            return self.node_argv(where, argv)
        cg, netns = where
        return self.cgroup_argv(cg, netns, argv)

    def podtool(self, where, *args, stdin=False):
        """Start podtool.py at where (see where_argv); a ToolProc. For a
        server, call .expect("listening") before using it."""
        name = where.name if isinstance(where, Pod) else "tool"
        return ToolProc(self, self.where_argv(where, self.podtool_argv(*args)),
                        stdin=stdin, name="%s-%s" % (name, args[0]))

    # --- config, meshd, meshctl ----------------------------------------

    def config_text(self, services=(), extra=""):
        """meshd YAML: a Workload per pod, then the services. A service
        is a dict: name, vip, ports [{port, targetPort[, protocol]}],
        endpoints [{ip, weight}] or [(ip, weight)], optional namespace."""
        docs = []
        for p in self.pods:
            docs.append(
                "apiVersion: skmesh.io/v1alpha1\n"
                "kind: Workload\n"
                f"metadata: {{name: {p.name}, namespace: default, "
                f"labels: {{app: {p.name}}}}}\n"
                f"spec: {{ip: {p.ip}, node: node{p.node}, "
                f"serviceAccount: {p.name}, netns: {p.netns_path}}}\n")
        for s in services:
            ports = ", ".join(
                "{port: %d, targetPort: %d, protocol: %s}" %
                (pt["port"], pt.get("targetPort", pt["port"]),
                 pt.get("protocol", "TCP"))
                for pt in s.get("ports", []))
            eps = []
            for e in s.get("endpoints", []):
                ip, w = (e["ip"], e.get("weight", 1)) if isinstance(e, dict) else e
                eps.append("{ip: %s, weight: %d}" % (ip, w))
            docs.append(
                "apiVersion: skmesh.io/v1alpha1\n"
                "kind: Service\n"
                f"metadata: {{name: {s['name']}, "
                f"namespace: {s.get('namespace', 'default')}}}\n"
                "spec:\n"
                f"  vip: {s['vip']}\n"
                f"  ports: [{ports}]\n"
                f"  endpoints: [{', '.join(eps)}]\n")
        if extra:
            docs.append(extra if extra.endswith("\n") else extra + "\n")
        return "---\n".join(docs)

    def config_path(self, name="mesh.yaml", sub="conf"):
        """A path for a config file in its own folder of the run's log
        dir: meshd watches the folder of its config, so logs must not be
        written next to it."""
        d = os.path.join(self.logdir, sub)
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, name)

    def write_config(self, path, services=(), extra=""):
        """Write config_text() to path (atomically: meshd may be reading
        the old one). Returns path."""
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.config_text(services, extra))
        os.replace(tmp, path)
        return path

    def meshd_argv(self, n, config_path, extra_args=(), access_log=None,
                   kubeconfig=None):
        """meshd's command line for node n: standalone with config_path,
        or cluster mode with kubeconfig (then config_path is None)."""
        source = (["--kubeconfig", kubeconfig] if kubeconfig
                  else ["--config", config_path])
        return [os.path.join(build_dir(), "meshd")] + source + [
                "--node", "node%d" % n,
                "--cgroup", self.node_cgroup(n), "--bpffs", self.pin_dir(n),
                "--access-log", access_log] + list(extra_args)

    def start_meshd(self, n, config_path, extra_args=(), timeout=10,
                    detach=False, kubeconfig=None):
        """Start meshd for node n in the node's network namespace and in
        the node's cgroup, the one it attaches to (as on a real node,
        where it attaches to the cgroup root: the programs see meshd's
        sockets and know them by their mark); wait for `meshd: ready` in
        its log. Returns a Meshd; raises TopoError with the log tail if
        it exits or is not ready in time. With kubeconfig (config_path
        None) meshd runs in cluster mode against that API server."""
        if not self.logdir:
            self.logdir = tempfile.mkdtemp(prefix="%s-logs-" % self.prefix)
        k = sum(1 for f in os.listdir(self.logdir)
                if f.startswith("meshd-n%d." % n))
        log = os.path.join(self.logdir, "meshd-n%d.%d.log" % (n, k))
        access = os.path.join(self.logdir, "access-n%d.log" % n)
        argv = self.meshd_argv(n, config_path, extra_args, access, kubeconfig)
        self.meshd_nodes.add(n)
        self._write_state()
        with open(log, "w") as lf:
            proc = self.popen(self.cgroup_argv(self.node_cgroup(n),
                                               self.node_netns_path(n), argv),
                              stdout=lf,
                              stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
        h = Meshd(n, proc, argv, log, access)
        self.meshds[n] = h
        deadline = time.monotonic() + timeout
        while True:
            if any("meshd: ready" in l for l in h.log_text().splitlines()):
                break
            if proc.poll() is not None:
                raise TopoError("meshd node%d exited with %d before ready:\n%s"
                                % (n, proc.returncode, h.log_tail()))
            if time.monotonic() > deadline:
                raise TopoError("meshd node%d not ready after %ss:\n%s"
                                % (n, timeout, h.log_tail()))
            time.sleep(0.02)
        if detach:
            self._procs.remove(proc)
        return h

    def stop_meshd(self, h, sig=signal.SIGTERM, timeout=10):
        """Send sig to meshd and wait for it to exit; returns its exit
        status (negative: killed by that signal)."""
        if h.proc.poll() is None:
            h.proc.send_signal(sig)
        try:
            rc = h.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(h.proc.pid, signal.SIGKILL)
            rc = h.proc.wait()
            raise TopoError("meshd node%d ignored signal %d for %ss:\n%s"
                            % (h.node, sig, timeout, h.log_tail()))
        if self.meshds.get(h.node) is h:
            del self.meshds[h.node]
        return rc

    def meshctl(self, n, *args, check=True):
        """Run meshctl on node n's pins; returns stdout, raises TopoError
        with stderr when it fails."""
        # in the node's namespace, as on a real node: interface names of
        # the pod veths resolve there
        argv = self.node_argv(n, [os.path.join(build_dir(), "meshctl"), "--bpffs",
                                  self.pin_dir(n)] + [str(a) for a in args])
        r = sh(argv, check=False)
        if check and r.returncode != 0:
            raise TopoError("meshctl failed (exit %d): %s\n%s" %
                            (r.returncode, " ".join(argv), r.stderr.strip()))
        return r.stdout

    def meshctl_json(self, n, *args):
        out = self.meshctl(n, *(list(args) + ["-o", "json"]))
        try:
            return json.loads(out)
        except ValueError as e:
            raise TopoError("meshctl %s -o json: not JSON (%s):\n%s"
                            % (" ".join(map(str, args)), e, out[:2000]))


class ToolProc:
    """A running tool whose stdout is JSON lines (podtool.py): lines are
    collected by a thread so a test can wait for one with a timeout."""

    def __init__(self, topo, argv, stdin=False, name="tool"):
        self.argv = argv
        self.errlog = os.path.join(topo.logdir or tempfile.gettempdir(),
                                   "%s.%d.err" % (name, len(topo._procs)))
        self._err = open(self.errlog, "w")
        self.proc = topo.popen(argv, stdout=subprocess.PIPE, stderr=self._err,
                               stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                               text=True, bufsize=1)
        self._q = queue.Queue()
        self.lines = []          # every parsed line so far
        t = threading.Thread(target=self._read, daemon=True)
        t.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = {"text": line}
            self.lines.append(obj)
            self._q.put(obj)
        self._q.put(None)

    def stderr(self):
        try:
            with open(self.errlog, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def next(self, timeout=10):
        """The next JSON line; TopoError on timeout or exit."""
        try:
            obj = self._q.get(timeout=timeout)
        except queue.Empty:
            raise TopoError("no output from %s in %ss; stderr:\n%s"
                            % (" ".join(self.argv[-6:]), timeout, self.stderr()))
        if obj is None:
            self._q.put(None)
            raise TopoError("%s exited (%s); stderr:\n%s"
                            % (" ".join(self.argv[-6:]), self.proc.poll(),
                               self.stderr()))
        return obj

    def expect(self, key, timeout=10):
        """Skip lines until one has key; return it."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.next(max(0.01, deadline - time.monotonic()))
            if key in obj:
                return obj

    def cmd(self, line, timeout=30):
        """Write a command line to stdin and return the next JSON line."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.next(timeout)

    def wait(self, timeout=30):
        """Wait for exit; return (returncode, lines not yet read)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TopoError("%s still running after %ss; stderr:\n%s"
                            % (" ".join(self.argv[-6:]), timeout, self.stderr()))
        rest = []
        while True:
            obj = self._q.get(timeout=5)
            if obj is None:
                self._q.put(None)
                return rc, rest
            rest.append(obj)

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


def _listdir(d):
    try:
        return os.listdir(d)
    except OSError:
        return []


def _netns_list():
    return _listdir(NETNS_DIR)


def leftovers():
    """Run ids that have something on this machine: netns, cgroup, pin
    dir or state file."""
    rids = set()
    for n in _netns_list():
        m = NETNS_RE.match(n)
        if m:
            rids.add(m.group(1))
    try:
        root = cg2_root()
        for d in _listdir(root):
            m = CGROUP_RE.match(d)
            if m and os.path.isdir(os.path.join(root, d)):
                rids.add(m.group(1))
    except TopoError:
        pass
    for d in _listdir(BPFFS):
        m = PIN_RE.match(d)
        if m:
            rids.add(m.group(1))
    for f in _listdir(STATE_DIR):
        m = STATE_RE.match(f)
        if m:
            rids.add(m.group(1))
    return sorted(rids)


def _owner_alive(rid):
    try:
        with open(os.path.join(STATE_DIR, "skm%s.json" % rid)) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return False
    pid, start = st.get("owner_pid"), st.get("owner_start")
    return (bool(pid) and start is not None and _proc_start(pid) == start
            and _proc_state(pid) not in ("Z", "X", None))


def teardown_id(rid):
    """down() for a run id, with or without its state file."""
    try:
        t = Topology.attach(rid)
    except TopoError:
        t = Topology(1, 1, rid)
        # nodes that may have run meshd: every pin dir of this id
        t.meshd_nodes = {int(d.rsplit("-n", 1)[1]) for d in _listdir(BPFFS)
                         if PIN_RE.match(d) and d.startswith(t.prefix + "-")}
    t.down()


def gc(all_=False, quiet=False):
    """Remove the topologies of earlier runs. A topology whose owner
    process still runs (another test run) is kept unless all_."""
    removed, kept, failed = [], [], []
    for rid in leftovers():
        if not all_ and _owner_alive(rid):
            kept.append(rid)
            continue
        try:
            teardown_id(rid)
            removed.append(rid)
        except (TopoError, OSError) as e:
            failed.append(rid)
            print("topo gc: %s: %s" % (rid, e), file=sys.stderr)
    if not quiet:
        print("topo gc: removed %d (%s), kept %d live (%s)" %
              (len(removed), " ".join(removed) or "-", len(kept),
               " ".join(kept) or "-"))
    return not failed


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="topo.py", description="skmesh test topology (nodes and pods "
        "as network namespaces, a cgroup per pod)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("up", help="create a topology and leave it up")
    a.add_argument("--nodes", type=int, default=2)
    a.add_argument("--pods", type=int, default=2, help="pods per node")
    a.add_argument("--id", help="run id (4 hex digits; default: random)")
    a.add_argument("--owner-pid", type=int, default=None,
                   help="gc keeps the topology while this process lives "
                   "(default: the calling process)")
    a.add_argument("--json", action="store_true", help="print names as JSON")
    a = sub.add_parser("down", help="remove a topology")
    a.add_argument("--id", required=True)
    a = sub.add_parser("gc", help="remove topologies left by crashed runs")
    a.add_argument("--all", action="store_true",
                   help="also those whose owner process still runs")
    a = sub.add_parser("exec", help="run a command in a pod (its cgroup "
                       "and netns) or a node (netns only)")
    a.add_argument("--id", required=True)
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--pod")
    g.add_argument("--node", type=int)
    a.add_argument("argv", nargs=argparse.REMAINDER)
    a = sub.add_parser("meshd", help="start meshd for a node, wait until "
                       "ready, leave it running (down stops it)")
    a.add_argument("--id", required=True)
    a.add_argument("--node", type=int, required=True)
    a.add_argument("--config", required=True)
    a.add_argument("extra", nargs=argparse.REMAINDER)
    a = sub.add_parser("show", help="print a live topology as JSON")
    a.add_argument("--id", required=True)
    args = ap.parse_args(argv)

    if os.geteuid() != 0:
        print("topo.py: must run as root (namespaces, cgroups, bpffs)",
              file=sys.stderr)
        return 1
    try:
        if args.cmd == "up":
            t = Topology(args.nodes, args.pods, args.id,
                         args.owner_pid or os.getppid())
            t.up()
            if args.json:
                print(json.dumps(t.to_dict(), indent=1))
            else:
                print(t.rid)
        elif args.cmd == "down":
            teardown_id(args.id)
        elif args.cmd == "gc":
            return 0 if gc(args.all) else 1
        elif args.cmd == "show":
            print(json.dumps(Topology.attach(args.id).to_dict(), indent=1))
        elif args.cmd == "exec":
            t = Topology.attach(args.id)
            cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not cmd:
                ap.error("exec: no command")
            full = (t.pod_argv(t.pod(args.pod), cmd) if args.pod
                    else t.node_argv(args.node, cmd))
            os.execvp(full[0], full)
        elif args.cmd == "meshd":
            t = Topology.attach(args.id)
            extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
            h = t.start_meshd(args.node, args.config, extra, detach=True)
            print(json.dumps({"pid": h.pid, "log": h.log,
                              "access_log": h.access_log}))
    except (TopoError, KeyError, ValueError) as e:
        print("topo.py %s: %s" % (args.cmd, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
