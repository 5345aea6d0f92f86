"""Offline resource reports of Triton kernels for the H100 (sm_90), no GPU needed: ``triton.compile`` for a
``GPUTarget`` and the ``cuobjdump`` Triton ships. Used by benchmarks/kernel_regs.py, gemm_regs.py and
tune_perm_mma.py --regs to read registers, stack (spills), shared memory and SASS of a launch configuration."""
from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cubin:
    registers: int
    stack: int  # bytes of local memory a thread (spills)
    shared: int  # bytes of shared memory a program
    sass: str  # the disassembly

    def instructions(self) -> int:
        """SASS instructions in the whole kernel (static count)."""
        return len(re.findall(r"^\s+/\*[0-9a-f]{4,}\*/", self.sass, re.M))

    def opcodes(self) -> Counter:
        """How many times each SASS opcode (predicate stripped) occurs in the kernel."""
        return Counter(re.findall(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_]+)", self.sass, re.M))

    def loop_bodies(self) -> list[int]:
        """Instructions in each loop body (a backward branch's target through the branch), in program order."""
        found = re.findall(r"^\s+/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?BRA(?:\.\w+)* 0x([0-9a-f]+)", self.sass, re.M)
        return [(int(at, 16) - int(to, 16)) // 16 + 1 for at, to in found if int(to, 16) < int(at, 16)]

    def mma(self) -> list[str]:
        """The distinct tensor-core instructions (HMMA / IMMA / HGMMA / IGMMA ...)."""
        return sorted(set(re.findall(r"\b(\w*MMA\.[\w.]+)", self.sass)))


def compile_sm90(fn, consts: dict, types: dict | None = None, divisible=(), num_warps: int = 4,
                 num_stages: int = 3) -> Cubin:
    """Compile the ``@triton.jit`` function ``fn`` for sm_90 and read its resource usage and SASS.

    Args:
        consts: values of ``fn``'s constexpr parameters by name (other names are ignored).
        types: Triton types of runtime arguments by name ("*i8", "i32", ...); others: "*i64" for names ending in
            ``_ptr``, else "i32".
        divisible: runtime arguments marked divisible by 16, as a real launch on aligned tensors / sizes gets
            (without it loads are not vectorized): their names, or True for all.
    """
    import triton
    from triton.backends.compiler import GPUTarget

    sig, cx, attrs = {}, {}, {}
    for i, (n, p) in enumerate(zip(fn.arg_names, fn.params)):
        if p.is_constexpr:
            sig[n], cx[(i,)] = "constexpr", consts[n]
            continue
        sig[n] = (types or {}).get(n, "*i64" if n.endswith("_ptr") else "i32")
        if divisible is True or n in divisible:
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=cx, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps,
                                                                          "num_stages": num_stages})
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(ck.asm["cubin"])
        f.flush()
        res = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    usage = dict(re.findall(r"(REG|STACK):(\d+)", res))
    return Cubin(int(usage["REG"]), int(usage["STACK"]), ck.metadata.shared, sass)
