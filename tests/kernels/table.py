# SPDX-License-Identifier: Apache-2.0
"""The kernel matrix's table: one column per kernel, one row per smoke check
(status and seconds), what the adoption check saw (result, mechanism, failed
RPCs, time to spread), the VM's whole time, and what h2splitd said each kernel
lacks. Reads RESULTS_DIR/<kernel release>/results.json (smoke.py) and
vm_seconds (kernels.sh). Exit 1 if a check failed or a kernel gave no result.

  table.py RESULTS_DIR linux-image-5.10.0-N-amd64 ...
"""

import json
import os
import sys


def load(results, kver):
    path = os.path.join(results, kver, "results.json")
    try:
        with open(path) as f:
            r = json.load(f)
    except (OSError, ValueError):
        r = {"kernel": kver, "checks": [], "notes": [], "missing": True}
    try:
        with open(os.path.join(results, kver, "package")) as f:
            r["package"] = f.read().strip()
    except OSError:
        r["package"] = ""
    try:
        with open(os.path.join(results, kver, "vm_seconds")) as f:
            r["vm_seconds"] = int(f.read())
    except (OSError, ValueError):
        r["vm_seconds"] = None
    return r


def main(argv):
    results, kvers = argv[1], [p.removeprefix("linux-image-") for p in argv[2:]]
    runs = [load(results, k) for k in kvers]
    names = []
    for r in runs:
        names += [c["name"] for c in r["checks"] if c["name"] not in names]
    ok = True
    print("| check | " + " | ".join(f"{r['kernel']} ({r['package']})" if r["package"]
                                    else r["kernel"] for r in runs) + " |")
    print("|---" * (len(runs) + 1) + "|")
    for n in names:
        cells = []
        for r in runs:
            c = next((c for c in r["checks"] if c["name"] == n), None)
            if c is None:
                cells.append("not run")
                ok = False
                continue
            ok = ok and c["status"] != "FAIL"
            cells.append(f"{c['status']} {c['seconds']:.1f} s")
        print(f"| {n} | " + " | ".join(cells) + " |")
    facts = []
    for r in runs:
        facts += [k for k in r.get("facts", {}) if k not in facts]
    for k in facts:
        print(f"| kernel: {k} | " + " | ".join(r.get("facts", {}).get(k, "?") for r in runs) + " |")
    # What the adoption check saw (smoke.py: result, mechanism, failed RPCs, time).
    adopt = []
    for r in runs:
        adopt += [k for k in r.get("adoption", {}) if k not in adopt]
    for k in adopt:
        print(f"| adoption: {k} | " + " | ".join(r.get("adoption", {}).get(k, "-")
                                                 for r in runs) + " |")
    print("| VM boot + smoke | " + " | ".join(
        f"{r['vm_seconds']} s" if r["vm_seconds"] is not None else "?" for r in runs) + " |")
    for r in runs:
        if r.get("missing"):
            ok = False
            print(f"\n{r['kernel']}: no results (see its console log)")
        for c in r["checks"]:
            if c["status"] != "ok" and c["detail"]:
                print(f"\n{r['kernel']} {c['name']} {c['status']}: {c['detail']}")
        for note in r.get("notes", []):
            print(f"\n{r['kernel']} note: {note}")
    print("\nkernels: " + ("all checks passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
