"""Offline resource reports of Triton kernels for the H100 (sm_90), no GPU needed: ``triton.compile`` for a
``GPUTarget`` and the ``cuobjdump`` Triton ships. Used by benchmarks/kernel_regs.py, gemm_regs.py and
tune_perm_mma.py --regs to read registers, stack (spills), shared memory and SASS of a launch configuration."""
from __future__ import annotations

import re
import subprocess
import tempfile
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

    def mma(self) -> list[str]:
        """The distinct tensor-core instructions (HMMA / IMMA / HGMMA / IGMMA ...)."""
        return sorted(set(re.findall(r"\b(\w*MMA\.[\w.]+)", self.sass)))


def compile_sm90(fn, signature: dict, constexprs: dict, attrs: dict | None = None, num_warps: int = 4,
                 num_stages: int = 3) -> Cubin:
    """Compile the ``@triton.jit`` function ``fn`` for sm_90 (``signature`` / ``constexprs`` / ``attrs`` as
    ``triton.compiler.ASTSource`` takes them) and read its resource usage and SASS."""
    import triton
    from triton.backends.compiler import GPUTarget

    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs or {})
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
