// sched_getaffinity / sched_setaffinity and the CPU_* macros are GNU extensions; Swift's Glibc
// module does not expose them, hence these wrappers.
#if defined(__linux__)
#define _GNU_SOURCE
#include <sched.h>
#endif

#include "CSpoolSys.h"

#if defined(__x86_64__)
#include <cpuid.h>

// cpuid alone is not enough: the OS must also have enabled the AVX (YMM) state in XCR0,
// otherwise AVX instructions fault even though the CPU has them.
static unsigned long long spool_xgetbv0(void) {
    unsigned int eax, edx;
    __asm__ __volatile__("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

int spool_cpu_has_avx2_fma(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    const int fma = (ecx >> 12) & 1, osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1;
    if (!(fma && osxsave && avx)) return 0;
    if ((spool_xgetbv0() & 0x6) != 0x6) return 0; // XMM and YMM state
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    return (ebx >> 5) & 1; // AVX2
}
#else
int spool_cpu_has_avx2_fma(void) { return 0; }
#endif

#if defined(__linux__)
int spool_allowed_cpus(int *out, int capacity) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &set)) {
            if (n < capacity) out[n] = cpu;
            n++;
        }
    }
    return n;
}

int spool_pin_current_thread(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) return -1;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0 ? 0 : -1;
}
#else
int spool_allowed_cpus(int *out, int capacity) { (void)out; (void)capacity; return -1; }
int spool_pin_current_thread(int cpu) { (void)cpu; return -1; }
#endif

#if defined(__linux__)
#include <fcntl.h>
int spool_o_direct_flag(void) { return O_DIRECT; }
#else
int spool_o_direct_flag(void) { return 0; }
#endif
