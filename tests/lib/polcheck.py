# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""Helpers shared by the policy e2e tests: the Istio corpus, reloading meshd
and waiting for its verdict on the new config, checking that every pod's
veth carries meshd's TC filter, and reading a connect() result as a policy
verdict."""
import os
import signal
import time

import topo as topolib

CORPUS = os.path.join(topolib.REPO, "tests", "testdata", "istio-l4-policy", "cases")


def corpus(name):
    """The text of one corpus file (cases/NAME)."""
    with open(os.path.join(CORPUS, name)) as f:
        return f.read()


def log_counts(h):
    text = h.log_text()
    return (text.count("meshd: applied config"),
            text.count("is invalid: keeping the running config"),
            text.count("reconcile failed"))


def reload_and_wait(h, timeout=5.0):
    """SIGHUP meshd; (status, what it logged meanwhile), status one of
    'applied', 'invalid', 'failed', or None when meshd said nothing."""
    size = len(h.log_text())
    before = log_counts(h)
    h.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = log_counts(h)
        for status, n0, n1 in zip(("applied", "invalid", "failed"), before, now):
            if n1 > n0:
                return status, h.log_text()[size:]
        time.sleep(0.005)
    return None, h.log_text()[size:]


def tc_missing(topo, pods):
    """The pods whose node-side veth has no meshd TC filter (meshd's own
    handle 0x534b) on egress, the direction towards the pod."""
    bad = []
    for p in pods:
        r = topolib.sh(["tc", "-n", topo.node_ns(p.node), "filter", "show", "dev",
                        p.host_veth, "egress"], check=False)
        if "handle 0x534b" not in r.stdout:
            bad.append("%s (%s, %s)" % (p.name, p.ip, p.host_veth))
    return bad


def verdict(raw, plain):
    """ALLOW or DENY for a connect() result: a mesh source is refused with
    EPERM, plaintext by a dropped SYN (TIMEOUT); reaching the pod (OK, or
    ECONNREFUSED from a port with no listener) is allowed. Anything else is
    returned as '?RAW', which matches no verdict."""
    if raw in ("OK", "ECONNREFUSED"):
        return "ALLOW"
    if raw == ("TIMEOUT" if plain else "EPERM"):
        return "DENY"
    return "?" + raw
