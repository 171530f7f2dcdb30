#ifndef CSPOOLCRC_H
#define CSPOOLCRC_H

#include <stddef.h>
#include <stdint.h>

/// 1 if this CPU has a CRC-32C instruction the functions below can use (x86_64 SSE4.2 `crc32`,
/// AArch64 `crc32c*` from the CRC extension), else 0.
int spool_crc32c_hw_available(void);

/// Continues the CRC-32C register `crc` (already inverted: the caller does the pre- and
/// post-inversion) over `n` bytes at `p` with the CPU instruction. Only call it when
/// `spool_crc32c_hw_available()` returned 1; elsewhere it returns `crc` unchanged.
uint32_t spool_crc32c_hw(uint32_t crc, const void *p, size_t n);

#endif
