#!/usr/bin/env python3
"""cu2cpp.py: turns one file of runtime/lib/cuda into C++ for the CPU emulator.

  cu2cpp.py IN OUT

IN is a .cu file (written as OUT, normally NAME.cu.cpp) or a header (.h, .cuh,
copied). In both, __CUDACC__ becomes QN_EMU_CUDACC (defined by emu_cuda.h, so
the device-only parts of the headers are seen by the generated code only; the
.cpp files of runtime/lib/cuda are compiled as they are). In a .cu file every
launch `kernel<T...><<<grid, block[, shmem[, stream]]>>>(args)` becomes
`::qn_emu::launch(grid, block, shmem, stream, BOUND, "kernel", [=]() {
kernel<T...>(args); })`, BOUND being the kernel's __launch_bounds__ (0 when it
has none), and `#pragma unroll` (an nvcc hint GCC does not know) becomes a
comment. Line numbers are kept (#line names IN), so compiler messages and
backtraces point at the real source.

Limits: a text rewrite, not a parser. The kernel name before <<< must be an
identifier (optionally qualified and with a template argument list), and
__launch_bounds__ is found only as `__global__ void __launch_bounds__(...)
name(`. A launch it cannot parse stops it with an error naming the file.
"""
import os
import re
import sys


def match_fwd(s, i):
    """s[i] is an opening bracket; returns the index after its match (skips
    string and character literals)."""
    depth = 0
    j = i
    while j < len(s):
        c = s[j]
        if c in "\"'":
            q = c
            j += 1
            while s[j] != q:
                if s[j] == "\\":
                    j += 1
                j += 1
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise ValueError("unbalanced brackets")


def split_top(s):
    """Splits a launch configuration at its top-level commas."""
    parts, depth, cur = [], 0, ""
    for c in s:
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return parts


def convert(text, fname):
    bounds = {}
    for m in re.finditer(r"__global__\s+void\s+__launch_bounds__\(([^()]*)\)\s+(\w+)\s*\(", text):
        bounds[m.group(2)] = m.group(1)
    out = []
    pos = 0
    n = 0
    while True:
        k = text.find("<<<", pos)
        if k < 0:
            out.append(text[pos:])
            break
        # Back over whitespace, an optional template argument list, the name.
        j = k - 1
        while text[j].isspace():
            j -= 1
        end_expr = j + 1
        if text[j] == ">":
            depth = 0
            while True:
                c = text[j]
                if c == ">":
                    depth += 1
                elif c == "<":
                    depth -= 1
                    if depth == 0:
                        break
                j -= 1
            j -= 1
            while text[j].isspace():
                j -= 1
        e = j
        while j >= 0 and (text[j].isalnum() or text[j] in "_:"):
            j -= 1
        start_expr = j + 1
        name = text[start_expr:e + 1].split("::")[-1]
        if not name:
            raise SystemExit("cu2cpp: %s: cannot find the kernel name of the launch at offset %d"
                             % (fname, k))
        expr = text[start_expr:end_expr]
        cfg_end = text.find(">>>", k)
        cfg = text[k + 3:cfg_end]
        a = cfg_end + 3
        while text[a].isspace():
            a += 1
        if text[a] != "(":
            raise SystemExit("cu2cpp: %s: no argument list after %r" % (fname, text[k:k + 80]))
        a_end = match_fwd(text, a)
        args = text[a + 1:a_end - 1]
        parts = [p.strip() for p in split_top(cfg)]
        while len(parts) < 4:
            parts.append("0")
        bound = bounds.get(name, "0")
        rep = ('::qn_emu::launch(%s, %s, %s, %s, (int)(%s), "%s", [=]() { %s(%s); })'
               % (parts[0], parts[1], parts[2], parts[3], bound, name, expr, args))
        rep += "\n" * text[start_expr:a_end].count("\n")  # keep the line numbers
        out.append(text[pos:start_expr])
        out.append(rep)
        pos = a_end
        n += 1
    return "".join(out), n


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: cu2cpp.py IN.cu|IN.h|IN.cuh OUT")
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        text = f.read()
    text = text.replace("__CUDACC__", "QN_EMU_CUDACC")
    base = os.path.basename(src)
    if base.endswith(".cu"):
        text = re.sub(r"^([ \t]*)#pragma unroll\b", r"\1// #pragma unroll", text, flags=re.M)
        text, _ = convert(text, base)
        text = '#line 1 "%s"\n' % os.path.abspath(src) + text
    elif not base.endswith((".h", ".cuh")):
        raise SystemExit("cu2cpp: %s: not a .cu, .h or .cuh file" % src)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, dst)


if __name__ == "__main__":
    main()
