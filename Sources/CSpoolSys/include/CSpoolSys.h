#ifndef CSPOOLSYS_H
#define CSPOOLSYS_H

/// 1 if the CPU has AVX2 and FMA and the OS saves the YMM registers (XCR0), else 0.
/// Always 0 on non-x86_64 targets.
int spool_cpu_has_avx2_fma(void);

/// Writes the CPUs this process may run on (ascending) to `out`, at most `capacity` of them, and
/// returns how many there are; -1 where unsupported (non-Linux) or on error.
int spool_allowed_cpus(int *out, int capacity);

/// Pins the calling thread to `cpu`. 0 on success, -1 where unsupported or refused.
int spool_pin_current_thread(int cpu);

/// Spin-wait hint (x86 `pause`, ARM `yield`): keeps a spinning thread from starving its
/// sibling hyperthread and saves power. Inline so a spin loop does not pay for a call.
static inline void spool_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif
}

/// 1 if the CPU has AVX-512 F/DQ/BW/VL and VNNI (plus AVX2, FMA, F16C) and the OS saves the opmask
/// and ZMM registers (XCR0), else 0. Always 0 on non-x86_64 targets. (cpu_avx512.c)
int spool_cpu_has_avx512_vnni(void);

#endif
