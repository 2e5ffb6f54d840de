#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Socket load balancing (issue 2, b): 2000 connections to a VIP whose two
backends have weights 1:3 split within statistical tolerance, getpeername()
returns the VIP every time; after a reload without one backend, that
backend gets no new connection while a connection already open to it keeps
working; a VIP with no backend refuses connect() at once (ECONNREFUSED).

1 node x 3 pods: n1p1 is the client, n1p2 (weight 1) and n1p3 (weight 3)
run `whoami` servers that name themselves on every connection.
"""
import math
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

VIP, EMPTY_VIP = "10.96.0.10", "10.96.0.11"
N = 2000
N_AFTER = 200


def service(backends):
    return {"name": "web", "vip": VIP,
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
            "endpoints": backends}


EMPTY = {"name": "nobody", "vip": EMPTY_VIP,
         "ports": [{"port": 80, "targetPort": 8080}], "endpoints": []}


def svc_backends(topo, vip):
    for s in topo.meshctl_json(1, "services"):
        if s["vip"] == vip and s["port"] == 80:
            return sorted((b["ip"], b["port"], b["weight"]) for b in s["backends"])
    return None


def body(t, topo):
    client, b1, b3 = topo.pods
    for p in (b1, b3):
        topo.podtool(p, "whoami", "--port", 8080, "--name", p.name,
                     "--timeout", 200).expect("listening")

    # meshd is given a symlink; edits go to its target in another folder,
    # which meshd's inotify watch does not see: only SIGHUP reloads it
    real, cfg = topo.config_path(sub="real"), topo.config_path()
    topo.write_config(real, [service([(b1.ip, 1), (b3.ip, 3)]), EMPTY])
    os.symlink(real, cfg)
    h = topo.start_meshd(1, cfg)
    t.eq("meshctl services: web has both backends on 8080 with weights 1 and 3",
         svc_backends(topo, VIP), sorted([(b1.ip, 8080, 1), (b3.ip, 8080, 3)]))

    c0 = tap.counters(topo)
    r = topo.pod_run(client, topo.podtool_argv(
        "connect-many", "--to", "%s:80" % VIP, "--count", N, "--greeting"),
        timeout=120)
    res = tap.json_line(r.stdout)
    t.diag("%d connections in %.1f s: %s" % (N, res["elapsed_s"], res["backends"]))
    t.eq("%d connections, no error" % N, res["errors"], {})
    t.eq("getpeername() is %s:80 every time" % VIP, res["peer_names"],
         {"%s:80" % VIP: N})
    n1 = res["backends"].get(b1.name, 0)
    n3 = res["backends"].get(b3.name, 0)
    mean, sigma = N / 4, math.sqrt(N * 0.25 * 0.75)
    t.check("weights 1:3: %s got %d, %s got %d (expect %d/%d, tolerance 5 sigma = %d)"
            % (b1.name, n1, b3.name, n3, mean, N - mean, 5 * sigma),
            n1 + n3 == N and abs(n1 - mean) < 5 * sigma, res)
    c1 = tap.counters(topo)
    t.eq("lb_connect counted every connection", c1["lb_connect"] - c0["lb_connect"], N)

    # --- a connection to the backend about to go, held across the reload
    held = topo.podtool(client, "session", "--to", "%s:80" % VIP, "--want",
                        b1.name, "--io-timeout", 20, stdin=True)
    first = held.expect("event")
    t.require("held connection reached %s through the VIP" % b1.name,
              first.get("event") == "connected" and first["peer"] == "%s:80" % VIP,
              first)
    x = held.cmd("xfer 262144")
    t.check("held connection transfers before the reload", x.get("ok"), x)

    topo.write_config(real, [service([(b3.ip, 3)]), EMPTY])
    h.proc.send_signal(signal.SIGHUP)
    got = tap.wait_until(lambda: svc_backends(topo, VIP) == [(b3.ip, 8080, 3)])
    t.require("SIGHUP: meshctl services shows only %s" % b3.name, got,
              lambda: "services: %s\nmeshd log:\n%s" % (svc_backends(topo, VIP),
                                                        h.log_tail()))
    x = held.cmd("xfer 262144")
    t.check("held connection to the removed backend still transfers", x.get("ok"), x)

    r = topo.pod_run(client, topo.podtool_argv(
        "connect-many", "--to", "%s:80" % VIP, "--count", N_AFTER, "--greeting"),
        timeout=60)
    res = tap.json_line(r.stdout)
    t.eq("%d new connections all go to %s" % (N_AFTER, b3.name), res["backends"],
         {b3.name: N_AFTER}, res)
    t.eq("... and getpeername() is still the VIP", res["peer_names"],
         {"%s:80" % VIP: N_AFTER})

    x = held.cmd("xfer 4096")
    t.check("held connection still works after the new connections", x.get("ok"), x)
    held.proc.stdin.write("close\n")
    held.proc.stdin.flush()
    rc, _ = held.wait(10)
    t.eq("held connection closes cleanly", rc, 0)

    # --- no backend: refused by connect() itself, no SYN sent
    c0 = tap.counters(topo)
    r = topo.pod_run(client, topo.podtool_argv(
        "connect-many", "--to", "%s:80" % EMPTY_VIP, "--count", 20,
        "--io-timeout", 5), timeout=60)
    res = tap.json_line(r.stdout)
    c1 = tap.counters(topo)
    t.eq("VIP without backends: connect() fails with ECONNREFUSED",
         res["errors"], {"ECONNREFUSED": 20}, res)
    t.check("... fast: slowest connect() %.3f ms < 100 ms" % res["connect_ms"]["max"],
            res["connect_ms"]["max"] < 100, res)
    t.eq("... counted as lb_no_backend", c1["lb_no_backend"] - c0["lb_no_backend"], 20)


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=3)
