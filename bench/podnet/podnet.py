#!/usr/bin/env python3
"""Pod network benchmark (issue 5, point 8), driven by run.sh.

Three measurements:
  cni    CNI ADD/DEL latency: the plugin executed exactly as a runtime does
         (fresh process, CNI_* environment, config on stdin), one pod netns
         per ADD, inside a scratch node namespace that nothing else uses.
  pods   Pod start latency in a running lab: N pods created at once with
         kubectl; per pod, the time from the watch's ADDED event to the
         event that shows the Ready condition True (both seen by one
         `kubectl get -w` stream, so clock skew does not enter).
  iperf  single-stream TCP throughput (iperf3, 10 s): pod to pod on one
         node, pod to pod across nodes (VXLAN), node to node (underlay).

Percentiles are nearest-rank over the whole sample.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time


def pct(sorted_values, q):
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(label, values_ms):
    s = sorted(values_ms)
    print(
        f"{label}: n={len(s)} p50={pct(s, 0.50):.1f} ms p90={pct(s, 0.90):.1f} ms "
        f"p99={pct(s, 0.99):.1f} ms max={s[-1]:.1f} ms"
    )
    return {"n": len(s), "p50": pct(s, 0.5), "p90": pct(s, 0.9), "p99": pct(s, 0.99), "max": s[-1]}


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, text=True, capture_output=True, **kw)


# ---------------------------------------------------------------- cni ----
def bench_cni(ferry, count):
    node = "podnet-bench-node"
    sh("ip", "netns", "del", node, check=False)
    sh("ip", "netns", "add", node)
    data_dir = tempfile.mkdtemp(prefix="podnet-cni-")
    config = json.dumps({
        "cniVersion": "1.1.0", "name": "bench", "type": "ferry", "bridge": "cni0",
        "isGateway": True, "mtu": 1450, "hairpinMode": True,
        "podCIDR": "10.250.0.0/22", "ipam": {"type": "host-local", "dataDir": data_dir},
    })
    adds, dels = [], []
    pods = [f"podnet-bench-p{i}" for i in range(count)]
    try:
        def cni(command, i, pod):
            env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=f"bench{i}",
                       CNI_NETNS=f"/run/netns/{pod}", CNI_IFNAME="eth0",
                       CNI_PATH=os.path.dirname(ferry))
            t = time.perf_counter()
            r = subprocess.run(["nsenter", f"--net=/run/netns/{node}", ferry, "cni"],
                               input=config, text=True, capture_output=True, env=env)
            took = (time.perf_counter() - t) * 1000
            if r.returncode != 0:
                sys.exit(f"{command} failed: {r.stdout}{r.stderr}")
            return took

        for i, pod in enumerate(pods):
            sh("ip", "netns", "add", pod)
            adds.append(cni("ADD", i, pod))
        for i, pod in enumerate(pods):
            dels.append(cni("DEL", i, pod))
    finally:
        for pod in pods:
            sh("ip", "netns", "del", pod, check=False)
        sh("ip", "netns", "del", node, check=False)
    # The nsenter wrapper costs a fork+exec too; measure it alone so the
    # plugin's own share is visible.
    wrapper = []
    for _ in range(50):
        t = time.perf_counter()
        sh("nsenter", "--net=/proc/self/ns/net", "true")
        wrapper.append((time.perf_counter() - t) * 1000)
    return {
        "add": summary("CNI ADD (incl. nsenter)", adds),
        "del": summary("CNI DEL (incl. nsenter)", dels),
        "nsenter_alone": summary("nsenter + true alone", wrapper),
    }


# --------------------------------------------------------------- pods ----
def kubectl(*args, stdin=None):
    return subprocess.run(["kubectl", *args], input=stdin, text=True,
                          capture_output=True, check=True).stdout


def bench_pods(count, namespace):
    subprocess.run(["kubectl", "delete", "ns", namespace, "--wait=true"],
                   capture_output=True)
    kubectl("create", "ns", namespace)
    added, ready = {}, {}
    done = threading.Event()
    watch = subprocess.Popen(
        ["kubectl", "get", "pods", "-n", namespace, "-w", "--output-watch-events",
         "-o", "json"], stdout=subprocess.PIPE, text=True)

    def reader():
        buf = ""
        depth = 0
        for line in watch.stdout:
            # `-o json` prints one pretty JSON object per event.
            buf += line
            depth += line.count("{") - line.count("}")
            if depth != 0:
                continue
            now = time.perf_counter()
            try:
                ev = json.loads(buf)
            except ValueError:
                buf = ""
                continue
            buf = ""
            pod = ev["object"]
            name = pod["metadata"]["name"]
            added.setdefault(name, now)
            conds = (pod.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                ready.setdefault(name, now)
                if len(ready) >= count:
                    done.set()
                    return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(1.0)
    items = [{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"start-{i}", "namespace": namespace},
        "spec": {"containers": [{"name": "web", "image": "nginx:alpine",
                                 "ports": [{"containerPort": 80}]}]},
    } for i in range(count)]
    started = time.perf_counter()
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    ok = done.wait(timeout=300)
    total = time.perf_counter() - started
    watch.kill()
    if not ok:
        sys.exit(f"only {len(ready)} of {count} pods became Ready within 300 s")
    lat = [(ready[n] - added[n]) * 1000 for n in ready]
    print(f"{count} pods Ready {total:.1f} s after the apply started")
    result = summary("pod start (created -> Ready)", lat)
    result["all_ready_s"] = total
    kubectl("delete", "ns", namespace, "--wait=false")
    return result


# -------------------------------------------------------------- iperf ----
def sandbox_of(namespace, pod):
    out = json.loads(kubectl("get", "pod", "-n", namespace, pod, "-o", "json"))
    node = out["spec"]["nodeName"]
    return f"{node}-{namespace}-{pod}", out["status"]["podIP"], node


def iperf(server_ns, client_ns, address, seconds):
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        out = sh("ip", "netns", "exec", client_ns, "iperf3", "-c", address, "-t",
                 str(seconds), "-J").stdout
    finally:
        srv.wait(timeout=10)
    data = json.loads(out)
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def bench_iperf(namespace, seconds, rounds):
    subprocess.run(["kubectl", "delete", "ns", namespace, "--wait=true"], capture_output=True)
    kubectl("create", "ns", namespace)
    pods = []
    for name, node in [("a1", "lab-node-1"), ("a2", "lab-node-1"), ("b1", "lab-node-2")]:
        pods.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": node,
                     "containers": [{"name": "web", "image": "nginx:alpine"}]},
        })
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod", "--all", "--timeout=120s")
    a1, a1_ip, _ = sandbox_of(namespace, "a1")
    a2, a2_ip, _ = sandbox_of(namespace, "a2")
    b1, b1_ip, _ = sandbox_of(namespace, "b1")
    rows = {"same node (pod -> pod)": [], "across nodes (pod -> pod, VXLAN)": [],
            "underlay (node -> node)": []}
    # Interleaved: one of each per round.
    for _ in range(rounds):
        rows["same node (pod -> pod)"].append(iperf(a2, a1, a2_ip, seconds))
        rows["across nodes (pod -> pod, VXLAN)"].append(iperf(b1, a1, b1_ip, seconds))
        rows["underlay (node -> node)"].append(iperf("lab-node-2", "lab-node-1", "172.30.0.12", seconds))
    result = {}
    for k, v in rows.items():
        print(f"{k}: " + ", ".join(f"{x:.2f}" for x in v) + f" Gbit/s (median {sorted(v)[len(v)//2]:.2f})")
        result[k] = v
    cross = sorted(rows["across nodes (pod -> pod, VXLAN)"])[rounds // 2]
    under = sorted(rows["underlay (node -> node)"])[rounds // 2]
    print(f"cross-node / underlay = {cross / under:.2f} (target >= 0.70; flannel published 0.64)")
    kubectl("delete", "ns", namespace, "--wait=false")
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["cni", "pods", "iperf", "all"])
    p.add_argument("--ferry", default="target/release/ferry")
    p.add_argument("--cni-count", type=int, default=200)
    p.add_argument("--pods", type=int, default=100)
    p.add_argument("--iperf-seconds", type=int, default=10)
    p.add_argument("--iperf-rounds", type=int, default=3)
    a = p.parse_args()
    ferry = os.path.abspath(a.ferry)
    results = {}
    if a.what in ("cni", "all"):
        results["cni"] = bench_cni(ferry, a.cni_count)
    if a.what in ("pods", "all"):
        results["pods"] = bench_pods(a.pods, "podnet-start")
    if a.what in ("iperf", "all"):
        results["iperf"] = bench_iperf("podnet-iperf", a.iperf_seconds, a.iperf_rounds)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
