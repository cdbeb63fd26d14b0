"""Scan the compiled extensions for AVX and AVX-512 instructions outside the dispatched
kernel sets (objdump -d).

A portable build (MININET_PORTABLE=1, the one a wheel may ship) must run on any x86-64
CPU: only the kernel-set modules mininet_ext._kern_<isa>, and the modules built per set
(mininet_ext._<isa>/<name>), may hold wider instructions, and
mininet_ext._isa imports them only when cpuid says the CPU has the features.
This counts, per module and per function, the instructions that name a ymm or zmm
register, the other VEX/EVEX-encoded (AVX) instructions, those using AVX-512 mask
registers and AMX tile instructions. It also checks each kernel set against its own ISA:
generic holds no AVX, avx2 no AVX-512, and only avx512bf16 AMX.

    python bench/isa_scan.py [DIR_OR_SO ...] [--json]

DIR defaults to the imported mininet_ext package. Exit status 1 when AVX code is found
outside the kernel sets (or above a set's ISA), 0 otherwise. In a default developer
build (-march=native) the other modules are expected to be full of it: the scan says so.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
from collections import Counter

# 'v' mnemonics that are not AVX (virtualisation and segment verification)
NOT_AVX = {"verr", "verw", "vmcall", "vmlaunch", "vmresume", "vmxoff", "vmxon", "vmread",
           "vmwrite", "vmptrld", "vmptrst", "vmclear", "vmfunc", "vmrun", "vmload", "vmsave",
           "vmmcall"}
FUNC = re.compile(r"^[0-9a-f]+ <(.+)>:$")
INSN = re.compile(r"^\s+[0-9a-f]+:\s+(\S+)\s*(.*)$")
MASK = re.compile(r"%k[1-7]\b|\{%k[0-7]\}")
# AMX instructions that name no tile register
TILE_OPS = {"ldtilecfg", "sttilecfg", "tilerelease"}
KINDS = ("zmm", "ymm", "mask", "vex", "tile")
# what each kernel set may hold: generic nothing of AVX, avx2 no AVX-512, AMX tiles
# only the avx512bf16 set (its AMX kernels run after cpuid and the OS have said yes)
ALLOWED = {"generic": set(), "avx2": {"ymm", "vex"}, "avx512": {"zmm", "ymm", "mask", "vex"},
           "avx512bf16": set(KINDS)}


def classify(mnemonic, operands):
    """The kinds of wide instruction this one is: a subset of {zmm, ymm, mask, vex}."""
    kinds = set()
    if mnemonic.startswith("v") and mnemonic not in NOT_AVX:
        kinds.add("vex")
    if "%zmm" in operands:
        kinds.add("zmm")
    if "%ymm" in operands:
        kinds.add("ymm")
    if MASK.search(operands) or mnemonic.startswith("k") and "%k" in operands:
        kinds.add("mask")
    if "%tmm" in operands or mnemonic in TILE_OPS:
        kinds.add("tile")
    return kinds


def scan_file(path):
    """{function: Counter(kind -> instructions)} for one shared object."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-w", path],
                         capture_output=True, text=True, check=True).stdout
    funcs, current = {}, "?"
    for line in out.splitlines():
        m = FUNC.match(line)
        if m:
            current = m.group(1)
            continue
        m = INSN.match(line)
        if m:
            kinds = classify(m.group(1), m.group(2))
            counts = funcs.setdefault(current, Counter())
            counts["insns"] += 1
            for k in kinds:
                counts[k] += 1
            counts["wide"] += bool(kinds)
    return funcs


def kernel_set(module):
    """The ISA of a kernel-set module (_kern_avx2 -> avx2) or of a module built for one
    (_avx2/conv_nhwc -> avx2), or None."""
    m = re.match(r"(?:_kern_([a-z0-9]+)|_([a-z0-9]+)/\w+)$", module)
    return (m.group(1) or m.group(2)) if m else None


def scan(paths):
    modules = []
    for path in paths:
        name = os.path.basename(path).split(".")[0]
        parent = os.path.basename(os.path.dirname(path))
        if parent[1:] in ALLOWED:   # a module built for one kernel set: _avx2/conv_nhwc
            name = f"{parent}/{name}"
        funcs = scan_file(path)
        total = sum(funcs.values(), Counter())
        isa = kernel_set(name)
        allowed = ALLOWED.get(isa, {"zmm", "ymm", "mask", "vex"}) if isa else set()
        bad = {k: total[k] for k in KINDS if total[k] and k not in allowed}
        worst = sorted(((sum(c[k] for k in bad), f) for f, c in funcs.items()
                        if any(c[k] for k in bad)), reverse=True)[:5]
        modules.append({"module": name, "kernel_set": isa, "functions": len(funcs),
                        "instructions": total["insns"], "wide": total["wide"],
                        "zmm": total["zmm"], "ymm": total["ymm"], "mask": total["mask"],
                        "vex": total["vex"], "tile": total["tile"], "violations": bad,
                        "worst_functions": [f for _, f in worst]})
    return modules


def so_files(folder):
    """The extensions in a package folder, the per-set ones (_<isa>/*.so) among them."""
    return sorted(glob.glob(os.path.join(folder, "*.so")) +
                  glob.glob(os.path.join(folder, "_*", "*.so")))


def default_paths():
    import mininet_ext
    return so_files(os.path.dirname(mininet_ext.__file__))


def build_note():
    try:
        from mininet_ext import _build_info
    except ImportError:
        return "no build record"
    return ("portable build (MININET_PORTABLE=1)" if _build_info.PORTABLE else
            "default build (-march=native): the modules outside the kernel sets are expected "
            "to use this CPU's widest instructions")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", help="shared objects or folders of them")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    paths = []
    for p in args.paths or default_paths():
        paths += so_files(p) if os.path.isdir(p) else [p]
    modules = scan(paths)
    outside = sum(m["wide"] for m in modules if not m["kernel_set"])
    failed = [m["module"] for m in modules if m["violations"]]
    if args.json:
        print(json.dumps({"build": build_note(), "outside_kernel_sets": outside,
                          "failed": failed, "modules": modules}, indent=2))
    else:
        print(f"{build_note()}")
        print(f"{'module':<22}{'set':>11}{'insns':>9}{'AVX(v*)':>9}{'ymm':>8}{'zmm':>8}"
              f"{'mask':>7}{'tile':>6}  verdict")
        for m in modules:
            verdict = "ok" if not m["violations"] else \
                "WIDE: " + ", ".join(f"{k} {v}" for k, v in m["violations"].items()) + \
                " in " + ", ".join(m["worst_functions"][:3])
            print(f"{m['module']:<22}{m['kernel_set'] or '-':>11}{m['instructions']:>9}"
                  f"{m['vex']:>9}{m['ymm']:>8}{m['zmm']:>8}{m['mask']:>7}{m['tile']:>6}  {verdict}")
        print(f"AVX/AVX-512 instructions (any of the columns) outside the kernel sets: {outside}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
