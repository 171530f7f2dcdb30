#include "CSpoolSys.h"

#if defined(__x86_64__)
#include <cpuid.h>

// As for AVX2, cpuid is not enough: XCR0 must show that the OS saves the opmask registers (bit 5)
// and both halves of the ZMM state (bits 6 and 7), besides XMM and YMM (bits 1 and 2).
static unsigned long long spool_avx512_xgetbv0(void) {
    unsigned int eax, edx;
    __asm__ __volatile__("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

int spool_cpu_has_avx512_vnni(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!spool_cpu_has_avx2_fma()) return 0;   // also checks OSXSAVE and cpuid leaf 7
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    const int f16c = (ecx >> 29) & 1;
    if (!f16c) return 0;
    const unsigned long long zmmState = 0x2 | 0x4 | 0x20 | 0x40 | 0x80;
    if ((spool_avx512_xgetbv0() & zmmState) != zmmState) return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const int f = (ebx >> 16) & 1, dq = (ebx >> 17) & 1, bw = (ebx >> 30) & 1, vl = (ebx >> 31) & 1;
    const int vnni = (ecx >> 11) & 1;
    return f && dq && bw && vl && vnni;
}
#else
int spool_cpu_has_avx512_vnni(void) { return 0; }
#endif
