"""A matmul for 1-8 rows that reads each weight once: decoding a Compare batch costs about one column's time.

Decoding multiplies a handful of rows (one per column) by every weight of the model, so a step is bound by
reading the weights, whatever the number of rows. MKL's ``F.linear`` is not: on 2 Xeon cores its pass over
SmolLM2's 210 projections took 18 ms for 1 row and 30-36 for 5-8, and oneDNN's was slower still. This kernel
keeps up to 8 input rows in registers while it streams 4 weight rows at a time, with a software prefetch of the
next block (without it, 5 rows took 26 ms; with it 20, against 18 for 1 row). :func:`linear_lora` adds a
projection's LoRA delta in the same call, where it would otherwise take four small torch ops.

It is C compiled on first use with the machine's own compiler for the machine's own vector unit
(``-march=native``: AVX-512 or AVX2), cached by source, CPU and flags, and called through :mod:`ctypes`.
Its OpenMP is PyTorch's: the library links ``libgomp.so.1``, which the loader resolves to the copy torch
already loaded, so its threads are torch's threads (a second OpenMP runtime would make both sleep between
regions; :func:`load` refuses then). Where there is no compiler, no x86 vector unit, or the build fails,
:func:`load` returns None and the projections keep the other kernels: :mod:`dlp.cpu_kernels` picks among them
by measurement, never by assumption.

The sum runs in another order than MKL's: logits agree to float32 rounding (tested), not bit for bit.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MAX_ROWS = 8
MAX_LORA_RANK = 256  # the summed rank of the LoRAs one call adds (MAX_R in the C source)
_BLOCK = {1: 4, 2: 4, 3: 4, 4: 4, 5: 4, 6: 3, 7: 3, 8: 2}  # weight rows per step; rows x block accumulators
FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-shared", "-fPIC"]

_HEAD = r"""
#include <stddef.h>
#include <omp.h>
#include <immintrin.h>
#if defined(__AVX512F__)
#define VW 16
static inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
#define VW 8
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
#else
#error "needs AVX2 with FMA, or AVX-512"
#endif
typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4), may_alias));
static inline vf ld(const float *p) { return *(const vfu *)p; }
static inline float dot(const float *a, const float *b, size_t k0, size_t K) {
    float s = 0; for (size_t k = k0; k < K; k++) s += a[k] * b[k]; return s;
}
"""

_TAIL = r"""
#define MAX_R 256
typedef void (*kern)(const float *, size_t, const float *, const float *, float *, size_t, size_t, size_t);
static const kern KERNS[9] = {0, rows_1, rows_2, rows_3, rows_4, rows_5, rows_6, rows_7, rows_8};

/* This thread's contiguous share [n0, n1) of the N weight rows, in multiples of 4. */
static inline void share(long N, long *n0, long *n1) {
    long t = omp_get_thread_num(), T = omp_get_num_threads(), per = ((N + T - 1) / T + 3) / 4 * 4;
    *n0 = t * per;
    *n1 = *n0 + per < N ? *n0 + per : N;
}

/* out (M, N) = x (M, K) @ w (N, K)^T (+ b): each thread takes one contiguous share of the N weight rows. */
int row_gemm(const float *x, long M, long K, const float *w, long N, const float *b, float *out) {
    if (M < 1 || M > 8) return -1;
    kern f = KERNS[M];
    #pragma omp parallel
    {
        long n0, n1;
        share(N, &n0, &n1);
        if (n0 < n1) f(x, (size_t)K, w, b, out, (size_t)N, (size_t)n0, (size_t)n1);
    }
    return 0;
}

/* The same plus a LoRA delta in the same pass: out += (mix * (x @ A^T)) @ Bt, with A (R, K), Bt (R, N) and
   mix (M, R). h = x @ A^T is R dot products per row, done first on one thread; each thread then adds Bt's rows
   for its own share of the outputs while they are still in cache. */
int row_gemm_lora(const float *x, long M, long K, const float *w, long N, const float *b,
                  const float *A, long R, const float *Bt, const float *mix, float *out) {
    if (M < 1 || M > 8 || R < 1 || R > MAX_R) return -1;
    kern f = KERNS[M];
    float h[8 * MAX_R];
    f(x, (size_t)K, A, 0, h, (size_t)R, 0, (size_t)R);
    for (long i = 0; i < M * R; i++) h[i] *= mix[i];
    #pragma omp parallel
    {
        long n0, n1;
        share(N, &n0, &n1);
        if (n0 < n1) {
            f(x, (size_t)K, w, b, out, (size_t)N, (size_t)n0, (size_t)n1);
            for (long k = 0; k < R; k++) {  /* axpy over this thread's outputs: vector lanes along n */
                const float *bk = Bt + k * N;
                for (long m = 0; m < M; m++) {
                    const float hk = h[m * R + k];
                    float *o = out + m * N;
                    #pragma omp simd
                    for (long n = n0; n < n1; n++) o[n] += hk * bk[n];
                }
            }
        }
    }
    return 0;
}
"""


def _kernel(rows: int, block: int) -> str:
    """The loop for ``rows`` input rows, unrolled by hand: gcc keeps an array of vector accumulators on the stack,
    but separate variables in registers."""
    acc = [(m, j) for m in range(rows) for j in range(block)]
    lines = [
        f"static void rows_{rows}(const float *x, size_t K, const float *w, const float *b, float *out,"
        " size_t N, size_t n0, size_t n1) {",
        "    size_t n = n0;",
        f"    for (; n + {block} <= n1; n += {block}) {{",
        "        const float " + ", ".join(f"*w{j} = w + (n + {j}) * K" for j in range(block)) + ";",
        "        vf " + ", ".join(f"a{m}_{j} = {{0}}" for m, j in acc) + ";",
        f"        size_t k = 0, ahead = {block} * K;  /* the next block's weights, fetched while these are used */",
        "        for (; k + VW <= K; k += VW) {",
        "            vf " + ", ".join(f"v{j} = ld(w{j} + k)" for j in range(block)) + ";",
        "            " + " ".join(f"__builtin_prefetch(w{j} + ahead + k);" for j in range(block)),
    ]
    for m in range(rows):
        lines.append(f"            {{ vf xv = ld(x + {m} * K + k); " + " ".join(
            f"a{m}_{j} += xv * v{j};" for j in range(block)) + " }")
    lines.append("        }")
    lines += [f"        out[{m} * N + n + {j}] = hsum(a{m}_{j}) + dot(x + {m} * K, w{j}, k, K)"
              f" + (b ? b[n + {j}] : 0.f);" for m, j in acc]
    lines += [
        "    }",
        "    for (; n < n1; n++)",
        f"        for (int m = 0; m < {rows}; m++) out[m * N + n] = dot(x + m * K, w + n * K, 0, K) + (b ? b[n] : 0.f);",
        "}",
    ]
    return "\n".join(lines)


def source() -> str:
    return _HEAD + "\n".join(_kernel(r, _BLOCK[r]) for r in range(1, MAX_ROWS + 1)) + _TAIL


_LIB: ctypes.CDLL | None = None
_WHY_NOT: str | None = None  # why the kernel is unavailable, once tried


def _build(cache: Path | None) -> Path:
    from .cpu_kernels import cpu_model

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler (cc) on this machine")
    digest = hashlib.sha256("\n".join([source(), " ".join(FLAGS), cpu_model(), platform.machine()]).encode())
    name = f"row_gemm-{digest.hexdigest()[:16]}.so"
    for folder in ([Path(cache) / "kernels"] if cache else []) + [Path(tempfile.gettempdir()) / "dlp-kernels"]:
        lib = folder / name
        if lib.is_file():
            return lib
        try:
            folder.mkdir(parents=True, exist_ok=True)
            src = folder / f"{lib.stem}.c"
            src.write_text(source())
        except OSError:
            continue  # a read-only cache: build in the temp folder instead
        tmp = folder / f"{lib.stem}.{os.getpid()}.tmp"
        subprocess.run([compiler, *FLAGS, str(src), "-o", str(tmp)], check=True, capture_output=True, text=True,
                       timeout=120)
        tmp.replace(lib)  # atomic: two processes building at once both end with a whole library
        return lib
    raise OSError("no writable folder for the compiled kernel")


def _one_openmp_runtime() -> bool:
    """True where every OpenMP runtime mapped into the process is one file (torch's)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    runtimes = {line.split()[-1] for line in maps.splitlines() if "libgomp" in line or "libiomp" in line}
    return len(runtimes) == 1


def load(cache: Path | None = None) -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None (with the reason in :func:`why_not`) where it cannot run."""
    global _LIB, _WHY_NOT
    if _LIB is not None or _WHY_NOT is not None:
        return _LIB
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        _WHY_NOT = f"not built on {platform.system()} {platform.machine()}"
        return None
    if "OpenMP" not in torch.__config__.parallel_info():
        _WHY_NOT = "this torch build does not use OpenMP"
        return None
    try:
        lib = ctypes.CDLL(str(_build(cache)))
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        _WHY_NOT = f"could not build the row kernel: {detail.strip().splitlines()[-1] if detail.strip() else e}"
        log.info(_WHY_NOT)
        return None
    if not _one_openmp_runtime():
        _WHY_NOT = "a second OpenMP runtime was loaded beside torch's"
        return None
    _LIB = bind(lib)
    return lib


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare ``row_gemm``'s C signature on a loaded library."""
    lib.row_gemm.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_long,
                             ctypes.c_void_p, ctypes.c_void_p]
    lib.row_gemm.restype = ctypes.c_int
    lib.row_gemm_lora.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_long,
                                  ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.c_void_p]
    lib.row_gemm_lora.restype = ctypes.c_int
    return lib


def why_not() -> str | None:
    return _WHY_NOT


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for at most 8 rows (all leading dimensions together); :func:`load` first."""
    return _call(x, weight, bias)


def _call(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora: tuple | None = None) -> torch.Tensor:
    """One kernel call on contiguous operands; ``lora``: (A, B, mix) for :func:`linear_lora`."""
    K, N = weight.shape[1], weight.shape[0]
    x2 = x.reshape(-1, K).contiguous()
    w = weight if weight.is_contiguous() else weight.contiguous()
    b = None if bias is None else bias.contiguous()
    out = torch.empty(x2.shape[0], N, dtype=x.dtype)
    head = (x2.data_ptr(), x2.shape[0], K, w.data_ptr(), N, None if b is None else b.data_ptr())
    if lora is None:
        rc = _LIB.row_gemm(*head, out.data_ptr())
    else:
        A, B, mix = lora
        R = A.shape[0]
        a, bt = (t if t.is_contiguous() else t.contiguous() for t in (A, B.T))
        m = mix.reshape(x2.shape[0], R).contiguous()
        rc = _LIB.row_gemm_lora(*head, a.data_ptr(), R, bt.data_ptr(), m.data_ptr(), out.data_ptr())
    if rc != 0:
        raise ValueError(f"row_gemm takes 1-{MAX_ROWS} rows and a LoRA rank of 1-{MAX_LORA_RANK}, got "
                         f"{x2.shape[0]} rows" + ("" if lora is None else f" and rank {lora[0].shape[0]}"))
    return out.reshape(*x.shape[:-1], N)


def linear_lora(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, A: torch.Tensor, B: torch.Tensor,
                mix: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight, bias) + (mix * (x @ A.T)) @ B.T`` in one call, for at most 8 rows: a decode step's
    LoRA delta without the four small torch ops it otherwise takes per projection. ``mix`` (rows, R): each
    row's weight times LoRA scale on each LoRA column. ``B`` (out, R) is read as ``B.T``, best contiguous
    (:class:`dlp.fusion.LoRAWeights` holds it so)."""
    return _call(x, weight, bias, (A, B, mix))
